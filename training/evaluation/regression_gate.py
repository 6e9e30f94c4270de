"""The perception regression gate: a small trained checkpoint kept in the repository, scored on a
small fixed synthetic set through the real code paths, against golden metrics.

    python -m training.evaluation.regression_gate check  [--work DIR]
    python -m training.evaluation.regression_gate update --checkpoint output/runs/short/model_best.pt

Both build the gate set first: `GATE_SET` (scenes of a seed the main job never trains on) written by
the synthetic generator in A2D2's layout, converted into chunks (all in split `test`) and exported to
a rosbag2, exactly as the main job does. Then the checkpoint is scored twice:

- chunks: chunks -> ChunkDataset -> model -> decode -> metrics (training.evaluation.evaluate), the
  path of every training and evaluation figure;
- node: the bag through the node's frame pipeline offline (training.evaluation.evaluate_bag's
  predict_offline: message conversion, sync, calibration from config/mtl_perception.yaml, the
  node's score threshold), the path of the node's outputs. test/test_regression_gate.py also
  replays the bag through the real node over DDS and scores what it publishes.

`check` compares mAP and mIoU of both with GATE_DIR/golden.json and exits 1 naming every one that
moved by more than its tolerance (TOLERANCE: far above the run-to-run noise of a CPU evaluation,
far below what a broken target encoding, decoding, calibration, conversion or metric does).
`update` copies the checkpoint to GATE_DIR/model.pt and writes golden.json from its scores: run it
only when a change of quality is intended (a better model, a fixed metric), and say so in the commit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from mtl_perception_ros.core.atomic_file import atomic_write_json
from training.paths import REPO_ROOT

GATE_DIR = REPO_ROOT / 'test' / 'data' / 'regression_gate'
CHECKPOINT_NAME = 'model.pt'
GOLDEN_NAME = 'golden.json'
NODE_PARAMS = REPO_ROOT / 'config' / 'mtl_perception.yaml'
# seed 7: the main job's data are seed 0, so none of these scenes was trained on
GATE_SET = {'seed': 7, 'scenes': 3, 'frames': 4}
TOLERANCE = {'map': 0.03, 'miou': 0.015}
PATHS = ('chunks', 'node')


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_gate_set(work_dir, log=print) -> tuple[Path, Path]:
    """Write the gate set under `work_dir`: (chunk folder, bag folder); reused when already there."""
    from training.data.convert import convert
    from training.export.to_bag import export_bag
    from training.synthetic.synthesize import synthesize

    work = Path(work_dir)
    root, chunks, bag = work / 'a2d2', work / 'chunks', work / 'bag'
    stamp = work / 'gate_set.json'
    if stamp.is_file() and json.loads(stamp.read_text()) == GATE_SET and (bag / 'metadata.yaml').is_file():
        return chunks, bag
    for old in (root, chunks, bag):
        shutil.rmtree(old, ignore_errors=True)
    summary = synthesize(root, GATE_SET['scenes'], GATE_SET['frames'], GATE_SET['seed'], show_progress=False)
    convert(root, chunks, val_fraction=0.0, test_scenes=list(summary.scenes), progress=False)
    export_bag(chunks, bag, split='test', log=lambda *args: None)
    atomic_write_json(stamp, GATE_SET)
    log(f'gate set: {summary.frames} frames of {len(summary.scenes)} scenes (seed {GATE_SET["seed"]}) in {work}')
    return chunks, bag


def _summary(detection, segmentation) -> dict:
    return {'map': float(detection.map), 'miou': float(segmentation['miou']),
            'ap_per_class': dict(zip(detection.class_names, map(float, detection.ap_per_class))),
            'iou_per_class': dict(zip(segmentation['class_names'], map(float, segmentation['iou']))),
            'pixel_accuracy': float(segmentation['pixel_accuracy'])}


def score_chunks(checkpoint, chunks, model=None) -> dict:
    """Metrics of the checkpoint (or of `model`, a changed copy of it) on the gate chunks."""
    import torch

    from mtl_perception_ros.core.checkpoint import load_checkpoint
    from training.engine.data_loading import make_dataset, make_eval_loader, read_split
    from training.evaluation.evaluate import evaluate

    loaded, info = load_checkpoint(checkpoint, map_location='cpu')
    folder = read_split(chunks, 'test')
    dataset = make_dataset(folder.files['test'], info.model_config, info.detection_labels)
    loader = make_eval_loader(dataset, batch_size=2, num_workers=0)
    result = evaluate(model if model is not None else loaded, loader, grid=info.bev_grid,
                      detection_labels=info.detection_labels, semantic_labels=info.semantic_labels,
                      device=torch.device('cpu'), progress=False)
    return {**_summary(result.detection, result.segmentation), 'frames': result.num_frames}


def node_params(checkpoint) -> dict:
    """The node's parameters from config/mtl_perception.yaml with the gate checkpoint."""
    from training.evaluation.evaluate_bag import load_node_params
    return {**load_node_params(NODE_PARAMS), 'model_path': str(checkpoint)}


def score_evaluation(evaluation) -> dict:
    """An evaluate_bag BagEvaluation (offline or recorded) as the gate's summary."""
    return {**_summary(evaluation.detection, evaluation.segmentation),
            'frames': int(evaluation.counts['gt_frames']),
            'frames_without_output': int(evaluation.counts['gt_frames_without_prediction'])}


def score_node_path(checkpoint, bag, **backend) -> dict:
    """Metrics of the node's frame path (offline, no DDS) over the gate bag; `backend`: open_inference's
    backend, precision, onnx_dir (default: torch, fp32; onnxruntime runs torch-free where the export allows)."""
    from mtl_perception_ros.core.onnx_inference import open_inference
    from training.evaluation.evaluate_bag import predict_offline, read_ground_truth, score

    params = node_params(checkpoint)
    inference, _ = open_inference(checkpoint, device='cpu', score_threshold=params['score_threshold'],
                                  max_detections=params['max_detections'], **backend)
    predictions = predict_offline(bag, inference, params, log=lambda *args: None)
    truth = read_ground_truth(bag, inference.info.detection_labels.names, inference.grid)
    return score_evaluation(score(predictions, truth, inference.info.detection_labels,
                                  inference.info.semantic_labels))


def load_golden(gate_dir=GATE_DIR) -> dict:
    path = Path(gate_dir) / GOLDEN_NAME
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as error:
        raise ValueError(f'{path}: no golden metrics ({error}); write them with '
                         '`python -m training.evaluation.regression_gate update --checkpoint CKPT`') from None


def compare(measured: dict, golden: dict, path: str) -> list[str]:
    """One line per metric of `path` ('chunks' or 'node') outside its tolerance of the golden value."""
    problems = []
    tolerance = golden.get('tolerance', TOLERANCE)
    for metric, allowed in tolerance.items():
        expected, value = golden[path][metric], measured[metric]
        if not abs(value - expected) <= allowed:
            problems.append(f'{path} {metric} {value:.4f}, golden {expected:.4f} (tolerance {allowed}): '
                            f'{"dropped" if value < expected else "rose"} by {abs(value - expected):.4f}')
    return problems


def check_checkpoint(golden: dict, gate_dir=GATE_DIR) -> Path:
    """GATE_DIR/model.pt, after checking it is the checkpoint the golden metrics were measured on."""
    checkpoint = Path(gate_dir) / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise ValueError(f'{checkpoint}: the gate checkpoint is missing')
    if sha256(checkpoint) != golden['checkpoint']['sha256']:
        raise ValueError(f'{checkpoint} is not the checkpoint of {GOLDEN_NAME} (SHA-256 differs): '
                         'run `python -m training.evaluation.regression_gate update` for a new one')
    if golden.get('gate_set') != GATE_SET:
        raise ValueError(f'{GOLDEN_NAME} was measured on the gate set {golden.get("gate_set")}, '
                         f'this code builds {GATE_SET}: run update')
    return checkpoint


def run_check(work_dir, gate_dir=GATE_DIR, log=print) -> list[str]:
    golden = load_golden(gate_dir)
    checkpoint = check_checkpoint(golden, gate_dir)
    chunks, bag = build_gate_set(work_dir, log)
    problems = []
    for path, measured in (('chunks', score_chunks(checkpoint, chunks)), ('node', score_node_path(checkpoint, bag))):
        log(f'{path}: mAP {measured["map"]:.4f} (golden {golden[path]["map"]:.4f}), '
            f'mIoU {measured["miou"]:.4f} (golden {golden[path]["miou"]:.4f})')
        problems += compare(measured, golden, path)
    return problems


def run_update(checkpoint, work_dir, gate_dir=GATE_DIR, log=print) -> dict:
    import torch

    from mtl_perception_ros.core.checkpoint import load_checkpoint

    gate_dir = Path(gate_dir)
    gate_dir.mkdir(parents=True, exist_ok=True)
    _, info = load_checkpoint(checkpoint, map_location='cpu')     # a usable checkpoint before it is copied
    target = gate_dir / CHECKPOINT_NAME
    if Path(checkpoint).resolve() != target.resolve():
        shutil.copyfile(checkpoint, target)
    chunks, bag = build_gate_set(work_dir, log)
    metrics = info.extra.get('metrics') or {}
    golden = {
        'gate_set': GATE_SET, 'tolerance': TOLERANCE,
        'checkpoint': {'file': CHECKPOINT_NAME, 'sha256': sha256(target), 'copied_from': str(checkpoint),
                       'epoch': info.extra.get('epoch'), 'provenance': info.extra.get('provenance'),
                       'val_metrics': {key: metrics.get(key) for key in ('map', 'miou')}},
        'chunks': score_chunks(target, chunks), 'node': score_node_path(target, bag),
        'measured_with': {'torch': torch.__version__},
        'written_by': 'python -m training.evaluation.regression_gate update --checkpoint ' + str(checkpoint),
    }
    atomic_write_json(gate_dir / GOLDEN_NAME, golden)
    for path in PATHS:
        log(f'{path}: mAP {golden[path]["map"]:.4f}, mIoU {golden[path]["miou"]:.4f}')
    log(f'wrote {gate_dir / GOLDEN_NAME} and {target} ({target.stat().st_size / 1e6:.1f} MB)')
    return golden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.evaluation.regression_gate',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=('check', 'update'))
    parser.add_argument('--checkpoint', help='update: the checkpoint to keep as the gate checkpoint')
    parser.add_argument('--gate-dir', default=str(GATE_DIR), help='folder of model.pt and golden.json')
    parser.add_argument('--work', default=None, help='folder for the gate set (default: a temporary one)')
    args = parser.parse_args(argv)
    if args.command == 'update' and not args.checkpoint:
        parser.error('update needs --checkpoint')
    with tempfile.TemporaryDirectory(prefix='regression_gate_') as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        try:
            if args.command == 'update':
                run_update(args.checkpoint, work, args.gate_dir)
                return 0
            problems = run_check(work, args.gate_dir)
        except (ValueError, FileNotFoundError) as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
    for problem in problems:
        print(f'FAILED: {problem}')
    print('regression gate: ' + ('failed' if problems else 'passed'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
