"""The perception regression gate: the trained checkpoint kept in test/data/regression_gate scores its
golden metrics on the fixed synthetic gate set through the chunk path, the node's frame path and the
real node over DDS; a broken model or pipeline moves them past the tolerance.

After an intended change of quality: `python -m training.evaluation.regression_gate update
--checkpoint output/runs/short/model_best.pt` (docs/training.md#regression-gate)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from mtl_perception_ros.bags.reader import BagReader
from mtl_perception_ros.core.checkpoint import load_checkpoint
from ros_test_utils import console_script, start_node_and_recorder, wait_for_recorder
from sensor_samples import write_params_yaml
from training.evaluation import regression_gate as gate


@pytest.fixture(scope='module')
def gate_set(tmp_path_factory):
    work = tmp_path_factory.mktemp('regression_gate')
    chunks, bag = gate.build_gate_set(work, log=lambda *args: None)
    return work, chunks, bag


@pytest.fixture(scope='module')
def golden():
    values = gate.load_golden()
    return values, gate.check_checkpoint(values)


def test_the_gate_checkpoint_is_small_and_names_where_it_comes_from(golden):
    values, checkpoint = golden
    assert checkpoint.stat().st_size < 5e6
    provenance = values['checkpoint']['provenance']
    assert len(provenance['data_manifest_sha256']) == 64 and provenance['code_revision']
    assert values['tolerance'] == gate.TOLERANCE and 'update --checkpoint' in values['written_by']
    # the gate guards a model that works, not one that scores about zero
    assert values['chunks']['map'] > 0.3 and values['chunks']['miou'] > 0.3
    assert values['node']['map'] > 0.2 and values['node']['miou'] > 0.3


def test_the_chunk_path_scores_the_golden_metrics(gate_set, golden):
    _, chunks, _ = gate_set
    values, checkpoint = golden
    measured = gate.score_chunks(checkpoint, chunks)
    assert measured['frames'] == gate.GATE_SET['scenes'] * gate.GATE_SET['frames']
    assert gate.compare(measured, values, 'chunks') == []


def test_the_node_frame_path_scores_the_golden_metrics(gate_set, golden):
    _, _, bag = gate_set
    values, checkpoint = golden
    measured = gate.score_node_path(checkpoint, bag)
    assert measured['frames_without_output'] == 0
    assert gate.compare(measured, values, 'node') == []


def test_the_gate_fails_when_classes_get_mixed_up(gate_set, golden):
    """A class-order bug (car and pedestrian heatmaps swapped; road and sidewalk logits swapped)
    moves both figures far past their tolerance."""
    _, chunks, _ = gate_set
    values, checkpoint = golden
    model, info = load_checkpoint(checkpoint)
    car, pedestrian = info.detection_labels.names.index('car'), info.detection_labels.names.index('pedestrian')
    road, sidewalk = info.semantic_labels.names.index('road'), info.semantic_labels.names.index('sidewalk')
    with torch.no_grad():
        for layer, (a, b) in ((model.detection_head.heatmap[-1], (car, pedestrian)),
                              (model.semantic_head.classifier, (road, sidewalk))):
            for tensor in (layer.weight, layer.bias):
                tensor[[a, b]] = tensor[[b, a]].clone()
    problems = gate.compare(gate.score_chunks(checkpoint, chunks, model=model), values, 'chunks')
    assert len(problems) == 2, problems
    assert problems[0].startswith('chunks map') and 'dropped' in problems[0]
    assert problems[1].startswith('chunks miou') and 'dropped' in problems[1]


def test_the_command_line_check_passes_and_a_foreign_checkpoint_is_refused(gate_set, golden, tmp_path, capsys):
    work, _, _ = gate_set
    values, checkpoint = golden
    assert gate.main(['check', '--work', str(work)]) == 0
    assert 'regression gate: passed' in capsys.readouterr().out
    other = tmp_path / 'gate'
    other.mkdir()
    (other / gate.GOLDEN_NAME).write_text((checkpoint.parent / gate.GOLDEN_NAME).read_text())
    (other / gate.CHECKPOINT_NAME).write_bytes(checkpoint.read_bytes()[:-1] + b'x')
    assert gate.main(['check', '--work', str(work), '--gate-dir', str(other)]) == 2
    assert 'SHA-256 differs' in capsys.readouterr().err


@pytest.mark.ros
def test_the_node_replaying_the_gate_bag_publishes_the_golden_metrics(gate_set, golden, tmp_path, rclpy_context,
                                                                       ros_process):
    from training.evaluation.evaluate_bag import read_ground_truth, read_recorded, score

    _, _, bag = gate_set
    values, checkpoint = golden
    document = yaml.safe_load((gate.NODE_PARAMS).read_text())
    document['/**']['ros__parameters'].update(model_path=str(checkpoint), input_qos='reliable')
    params = write_params_yaml(tmp_path / 'params.yaml', document)
    recorded = tmp_path / 'recorded'
    with BagReader(bag) as reader:
        frames = reader.topics['/points'][1]
    node, recorder = start_node_and_recorder(rclpy_context, ros_process, params, recorded, ready_timeout_s=90,
                                             answers=frames)
    # 0.67 s between full-size pairs: no pair is dropped as busy even on a loaded CI machine (a drop
    # would cost a frame's detections and move the figures)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag), '--rate', '0.15', '--qos', 'reliable', '--wait-for-subscribers', '30',
        '--topics', '/points', '/camera/image_raw'], name='player')
    assert player.popen.wait(timeout=120) == 0, player.output()
    wait_for_recorder(recorder, node)   # the last frame's outputs and one more /diagnostics
    assert node.interrupt() == 0, node.output()

    _, info = load_checkpoint(checkpoint)
    live = read_recorded(recorded, info.detection_labels.names)
    truth = read_ground_truth(bag, info.detection_labels.names, info.bev_grid)
    measured = gate.score_evaluation(score(live, truth, info.detection_labels, info.semantic_labels))
    assert measured['frames_without_output'] == 0, (live.counts, node.output()[-3000:])
    assert gate.compare(measured, values, 'node') == [], node.output()[-3000:]


def test_int8_graphs_of_the_gate_checkpoint_score_the_golden_metrics(gate_set, golden, tmp_path):
    """training.export.to_int8 as a user runs it (after the fp32 export), then the node's frame path on
    ONNX Runtime int8: within the gate's tolerance of the torch golden figures. (The gate set has one
    split, so calibration and check frames are the gate frames.)"""
    pytest.importorskip('onnxruntime.quantization')
    _, chunks, bag = gate_set
    values, checkpoint = golden
    onnx_dir = tmp_path / 'onnx'
    command = [sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint), '--frames', '1',
               '--out', str(onnx_dir)]
    done = subprocess.run(command, cwd=gate.REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, '-m', 'training.export.to_int8', '--checkpoint', str(checkpoint),
                           '--chunks', str(chunks), '--onnx-dir', str(onnx_dir), '--split', 'test',
                           '--check-split', 'test'], cwd=gate.REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((onnx_dir / 'onnx_export.json').read_text())['int8']
    assert report['ok'] and report['calibration']['samples'] == {'image': 12, 'canvas': 12}
    assert report['check']['class_map_agreement'] > 0.98 and report['check']['detections_fp32'] > 10
    measured = gate.score_node_path(checkpoint, bag, backend='onnxruntime', precision='int8', onnx_dir=onnx_dir)
    assert measured['frames_without_output'] == 0
    assert gate.compare(measured, values, 'node') == []
