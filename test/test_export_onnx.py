"""ONNX export of a checkpoint: the two graphs run in ONNX Runtime and agree with torch."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ros_test_utils import require_modules

require_modules('onnxruntime', 'onnxscript')   # `make setup` installs them; a broken install skips too

from mtl_perception_ros.core.checkpoint import load_checkpoint  # noqa: E402
from sensor_samples import REPO, make_small_checkpoint  # noqa: E402
from mtl_perception_ros.core.inference_backends import CPU_PROVIDER, OnnxRuntimeBranches  # noqa: E402
from training.export.to_onnx import BEV_FILE, CAMERA_FILE, check_onnx, export_onnx, synthetic_frames  # noqa: E402


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    # with the pyramid pooling on a 4 x 6 map at 1/16 (6 is no multiple of its 4 bins: ONNX's
    # AveragePool could not export adaptive pooling there)
    checkpoint = make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt', camera_context=True)
    model, info = load_checkpoint(checkpoint)
    out = tmp_path_factory.mktemp('onnx')
    export_onnx(model, info, out)
    return checkpoint, model, info, out


def test_onnx_runtime_pipeline_gives_the_models_outputs(exported):
    _, model, info, out = exported
    branches = OnnxRuntimeBranches(out, torch.device('cpu'), [CPU_PROVIDER])
    points, image, camera_matrix, vehicle_to_camera = next(synthetic_frames(model, info, 1, seed=5))
    points = points[:1234]                       # another point count than any export example
    inputs = (torch.from_numpy(points), torch.zeros(len(points), dtype=torch.long), torch.from_numpy(image),
              torch.from_numpy(camera_matrix), torch.from_numpy(vehicle_to_camera))
    with torch.inference_mode():
        expected = model(*inputs)
        got = {name: value.numpy() for name, value in model(*inputs, branches=branches).items()}
    assert set(got) == set(expected) and branches.providers == (CPU_PROVIDER,)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    # the camera really reaches the detection heads: LiDAR-only gives another heatmap
    with torch.inference_mode():
        lidar_only = model(torch.from_numpy(points), torch.zeros(len(points), dtype=torch.long),
                           batch_size=1)['bbox_heatmap'].numpy()
    assert np.abs(lidar_only - got['bbox_heatmap']).max() > 1e-3


def test_the_graphs_take_a_batch_of_any_size(exported):
    import onnxruntime

    _, model, info, out = exported
    camera = onnxruntime.InferenceSession(str(out / CAMERA_FILE), providers=['CPUExecutionProvider'])
    bev = onnxruntime.InferenceSession(str(out / BEV_FILE), providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 3, *info.image_hw)).astype(np.float32)
    rows, cols = model.cfg.bev_grid.shape
    canvas = rng.uniform(0, 2, (3, model.cfg.pillar_channels, rows, cols)).astype(np.float32)
    with torch.inference_mode():
        features, sem_logits = model.camera_branch(torch.from_numpy(images))
        heatmap, reg = model.bev_branch(torch.from_numpy(canvas))
    for got, want in zip(camera.run(None, {'image': images}) + bev.run(None, {'canvas': canvas}),
                         (features, sem_logits, heatmap, reg)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_the_check_fails_when_the_graphs_are_not_the_models(exported):
    _, model, info, out = exported
    assert check_onnx(model, info, out, frames=2).ok
    other, _ = load_checkpoint(exported[0])
    with torch.no_grad():
        other.detection_head.heatmap[-1].bias.add_(0.5)     # the torch side changed after the export
    result = check_onnx(other, info, out, frames=1)
    assert not result.ok
    assert result.max_abs_diff['bbox_heatmap'] > result.allowed['bbox_heatmap']
    assert result.max_abs_diff['sem_logits'] <= result.allowed['sem_logits']
    assert result.max_abs_diff['pillar_canvas'] <= result.allowed['pillar_canvas']   # the NumPy pillar step


def test_command_line_writes_both_graphs_and_a_report(exported, tmp_path):
    checkpoint = exported[0]
    out = tmp_path / 'onnx'
    done = subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint),
                           '--out', str(out), '--frames', '2'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / 'onnx_export.json').read_text())
    assert report['check']['ok'] and report['check']['frames'] == 2
    assert report['check']['max_abs_diff']['pillar_canvas'] < 1e-4
    # what the torch-free runtime reads: the checkpoint's metadata and the folded pillar encoder
    from mtl_perception_ros.core.onnx_inference import read_runtime_files
    info, weight, bias = read_runtime_files(out, checkpoint)
    assert info.model_config == exported[2].model_config and info.detection_labels == exported[2].detection_labels
    assert weight.shape == (9 + info.model_config.camera_feature_channels + 1, info.model_config.pillar_channels)
    assert bias.shape == (info.model_config.pillar_channels,)
    assert [g['file'] for g in report['graphs']] == [CAMERA_FILE, BEV_FILE]
    assert report['graphs'][0]['inputs']['image'] == ['batch', 3, *report['image_hw']]
    assert report['detection_classes'] == ['car', 'truck', 'pedestrian', 'cyclist']
    assert report['checkpoint_sha256'] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert not list(out.glob('.*.tmp'))            # written atomically, nothing left behind

    missing = subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(tmp_path / 'no.pt'),
                              '--out', str(tmp_path / 'x')], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and 'no.pt' in missing.stderr
