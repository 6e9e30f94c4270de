"""The torch-free pillar canvas (core.lidar_canvas_np): the same canvas as MultiTaskNet.lidar_canvas
for the clouds and camera rigs inference sees, and no torch import on that path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, invert_rigid, project_points
from mtl_perception_ros.core.lidar_canvas_np import GROUPED_RANKS, lidar_canvas_np, pillar_max_np
from mtl_perception_ros.core.model import (CAMERA_STRIDE, ModelConfig, MultiTaskNet, fold_batch_norms,
                                           folded_pillar_weights)

REPO = Path(__file__).resolve().parent.parent
# 16 x 16 m around the vehicle at 0.5 m: points behind the front camera are in the grid too.
GRID = BevGrid(x_min_m=-8, x_max_m=8, y_min_m=-8, y_max_m=8, z_min_m=-2, z_max_m=2, cell_m=0.5, output_stride=2)
IMAGE_HW = (64, 96)
CAMERA_CHANNELS = 6


def small_model(seed: int) -> MultiTaskNet:
    """A tiny eval-mode network whose pillar BatchNorm has non-trivial running statistics."""
    torch.manual_seed(seed)
    cfg = ModelConfig(num_det_classes=2, num_sem_classes=3, bev_grid=GRID, image_hw=IMAGE_HW,
                      camera_channels=(4, 4, 8, 8), camera_blocks=(1, 1, 1, 1),
                      camera_feature_channels=CAMERA_CHANNELS, pillar_channels=8, bev_channels=(8, 8, 8),
                      bev_blocks=(1, 1, 1), neck_channels=8, head_channels=8)
    model = MultiTaskNet(cfg).eval()
    norm = model.pillar_encoder.norm
    with torch.no_grad():
        norm.running_mean.normal_(0.0, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    return model


def camera(yaw_deg: float, focal_px: float, centre_offset_px=(0.0, 0.0), position_m=(1.5, 0.0, 1.4)):
    """(K for IMAGE_HW, vehicle_to_camera) of a camera at `position_m` looking along `yaw_deg`, pitched 5 deg down."""
    yaw, pitch = np.radians(yaw_deg), np.radians(5.0)
    rotation_yaw = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rotation_pitch = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])
    camera_to_vehicle = np.eye(4)                 # camera frame with REP-103 axes (x forward)
    camera_to_vehicle[:3, :3] = rotation_yaw @ rotation_pitch
    camera_to_vehicle[:3, 3] = position_m
    height, width = IMAGE_HW
    k = np.array([[focal_px, 0, (width - 1) / 2 + centre_offset_px[0]],
                  [0, focal_px * 1.01, (height - 1) / 2 + centre_offset_px[1]], [0, 0, 1]])
    return k, OPTICAL_FROM_FORWARD_LEFT_UP @ invert_rigid(camera_to_vehicle)


# Front, front-left and front-right with overlapping fields of view and different lenses.
RIG = [camera(0, 60), camera(55, 45, (3.0, -2.0), (1.2, 0.5, 1.5)), camera(-60, 80, (-4.0, 1.5), (1.2, -0.5, 1.3))]


def cloud(rng, count=3000) -> np.ndarray:
    """Points over and past the grid in x, y and z, a dense cluster in one pillar, reflectance in [0, 1]."""
    spread = np.column_stack([rng.uniform(-10, 10, count), rng.uniform(-10, 10, count),
                              rng.uniform(-2.5, 2.5, count), rng.uniform(0, 1, count)])
    cluster = np.column_stack([rng.uniform(4.05, 4.45, 40), rng.uniform(1.05, 1.45, 40),
                               rng.uniform(-1, 1, 40), rng.uniform(0, 1, 40)])
    return np.vstack([spread, cluster]).astype(np.float32)


def torch_canvas(model: MultiTaskNet, points, camera_features=None, rig=()) -> np.ndarray:
    """MultiTaskNet.lidar_canvas as PerceptionInference.run_views calls it for one frame."""
    points_t = torch.from_numpy(points)
    kwargs = dict(camera_features=None, camera_on=torch.ones(1, dtype=torch.bool), camera_matrix=None,
                  vehicle_to_camera=None, image_hw=None)
    if camera_features is not None:
        kwargs = dict(camera_features=torch.from_numpy(camera_features),
                      camera_on=torch.ones(len(rig), dtype=torch.bool),
                      camera_matrix=torch.tensor(np.stack([k for k, _ in rig]), dtype=torch.float32),
                      vehicle_to_camera=torch.tensor(np.stack([t for _, t in rig]), dtype=torch.float32),
                      image_hw=IMAGE_HW, view_sample=torch.zeros(len(rig), dtype=torch.long))
    with torch.no_grad():
        return model.lidar_canvas(points_t, torch.zeros(len(points), dtype=torch.long), 1, **kwargs).numpy()


def numpy_canvas(model: MultiTaskNet, points, camera_features=None, rig=()) -> np.ndarray:
    weight, bias = folded_pillar_weights(model.pillar_encoder)
    if camera_features is None:
        return lidar_canvas_np(points, GRID, weight, bias)
    return lidar_canvas_np(points, GRID, weight, bias, camera_features, np.stack([k for k, _ in rig]),
                           np.stack([t for _, t in rig]), IMAGE_HW)


def camera_features_for(rng, num_views: int) -> np.ndarray:
    height, width = IMAGE_HW
    return rng.normal(size=(num_views, CAMERA_CHANNELS, height // CAMERA_STRIDE, width // CAMERA_STRIDE)).astype(np.float32)


def test_the_cloud_and_rig_cover_the_cases_that_matter():
    """The parity tests below are only as good as their data: points seen by one and by several
    views, by none (behind the cameras, outside the images), and points outside the grid."""
    points = cloud(np.random.default_rng(0))
    in_grid = GRID.in_range(points)
    seen = np.stack([project_points(points[in_grid], t, k, IMAGE_HW)[2] for k, t in RIG])   # (V, P)
    _, depth, _ = project_points(points[in_grid], RIG[0][1], RIG[0][0])
    assert (~in_grid).sum() > 500 and in_grid.sum() > 1000
    assert (seen.sum(axis=0) == 1).sum() > 100 and (seen.sum(axis=0) >= 2).sum() > 50
    assert (seen.sum(axis=0) == 0).sum() > 100 and (depth < 0).sum() > 100


@pytest.mark.parametrize('num_views', [0, 1, 3])
def test_numpy_canvas_equals_the_torch_canvas(num_views):
    """Given a random model, a cloud and 0 (LiDAR-only), 1 or 3 cameras, both canvases agree."""
    rng = np.random.default_rng(num_views)
    model = small_model(seed=num_views)
    points = cloud(rng)
    features = camera_features_for(rng, num_views) if num_views else None
    expected = torch_canvas(model, points, features, RIG[:num_views])
    canvas = numpy_canvas(model, points, features, RIG[:num_views])
    assert canvas.shape == expected.shape == (1, 8) + GRID.shape and canvas.dtype == np.float32
    assert (expected > 0).any(axis=1).sum() > 200          # many occupied pillars take part
    np.testing.assert_allclose(canvas, expected, rtol=1e-5, atol=1e-5)


def test_camera_features_change_the_canvas_where_a_view_sees_points():
    """A check that the camera path is not silently off: painting changes the canvas."""
    rng = np.random.default_rng(7)
    model = small_model(seed=7)
    points = cloud(rng)
    lidar_only = numpy_canvas(model, points)
    painted = numpy_canvas(model, points, camera_features_for(rng, 3), RIG)
    assert np.abs(painted - lidar_only).max() > 0.1


def test_pillar_max_takes_the_max_of_short_and_long_pillars():
    """Pillars of 1, GROUPED_RANKS, GROUPED_RANKS + 1 and 30 points: the grouped steps and the
    reduceat of the long pillars' rest give exactly np.maximum.reduceat's answer."""
    sizes = [1, GROUPED_RANKS, GROUPED_RANKS + 1, 30, 2]
    cell = np.repeat([3, 10, 11, 40, 41], sizes)
    features = np.random.default_rng(0).uniform(0, 1, (len(cell), 5)).astype(np.float32)
    occupied, pillars = pillar_max_np(features, cell)
    assert occupied.tolist() == [3, 10, 11, 40, 41]
    np.testing.assert_array_equal(pillars, np.maximum.reduceat(features, np.r_[0, np.cumsum(sizes)[:-1]], axis=0))


def test_an_encoder_folded_by_fold_batch_norms_gives_the_same_weights():
    model = small_model(seed=3)
    weight, bias = folded_pillar_weights(model.pillar_encoder)
    fold_batch_norms(model)
    folded_weight, folded_bias = folded_pillar_weights(model.pillar_encoder)
    np.testing.assert_allclose(folded_weight, weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded_bias, bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('points', [np.zeros((0, 4), np.float32),
                                    np.array([[9.0, 0, 0, 1], [0, -8.01, 0, 1], [0, 0, 2.0, 1], [-8.5, 7, -3, 0]],
                                             np.float32)],
                         ids=['empty cloud', 'all points outside the grid'])
def test_no_points_in_the_grid_gives_an_empty_canvas(points):
    rng = np.random.default_rng(5)
    model = small_model(seed=5)
    features = camera_features_for(rng, 2)
    for camera_features, rig in ((None, ()), (features, RIG[:2])):
        canvas = numpy_canvas(model, points, camera_features, rig)
        assert canvas.shape == (1, 8) + GRID.shape and not canvas.any()
        np.testing.assert_array_equal(canvas, torch_canvas(model, points, camera_features, rig))


def test_inputs_of_the_wrong_shape_are_refused_with_what_was_expected():
    model = small_model(seed=1)
    weight, bias = folded_pillar_weights(model.pillar_encoder)
    points = cloud(np.random.default_rng(1), 10)
    features = camera_features_for(np.random.default_rng(1), 2)
    with pytest.raises(ValueError, match=r'points must be \(P, >=4\)'):
        lidar_canvas_np(points[:, :3], GRID, weight, bias)
    with pytest.raises(ValueError, match='folded_pillar_weights'):
        lidar_canvas_np(points, GRID, weight.T, bias)
    with pytest.raises(ValueError, match=r'camera_features must be \(V, 6, h, w\)'):
        lidar_canvas_np(points, GRID, weight, bias, features[:, :4], np.eye(3)[None], np.eye(4)[None], IMAGE_HW)
    with pytest.raises(ValueError, match=r'camera_matrix \(2, 3, 3\)'):
        lidar_canvas_np(points, GRID, weight, bias, features, np.eye(3)[None], np.eye(4)[None], IMAGE_HW)
    with pytest.raises(ValueError, match='image_hw'):
        lidar_canvas_np(points, GRID, weight, bias, features, np.stack([np.eye(3)] * 2), np.stack([np.eye(4)] * 2))


def test_the_onnx_runtime_side_steps_run_without_importing_torch():
    """In a fresh process: import the canvas, decoding and box coding, run the canvas and the decoder
    on one frame, and torch was never imported."""
    script = '''
import sys
import numpy as np
from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core import box_coding, decode, lidar_canvas_np
grid = BevGrid(x_min_m=-8, x_max_m=8, y_min_m=-8, y_max_m=8, cell_m=0.5, output_stride=2)
rng = np.random.default_rng(0)
points = rng.uniform(-8, 8, (500, 4)).astype(np.float32)
k = np.array([[[50.0, 0, 48], [0, 50, 32], [0, 0, 1]]])
t = np.array([[[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]])
canvas = lidar_canvas_np.lidar_canvas_np(points, grid, rng.normal(size=(9 + 6 + 1, 8)), np.zeros(8),
                                         rng.normal(size=(1, 6, 16, 24)), k, t, (64, 96))
heatmap = rng.normal(size=(2, 16, 16)).astype(np.float32)
heatmap[0, 5, 5] = 4.0
det = decode.decode_detections_np(heatmap, rng.normal(size=(8, 16, 16)).astype(np.float32), grid, nms_radius_m=2.0)
assert canvas.shape == (1, 8, 32, 32) and canvas.any() and len(det) >= 1, (canvas.shape, len(det))
assert 'torch' not in sys.modules, 'torch was imported'
print('ok')
'''
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr
