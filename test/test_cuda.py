"""The CUDA path for real: inference in fp32 / fp16 / bf16, ONNX Runtime's CUDA and TensorRT
providers, and one training step. Skipped without a CUDA device (CI has none): run on a GPU
machine with scripts/gpu_check.sh, which also runs the GPU benchmarks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip('no CUDA device here (scripts/gpu_check.sh runs these on a GPU machine)', allow_module_level=True)

from mtl_perception_ros.core.inference import PerceptionInference  # noqa: E402
from mtl_perception_ros.core.inference_backends import default_onnx_dir  # noqa: E402
from sensor_samples import IMAGE_HW, REPO, make_small_checkpoint, synthetic_cloud, synthetic_image  # noqa: E402

OPTICAL = np.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).reshape(4, 4)
K = np.array([[IMAGE_HW[1] * 0.8, 0, IMAGE_HW[1] / 2], [0, IMAGE_HW[1] * 0.8, IMAGE_HW[0] / 2], [0, 0, 1]])


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt', camera_context=True)


def frame(seed: int = 0):
    rng = np.random.default_rng(seed)
    points = synthetic_cloud(rng)
    points[:, 3] /= 255.0
    return points, [(synthetic_image(rng), K, OPTICAL)]


def test_cuda_inference_agrees_with_the_cpu(checkpoint):
    cpu = PerceptionInference(checkpoint, device='cpu', score_threshold=0.1)
    cuda = PerceptionInference(checkpoint, device='cuda', score_threshold=0.1)
    assert cuda.device.type == 'cuda' and cuda.precision == 'fp32'
    points, views = frame()
    want, got = cpu.run_views(points, views), cuda.run_views(points, views)
    assert len(want.boxes) > 0
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
    assert (got.class_map == want.class_map).mean() > 0.99


@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
def test_half_precisions_run_on_cuda_and_stay_close(checkpoint, precision):
    if precision == 'bf16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bf16')
    reference = PerceptionInference(checkpoint, device='cuda', score_threshold=0.1)
    half = PerceptionInference(checkpoint, device='cuda', precision=precision, score_threshold=0.1)
    assert half.precision == precision
    points, views = frame(1)
    want, got = reference.run_views(points, views), half.run_views(points, views)
    assert np.isfinite(got.boxes).all() and abs(len(got.boxes) - len(want.boxes)) <= max(2, len(want.boxes) // 5)
    assert (got.class_map == want.class_map).mean() > 0.95


def test_onnx_runtime_on_cuda_agrees_with_torch(checkpoint):
    onnxruntime = pytest.importorskip('onnxruntime')
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)')
    import subprocess
    import sys
    subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint), '--frames', '1'],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    assert default_onnx_dir(checkpoint).is_dir()
    reference = PerceptionInference(checkpoint, device='cuda', score_threshold=0.1)
    onnx = PerceptionInference(checkpoint, device='cuda', score_threshold=0.1, backend='onnxruntime')
    assert onnx.execution_providers[0] == 'CUDAExecutionProvider'
    points, views = frame(2)
    want, got = reference.run_views(points, views), onnx.run_views(points, views)
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)


def test_tensorrt_engines_are_built_ahead_then_used(checkpoint, tmp_path):
    onnxruntime = pytest.importorskip('onnxruntime')
    if 'TensorrtExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has no TensorRT provider')
    import subprocess
    import sys

    from mtl_perception_ros.core.inference_backends import BackendError
    subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint), '--frames', '1'],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    for engine_dir in default_onnx_dir(checkpoint).glob('tensorrt/*'):
        (engine_dir / 'engines.json').unlink(missing_ok=True)
    with pytest.raises(BackendError, match='mtl_perception_build_engines'):
        PerceptionInference(checkpoint, device='cuda', precision='fp16', backend='tensorrt')
    built = subprocess.run([sys.executable, '-m', 'mtl_perception_ros.core.tensorrt_engines', '--checkpoint',
                            str(checkpoint), '--precision', 'fp16'], cwd=REPO, capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0 and 'done in' in built.stdout, built.stdout + built.stderr
    trt = PerceptionInference(checkpoint, device='cuda', precision='fp16', backend='tensorrt', score_threshold=0.1)
    assert trt.execution_providers[0] == 'TensorrtExecutionProvider' and trt.precision == 'fp16'
    points, views = frame(3)
    got = trt.run_views(points, views)
    assert np.isfinite(got.boxes).all() and got.class_map.shape == IMAGE_HW


def test_one_training_step_on_cuda_lowers_nothing_to_nan():
    from mtl_perception_ros.core.labels import LabelSet
    from mtl_perception_ros.core.model import MultiTaskNet
    from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
    from training.engine.losses import MultiTaskLoss
    from training.engine.train import TrainStep, build_model_config, build_optimizer
    from training.engine.data_loading import to_device

    sys_path = str(REPO / 'benchmarks')
    import sys
    sys.path.insert(0, sys_path)
    from bench_training import toy_batches

    semantic, detection = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES), LabelSet.from_yaml(DEFAULT_BOX_CLASSES)
    model_cfg = build_model_config({'preset': 'default'}, semantic, detection)
    device = torch.device('cuda')
    torch.manual_seed(0)
    step = TrainStep(MultiTaskNet(model_cfg), MultiTaskLoss()).to(device).train()
    optimizer = build_optimizer([step], {'lr': 1e-3, 'weight_decay': 0.01, 'betas': (0.9, 0.999)})
    batch = to_device(toy_batches(model_cfg, detection, semantic, 2, 1, 5000)[0], device)
    before = [p.detach().clone() for p in step.parameters() if p.requires_grad]
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=torch.cuda.is_bf16_supported()):
        total, _, _ = step(batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    assert torch.isfinite(total)
    after = [p.detach() for p in step.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
