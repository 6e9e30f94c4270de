"""Backends of the dense networks (torch, ONNX Runtime, TensorRT): same outputs, clear refusals,
and the node running on ONNX Runtime as users start it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ros_test_utils import require_modules

require_modules('onnxruntime', 'onnxscript')   # `make setup` installs them

from mtl_perception_ros.core.inference import PerceptionInference  # noqa: E402
from mtl_perception_ros.core.inference_backends import (BackendError, available_cpus, default_onnx_dir,  # noqa: E402
                                                        file_sha256, resolve_threads)
from sensor_samples import IMAGE_HW, REPO, make_small_checkpoint, synthetic_cloud, synthetic_image  # noqa: E402

OPTICAL = np.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).reshape(4, 4)


def export(checkpoint, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint),
                           '--frames', '1', *extra], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A small checkpoint (with pyramid pooling) exported to its default folder, as a user does."""
    checkpoint = make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt', camera_context=True)
    done = export(checkpoint)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (default_onnx_dir(checkpoint) / 'camera.onnx').is_file()
    return checkpoint


def views(rng, count: int):
    k = np.array([[IMAGE_HW[1] * 0.8, 0, IMAGE_HW[1] / 2], [0, IMAGE_HW[1] * 0.8, IMAGE_HW[0] / 2], [0, 0, 1]])
    return [(synthetic_image(rng), k, OPTICAL) for _ in range(count)]


def assert_same_outputs(reference, other, rng, cameras: int, frames: int = 2):
    """`other` gives `reference`'s boxes, classes, scores and class maps on random frames with
    `cameras` views; the last frame's points."""
    for _ in range(frames):
        points = synthetic_cloud(rng)
        points[:, 3] /= 255.0
        frame_views = views(rng, cameras)
        want, got = reference.run_views(points, frame_views), other.run_views(points, frame_views)
        assert len(want.boxes) > 0 and got.lidar_only == want.lidar_only == (cameras == 0)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        assert len(got.class_maps) == cameras
        for got_map, want_map in zip(got.class_maps, want.class_maps):
            assert got_map.shape == IMAGE_HW and (got_map == want_map).mean() > 0.999
        assert set(got.timings_ms) == {'preprocess', 'model', 'postprocess'}
    return points


@pytest.mark.parametrize('cameras', [1, 2])
def test_onnxruntime_gives_the_detections_and_class_maps_of_torch(exported, cameras):
    reference = PerceptionInference(exported, device='cpu', score_threshold=0.1)
    onnx = PerceptionInference(exported, device='cpu', score_threshold=0.1, backend='onnxruntime')
    assert (onnx.backend, onnx.precision, onnx.execution_providers) == ('onnxruntime', 'fp32', ('CPUExecutionProvider',))
    points = assert_same_outputs(reference, onnx, np.random.default_rng(4), cameras)
    lidar_only = onnx.run_views(points, [])
    assert lidar_only.lidar_only and lidar_only.class_maps == []


@pytest.mark.parametrize('cameras', [0, 1, 2])
def test_the_torch_free_runtime_gives_the_detections_and_class_maps_of_torch(exported, cameras):
    """OnnxPerceptionInference: ONNX Runtime with the pillar step and decoding in NumPy."""
    from mtl_perception_ros.core.onnx_inference import OnnxPerceptionInference
    reference = PerceptionInference(exported, device='cpu', score_threshold=0.1)
    onnx = OnnxPerceptionInference(exported, score_threshold=0.1, threads=1)
    assert (onnx.backend, onnx.precision, onnx.execution_providers, onnx.threads) == \
        ('onnxruntime', 'fp32', ('CPUExecutionProvider',), 1)
    assert onnx.info.model_config == reference.info.model_config
    assert onnx.detection_labels == reference.detection_labels and onnx.semantic_labels == reference.semantic_labels
    assert_same_outputs(reference, onnx, np.random.default_rng(5), cameras)


def test_the_torch_free_runtime_never_imports_torch(exported):
    script = (
        'import sys, numpy as np\n'
        'from mtl_perception_ros.core.onnx_inference import open_inference\n'
        f'inference, note = open_inference({str(exported)!r}, device="cpu", backend="onnxruntime")\n'
        'inference.warm_up(1)\n'
        'image = np.zeros((*inference.info.image_hw, 3), np.uint8)\n'
        'k = np.array([[400.0, 0, 128], [0, 400, 80], [0, 0, 1]])\n'
        't = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])\n'
        'result = inference(np.zeros((10, 4), np.float32), image, k, t)\n'
        'print(type(inference).__name__, repr(note), result.class_map.shape, "torch" in sys.modules)\n')
    done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == 'OnnxPerceptionInference' and done.stdout.split()[-1] == 'False', done.stdout


def test_an_export_without_the_runtime_files_runs_with_torch_and_says_why(exported, tmp_path):
    from mtl_perception_ros.core.onnx_files import BackendError as Refusal
    from mtl_perception_ros.core.onnx_inference import OnnxPerceptionInference, open_inference
    onnx_dir = tmp_path / 'old_onnx'
    shutil.copytree(default_onnx_dir(exported), onnx_dir)
    (onnx_dir / 'pillars.npz').unlink()
    inference, note = open_inference(exported, device='cpu', backend='onnxruntime', onnx_dir=onnx_dir)
    assert isinstance(inference, PerceptionInference) and inference.backend == 'onnxruntime'
    assert 'torch is loaded for the pillar step' in note and 'training.export.to_onnx' in note
    torch_run, note = open_inference(exported, device='cpu', backend='torch')
    assert isinstance(torch_run, PerceptionInference) and note == ''
    (onnx_dir / 'pillars.npz').write_bytes(b'not an npz')
    with pytest.raises(Refusal, match='unreadable model_info.json / pillars.npz'):
        OnnxPerceptionInference(exported, onnx_dir=onnx_dir)
    np.savez(onnx_dir / 'pillars.npz', weight=np.zeros((4, 3), np.float32), bias=np.zeros(3, np.float32))
    with pytest.raises(Refusal, match='do not fit the model'):
        OnnxPerceptionInference(exported, onnx_dir=onnx_dir)


def test_a_half_precision_on_the_cpu_runs_fp32_and_says_so(exported):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    assert PerceptionInference(exported, device='cpu', precision='fp16', backend='onnxruntime').precision == 'fp32'


def test_thread_counts_leave_the_executor_a_core(exported):
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert resolve_threads(0) == min(available_cpus(), max(2, available_cpus() - 1)) and resolve_threads(3) == 3
        inference = PerceptionInference(exported, device='cpu', backend='onnxruntime', threads=1)
        assert inference.threads == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert PerceptionInference(exported, device='cpu').threads is None     # offline tools: left alone
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_a_missing_foreign_or_failed_export_is_refused_with_what_to_run(exported, tmp_path):
    alone = shutil.copy(exported, tmp_path / 'alone.pt')
    with pytest.raises(BackendError, match=r'no ONNX export in .*alone_onnx.*training\.export\.to_onnx'):
        PerceptionInference(alone, device='cpu', backend='onnxruntime')

    other = make_small_checkpoint(tmp_path / 'other.pt')            # another model: its own weights
    shutil.copytree(default_onnx_dir(exported), default_onnx_dir(other))
    with pytest.raises(BackendError, match='exported from another checkpoint'):
        PerceptionInference(other, device='cpu', backend='onnxruntime')

    failed = tmp_path / 'failed_onnx'
    shutil.copytree(default_onnx_dir(exported), failed)
    report = json.loads((failed / 'onnx_export.json').read_text())
    report['check']['ok'] = False
    (failed / 'onnx_export.json').write_text(json.dumps(report))
    with pytest.raises(BackendError, match='check against torch failed'):
        PerceptionInference(exported, device='cpu', backend='onnxruntime', onnx_dir=failed)


def test_int8_runs_only_checked_graphs_of_the_present_export_on_onnxruntime(exported, tmp_path):
    """Each refusal names what to do; the graphs themselves are made and scored in
    test_regression_gate.py (training.export.to_int8 needs a trained model and chunks)."""
    with pytest.raises(BackendError, match='precision int8 runs the quantized graphs .* not backend torch'):
        PerceptionInference(exported, device='cpu', backend='torch', precision='int8')
    with pytest.raises(BackendError, match=r'no int8 graphs .*training\.export\.to_int8 --checkpoint'):
        PerceptionInference(exported, device='cpu', backend='onnxruntime', precision='int8')
    onnx_dir = tmp_path / 'int8_onnx'
    shutil.copytree(default_onnx_dir(exported), onnx_dir)
    for name in ('camera', 'bev'):     # stand-ins: the fp32 graphs under the int8 names
        shutil.copy(onnx_dir / f'{name}.onnx', onnx_dir / f'{name}_int8.onnx')
    report = json.loads((onnx_dir / 'onnx_export.json').read_text())
    sources = {name: file_sha256(onnx_dir / name) for name in ('camera.onnx', 'bev.onnx')}

    def run(**entry):
        report['int8'] = {'ok': True, 'from_sha256': sources, **entry}
        (onnx_dir / 'onnx_export.json').write_text(json.dumps(report))
        return PerceptionInference(exported, device='cpu', backend='onnxruntime', precision='int8',
                                   onnx_dir=onnx_dir)
    assert run().precision == 'int8'
    with pytest.raises(BackendError, match='failed their check against fp32'):
        run(ok=False)
    with pytest.raises(BackendError, match='bev_int8.onnx was made from another bev.onnx'):
        run(from_sha256={**sources, 'bev.onnx': '0' * 64})
    (onnx_dir / 'camera_int8.onnx').unlink()
    with pytest.raises(BackendError, match='camera_int8.onnx is missing'):
        run()


def test_tensorrt_needs_cuda_and_built_engines(exported):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: test_cuda.py covers it')
    with pytest.raises(BackendError, match='needs a CUDA device'):
        PerceptionInference(exported, device='cpu', backend='tensorrt')
    with pytest.raises(BackendError, match='backend must be one of torch, onnxruntime, tensorrt'):
        PerceptionInference(exported, device='cpu', backend='tflite')
    done = subprocess.run([sys.executable, '-m', 'mtl_perception_ros.core.tensorrt_engines', '--checkpoint',
                           str(exported)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and 'need a CUDA GPU' in done.stderr and 'Traceback' not in done.stderr


@pytest.mark.ros
def test_the_node_runs_on_onnxruntime_and_says_which_backend_in_its_log_and_diagnostics(
        exported, ros_process, rclpy_context):
    pytest.importorskip('vision_msgs.msg', reason='needs the interface packages')
    from test_node import Harness, node_args, wait_for_ready

    node = ros_process(node_args(exported, ['backend:=onnxruntime', 'inference_threads:=1']), name='node')
    harness = Harness(rclpy_context)
    wait_for_ready(harness, node, np.random.default_rng(2))
    status = harness.settled_status(node)
    assert (status['backend'], status['precision'], status['execution_providers'], status['inference_threads']) == \
        ('onnxruntime', 'fp32', 'CPUExecutionProvider', '1')
    assert int(status['processed']) >= 1 and harness.received['labels']
    assert 'backend onnxruntime, fp32 (CPUExecutionProvider), 1 CPU thread' in node.output()
    # the torch-free runtime (core.onnx_inference): no libtorch mapped into the node process
    maps = Path(f'/proc/{node.popen.pid}/maps')
    if maps.exists():
        assert 'libtorch' not in maps.read_text(), 'the node on onnxruntime loaded torch'
    assert node.interrupt() == 0, node.output()


@pytest.mark.ros
def test_the_node_without_the_export_stops_at_startup_saying_what_to_run(exported, tmp_path, ros_process):
    pytest.importorskip('vision_msgs.msg', reason='needs the interface packages')
    from test_node import node_args

    alone = shutil.copy(exported, tmp_path / 'alone.pt')
    node = ros_process(node_args(alone, ['backend:=onnxruntime']), name='node')
    assert node.popen.wait(60) != 0
    output = node.output()
    assert 'backend onnxruntime' in output and 'training.export.to_onnx' in output and 'Traceback' not in output


def test_folding_the_batch_norms_keeps_the_models_outputs(exported):
    from mtl_perception_ros.core.checkpoint import load_checkpoint
    from mtl_perception_ros.core.model import fold_batch_norms

    model, _ = load_checkpoint(exported)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():           # running statistics far from the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1, generator=generator)
            module.running_var.uniform_(0.5, 2, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
    model.eval()
    rng = np.random.default_rng(3)
    points = torch.from_numpy(synthetic_cloud(rng) / [1, 1, 1, 255]).float()
    image = torch.from_numpy(synthetic_image(rng)).permute(2, 0, 1)[None].float()
    k = torch.tensor([[[IMAGE_HW[1] * 0.8, 0, IMAGE_HW[1] / 2], [0, IMAGE_HW[1] * 0.8, IMAGE_HW[0] / 2], [0, 0, 1]]])
    inputs = (points, torch.zeros(len(points), dtype=torch.long), image, k.float(), torch.from_numpy(OPTICAL)[None].float())
    with torch.inference_mode():
        expected = model(*inputs)
        folded = fold_batch_norms(model)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        got = folded(*inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name].numpy(), value.numpy(), rtol=1e-4, atol=2e-4, err_msg=name)
