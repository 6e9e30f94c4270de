"""MultiTaskNet: shapes, point handling, camera sampling, shared gradients, dropout, a short overfit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, project_points
from mtl_perception_ros.core.model import (ModelConfig, MultiTaskNet, choose_views, pillar_geometry,
                                           project_to_grid_sample_coords, sample_per_point)

# A 16 m x 16 m grid of 0.25 m cells (64 x 64 pillars -> 16 x 16 output) and a 64 x 128 image.
SMALL_GRID = BevGrid(x_min_m=0.0, x_max_m=16.0, y_min_m=-8.0, y_max_m=8.0, cell_m=0.25, output_stride=4)
IMAGE_HW = (64, 128)
# Camera at the vehicle origin looking along +x; focal 100 px, principal point at the image centre.
CAMERA_MATRIX = np.array([[100.0, 0.0, 63.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]])
VEHICLE_TO_CAMERA = OPTICAL_FROM_FORWARD_LEFT_UP


def small_config(**overrides) -> ModelConfig:
    values = dict(bev_grid=SMALL_GRID, image_hw=IMAGE_HW, camera_dropout_p=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def make_batch(batch_size: int = 2, points_per_sample: int = 300, seed: int = 0) -> dict:
    """Points spread over the small grid (about half of them inside the camera's view)."""
    rng = np.random.default_rng(seed)
    points = np.concatenate([
        np.stack([rng.uniform(0.5, 15.5, points_per_sample), rng.uniform(-7.5, 7.5, points_per_sample),
                  rng.uniform(-1.5, 1.0, points_per_sample), rng.uniform(0, 1, points_per_sample)], 1)
        for _ in range(batch_size)])
    return {
        'points': torch.tensor(points, dtype=torch.float32),
        'points_batch': torch.arange(batch_size).repeat_interleave(points_per_sample),
        'image': torch.tensor(rng.integers(0, 256, (batch_size, 3) + IMAGE_HW), dtype=torch.uint8),
        'camera_matrix': torch.tensor(CAMERA_MATRIX, dtype=torch.float32).expand(batch_size, 3, 3).clone(),
        'vehicle_to_camera': torch.tensor(VEHICLE_TO_CAMERA, dtype=torch.float32)
                             .expand(batch_size, 4, 4).clone(),
    }


def capture_point_features(model: MultiTaskNet):
    """Records the per-point features the pillar encoder receives (a real forward pre-hook)."""
    seen = []
    handle = model.pillar_encoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach()))
    return seen, handle


def test_output_shapes_on_a_tiny_batch():
    model = MultiTaskNet(small_config()).eval()
    with torch.inference_mode():
        out = model(**make_batch())
    assert out['bbox_heatmap'].shape == (2, 4, 16, 16)
    assert out['bbox_reg'].shape == (2, 8, 16, 16)
    assert out['sem_logits'].shape == (2, 13, 16, 32)   # input / 4
    assert all(torch.isfinite(v).all() for v in out.values())


def test_semantic_stride_2_gives_logits_at_half_the_input():
    model = MultiTaskNet(small_config(semantic_stride=2)).eval()
    with torch.inference_mode():
        out = model(**make_batch())
        lidar_only = model(make_batch()['points'], make_batch()['points_batch'], batch_size=2)
    assert out['sem_logits'].shape == (2, 13, 32, 64)   # input / 2
    assert lidar_only['sem_logits'].shape == (2, 13, 32, 64)
    assert out['bbox_heatmap'].shape == (2, 4, 16, 16)   # the painted features stay at 1/4
    with pytest.raises(ValueError, match='semantic_stride'):
        small_config(semantic_stride=8)


def test_camera_context_lets_every_pixel_see_the_whole_image():
    """Pyramid pooling: a change at the left edge of a 320 x 512 image moves the semantic logits at
    the right edge; without it the right edge lies outside the receptive field."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 320, 512) * 255
    changed = image.clone()
    changed[..., :64] = 0
    reach = {}
    for context in (False, True):
        model = MultiTaskNet(ModelConfig(camera_context=context)).eval()
        with torch.inference_mode():
            _, before = model.camera_branch(image)
            _, after = model.camera_branch(changed)
        reach[context] = float((after - before)[..., -8:].abs().max())
    assert reach[False] == 0.0 and reach[True] > 1e-7


def test_adaptive_average_is_adaptive_average_pooling_for_any_size():
    from mtl_perception_ros.core.model import adaptive_average
    torch.manual_seed(0)
    for height, width in ((20, 32), (30, 48), (7, 11), (1, 3)):
        x = torch.randn(2, 5, height, width)
        for bins in (1, 2, 4):
            torch.testing.assert_close(adaptive_average(x, bins), torch.nn.functional.adaptive_avg_pool2d(x, bins))


def test_pillar_max_over_occupied_cells_equals_the_dense_scatter_max():
    """PillarEncoder reduces onto the occupied pillars only; values and gradients must be those of
    a scatter-max onto every cell of the canvas."""
    from mtl_perception_ros.core.model import PillarEncoder
    torch.manual_seed(0)
    encoder = PillarEncoder(5, 8).train()
    features = torch.randn(300, 5, requires_grad=True)
    cell = torch.randint(0, 40, (300,)) * 7           # 40 of the 400 cells occupied, unsorted
    canvas = encoder(features, cell, 400)
    x = torch.relu(encoder.norm(encoder.linear(features)))
    dense = x.new_zeros(400, 8).scatter_reduce(0, cell.unsqueeze(-1).expand(-1, 8), x, 'amax', include_self=False)
    torch.testing.assert_close(canvas, dense, rtol=0, atol=0)
    weights = torch.randn(400, 8)
    grad_compact, = torch.autograd.grad((canvas * weights).sum(), features, retain_graph=True)
    grad_dense, = torch.autograd.grad((dense * weights).sum(), features)
    torch.testing.assert_close(grad_compact, grad_dense)
    assert canvas[torch.arange(400) % 7 != 0].abs().sum() == 0   # empty cells stay 0


def test_default_config_matches_the_project_contract():
    cfg = ModelConfig()
    assert cfg.bev_grid.shape == (256, 256) and cfg.bev_grid.output_shape == (64, 64)
    assert cfg.image_hw == (320, 512)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(ModelConfig.gpu_large().to_dict()) == ModelConfig.gpu_large()
    with pytest.raises(ValueError, match='unknown keys'):
        ModelConfig.from_dict({**cfg.to_dict(), 'depth': 3})
    with pytest.raises(ValueError, match='divisible by 8'):
        ModelConfig(bev_grid=BevGrid(x_max_m=63.0, cell_m=0.25, output_stride=4))


def test_heatmap_bias_starts_at_minus_2_19():
    model = MultiTaskNet(small_config())
    bias = model.detection_head.heatmap[-1].bias
    assert torch.allclose(bias, torch.full_like(bias, -2.19))
    assert abs(1 / (1 + math.exp(2.19)) - 0.1) < 1e-3   # initial centre probability ~ 0.1


def test_points_outside_the_grid_change_nothing():
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch()
    outside = torch.tensor([[20.0, 0.0, 0.0, 0.5],     # beyond x_max
                            [5.0, -9.0, 0.0, 0.5],     # beyond y_min
                            [5.0, 0.0, 3.5, 0.5],      # above z_max
                            [-1.0, 0.0, 0.0, 0.5],     # behind x_min
                            [float('nan'), 0.0, 0.0, 0.5]])
    noisy = dict(batch, points=torch.cat([batch['points'], outside, outside]),
                 points_batch=torch.cat([batch['points_batch'], torch.zeros(5, dtype=torch.int64),
                                         torch.ones(5, dtype=torch.int64)]))
    with torch.inference_mode():
        clean_out, noisy_out = model(**batch), model(**noisy)
    for key in clean_out:
        torch.testing.assert_close(noisy_out[key], clean_out[key], rtol=0, atol=0)


def test_pillar_geometry_cells_and_offsets_worked_out_by_hand():
    # Two points in the same 0.25 m pillar (row 4 = x 1.0..1.25, col 32 = y 0.0..0.25), one in sample 1.
    points = torch.tensor([[1.05, 0.05, 0.0, 0.2], [1.15, 0.15, 1.0, 0.4], [0.1, -8.0, -2.0, 1.0]])
    batch = torch.tensor([0, 0, 1])
    keep, cell, features = pillar_geometry(points, batch, SMALL_GRID, batch_size=2)
    assert keep.tolist() == [True, True, True]
    assert cell.tolist() == [4 * 64 + 32, 4 * 64 + 32, 64 * 64 + 0]
    torch.testing.assert_close(features[0], torch.tensor([1.05, 0.05, 0.0, 0.2,      # x y z r
                                                          -0.075, -0.075,           # to centre (1.125, 0.125)
                                                          -0.05, -0.05, -0.5]))     # to mean (1.1, 0.1, 0.5)
    torch.testing.assert_close(features[2, 4:], torch.tensor([-0.025, -0.125, 0.0, 0.0, 0.0]))


def test_projection_to_grid_sample_coordinates_worked_out_by_hand():
    xyz = torch.tensor([[10.0, 0.0, 0.0],     # straight ahead -> principal point (63.5, 31.5)
                        [10.0, -1.0, 0.0],    # 1 m right at 10 m -> u = 63.5 + 10 = 73.5
                        [-5.0, 0.0, 0.0],     # behind the camera
                        [10.0, 20.0, 0.0]])   # far left -> u = -136.5, outside
    grid_xy, visible = project_to_grid_sample_coords(
        xyz, torch.zeros(4, dtype=torch.int64), torch.tensor(CAMERA_MATRIX[None], dtype=torch.float32),
        torch.tensor(VEHICLE_TO_CAMERA[None], dtype=torch.float32), IMAGE_HW)
    assert visible.tolist() == [True, True, False, False]
    torch.testing.assert_close(grid_xy[0], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(grid_xy[1], torch.tensor([(73.5 + 0.5) / 128 * 2 - 1, 0.0]))
    assert (grid_xy[2:] == -2.0).all()
    # Same visibility as the numpy reference in mtl_perception_ros.core.camera.
    _, _, reference = project_points(xyz.numpy(), VEHICLE_TO_CAMERA, CAMERA_MATRIX, IMAGE_HW)
    assert visible.tolist() == reference.tolist()


def test_sample_per_point_reads_each_points_own_image():
    # Feature value = 100 * sample + column, so a bilinear sample at a pixel centre is exact.
    columns = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).expand(2, 1, 4, 4)
    feature_map = columns + 100 * torch.arange(2, dtype=torch.float32).view(2, 1, 1, 1)
    column_centre = lambda j: (j + 0.5) / 4 * 2 - 1
    grid_xy = torch.tensor([[column_centre(1), 0.25], [column_centre(3), -0.75], [column_centre(0), 0.75]])
    points_batch = torch.tensor([1, 0, 1])   # interleaved on purpose
    sampled = sample_per_point(feature_map, grid_xy, points_batch)
    assert sampled[:, 0].tolist() == [101.0, 3.0, 100.0]


def test_points_outside_the_image_get_zero_camera_features_and_the_flag():
    model = MultiTaskNet(small_config()).eval()
    seen, handle = capture_point_features(model)
    batch = make_batch(points_per_sample=400)
    with torch.inference_mode():
        model(**batch)
    handle.remove()
    features = seen[0]
    camera, flag = features[:, 9:-1], features[:, -1]
    _, _, inside = project_points(batch['points'].numpy(), VEHICLE_TO_CAMERA, CAMERA_MATRIX, IMAGE_HW)
    inside = torch.from_numpy(inside)
    assert 50 < int(inside.sum()) < len(inside) - 50        # both kinds present
    assert (flag[~inside] == 1).all() and (camera[~inside] == 0).all()
    assert (flag[inside] == 0).all() and (camera[inside].abs().sum(dim=1) > 0).all()


def test_detection_loss_alone_trains_the_camera_encoder():
    """The shared signal: gradients of a heatmap-only loss reach the image encoder via grid_sample."""
    model = MultiTaskNet(small_config()).train()
    batch = make_batch()
    model(**batch)['bbox_heatmap'].sigmoid().mean().backward()
    first_camera_conv = model.camera_encoder.stages[0][0][0].weight
    assert first_camera_conv.grad is not None and first_camera_conv.grad.abs().sum() > 0
    assert model.semantic_head.classifier.weight.grad is None   # not through the semantic head

    model.zero_grad(set_to_none=True)   # without the camera the encoder learns nothing from detection
    model(**batch, camera_valid=torch.tensor([False, False]))['bbox_heatmap'].sigmoid().mean().backward()
    assert first_camera_conv.grad is None or first_camera_conv.grad.abs().sum() == 0


def test_camera_dropout_hides_the_camera_only_in_training():
    batch = make_batch()
    model = MultiTaskNet(small_config(camera_dropout_p=1.0))
    seen, handle = capture_point_features(model)
    model.train()
    dropped = model(**batch)
    model.eval()
    with torch.no_grad():
        model(**batch)
    handle.remove()
    assert (seen[0][:, -1] == 1).all() and (seen[0][:, 9:-1] == 0).all()      # training: all hidden
    assert (seen[1][:, -1] == 0).any()                                          # eval: camera used

    # Dropping out == declaring the camera missing (same weights, same batch statistics).
    no_dropout = MultiTaskNet(small_config(camera_dropout_p=0.0))
    no_dropout.load_state_dict(model.state_dict())
    no_dropout.train()
    missing = no_dropout(**batch, camera_valid=torch.tensor([False, False]))
    torch.testing.assert_close(dropped['bbox_heatmap'], missing['bbox_heatmap'])


def test_camera_dropout_is_per_sample():
    torch.manual_seed(0)
    model = MultiTaskNet(small_config(camera_dropout_p=0.5)).train()
    seen, handle = capture_point_features(model)
    batch = make_batch(batch_size=8, points_per_sample=60)
    with torch.no_grad():
        for _ in range(4):
            model(**batch)
    handle.remove()
    batch_of_kept = batch['points_batch']
    fractions = set()
    for features in seen:
        visible = features[:, -1] == 0
        per_sample = torch.zeros(8).index_add_(0, batch_of_kept, visible.float())
        fractions.update((per_sample > 0).tolist())
    assert fractions == {True, False}   # some samples kept their camera, others lost it


def test_missing_camera_at_inference():
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch()
    with torch.inference_mode():
        with_image = model(**batch)
        camera_off = model(**batch, camera_valid=torch.tensor([True, False]))
        no_image = model(batch['points'], batch['points_batch'], batch_size=2)
    # sample 0 unchanged; sample 1 detects from LiDAR alone, exactly as without any image
    torch.testing.assert_close(camera_off['bbox_heatmap'][0], with_image['bbox_heatmap'][0])
    assert not torch.allclose(camera_off['bbox_heatmap'][1], with_image['bbox_heatmap'][1])
    torch.testing.assert_close(camera_off['bbox_heatmap'][1], no_image['bbox_heatmap'][1])
    # semantics still come from the image when there is one; zeros when there is none
    torch.testing.assert_close(camera_off['sem_logits'], with_image['sem_logits'])
    assert no_image['sem_logits'].shape == (2, 13, 16, 32) and (no_image['sem_logits'] == 0).all()


def test_empty_point_cloud_still_gives_outputs():
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch()
    with torch.inference_mode():
        out = model(**dict(batch, points=torch.zeros(0, 4), points_batch=torch.zeros(0, dtype=torch.int64)))
    assert out['bbox_heatmap'].shape == (2, 4, 16, 16) and torch.isfinite(out['bbox_heatmap']).all()


def test_bad_inputs_are_reported():
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch()
    with pytest.raises(ValueError, match=r'points must be \(P, 4\)'):
        model(**dict(batch, points=batch['points'][:, :3]))
    with pytest.raises(ValueError, match='camera_matrix'):
        model(batch['points'], batch['points_batch'], batch['image'])
    with pytest.raises(ValueError, match=r'expected camera_matrix \(2, 3, 3\)'):
        model(**dict(batch, camera_matrix=batch['camera_matrix'][:1]))


def test_a_few_steps_overfit_one_sample():
    from training.engine.losses import MultiTaskLoss

    torch.manual_seed(0)
    cfg = small_config(camera_channels=(8, 16, 16, 16), camera_feature_channels=16, pillar_channels=16,
                       bev_channels=(16, 16, 32), bev_blocks=(1, 1, 1), neck_channels=32, head_channels=16)
    model = MultiTaskNet(cfg).train()
    batch = make_batch(batch_size=1, points_per_sample=400)
    # One car at output cell (8, 4): a 3x3 heatmap blob, its box vector, and a half-labelled image.
    heatmap = torch.zeros(1, 4, 16, 16)
    heatmap[0, 0, 7:10, 3:6] = 0.5
    heatmap[0, 0, 8, 4] = 1.0
    targets = {'heatmap': heatmap,
               'reg': torch.tensor([[[0.5, 0.5, -0.5, math.log(4.0), math.log(1.8), math.log(1.5),
                                      0.0, 1.0]]]),
               'ind': torch.tensor([[8 * 16 + 4]]), 'mask': torch.tensor([[True]]),
               'class_map': torch.full((1,) + IMAGE_HW, 255, dtype=torch.int64)}
    targets['class_map'][0, 32:] = 1
    targets['class_map'][0, :32, :64] = 2
    criterion = MultiTaskLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        total, terms = criterion(model(**batch), targets)
        total.backward()
        optimizer.step()
        losses.append(terms)
    first, last = losses[0], losses[-1]
    for key in ('total', 'heatmap', 'reg', 'sem'):
        assert last[key] < 0.5 * first[key], (key, float(first[key]), float(last[key]))


# ----------------------------------------------------------------------------- several cameras per sample
def yawed(vehicle_to_camera: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The camera turned by `yaw_deg` about the vehicle's z axis (left positive)."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    turn = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])   # camera pose in the vehicle
    return vehicle_to_camera @ np.linalg.inv(turn)


def test_the_view_nearest_the_image_centre_paints_a_point():
    xyz = torch.tensor([[10.0, 0.0, 0.0], [10.0, 5.0, 0.0], [10.0, -5.0, 0.0], [-10.0, 0.0, 0.0]])
    points_batch = torch.zeros(4, dtype=torch.long)
    views = np.stack([VEHICLE_TO_CAMERA, yawed(VEHICLE_TO_CAMERA, 20.0), yawed(VEHICLE_TO_CAMERA, -20.0)])
    view, grid_xy, seen = choose_views(xyz, points_batch, torch.zeros(3, dtype=torch.long),
                                       torch.tensor(CAMERA_MATRIX, dtype=torch.float32).expand(3, 3, 3),
                                       torch.tensor(views, dtype=torch.float32), torch.ones(3, dtype=torch.bool),
                                       IMAGE_HW)
    # ahead: the straight camera; 26.6 deg left / right: the camera turned 20 deg that way; behind: none
    assert view.tolist()[:3] == [0, 1, 2] and seen.tolist() == [True, True, True, False]
    assert (grid_xy[3] == -2).all()
    view_off, _, seen_off = choose_views(xyz, points_batch, torch.zeros(3, dtype=torch.long),
                                         torch.tensor(CAMERA_MATRIX, dtype=torch.float32).expand(3, 3, 3),
                                         torch.tensor(views, dtype=torch.float32),
                                         torch.tensor([True, False, True]), IMAGE_HW)
    assert view_off[1] != 1                                   # a view that is off never paints


def test_one_view_per_sample_gives_the_same_outputs_as_the_one_camera_path():
    torch.manual_seed(0)
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch(batch_size=2)
    with torch.inference_mode():
        plain = model(**batch)
        views = model(**batch, view_sample=torch.arange(2))
    for key in plain:
        torch.testing.assert_close(views[key], plain[key])


def test_a_one_camera_model_runs_unchanged_with_several_views():
    """The same camera twice paints exactly as once (shared weights, ties to the first view); a
    second camera that sees other points changes the detection input only there."""
    torch.manual_seed(0)
    model = MultiTaskNet(small_config()).eval()
    batch = make_batch(batch_size=1, points_per_sample=400)
    seen, handle = capture_point_features(model)
    twice = dict(batch, image=batch['image'].repeat(2, 1, 1, 1), camera_matrix=batch['camera_matrix'].repeat(2, 1, 1),
                 vehicle_to_camera=batch['vehicle_to_camera'].repeat(2, 1, 1), view_sample=torch.zeros(2, dtype=torch.long))
    left = dict(twice, vehicle_to_camera=torch.tensor(np.stack([VEHICLE_TO_CAMERA, yawed(VEHICLE_TO_CAMERA, 60.0)]),
                                                       dtype=torch.float32))
    with torch.inference_mode():
        once_out, twice_out, left_out = model(**batch), model(**twice), model(**left)
    handle.remove()
    torch.testing.assert_close(twice_out['bbox_heatmap'], once_out['bbox_heatmap'])
    assert twice_out['sem_logits'].shape[0] == 2
    torch.testing.assert_close(twice_out['sem_logits'][1], once_out['sem_logits'][0])
    once_flag, left_flag = seen[0][:, -1], seen[2][:, -1]
    assert (left_flag <= once_flag).all() and (left_flag < once_flag).sum() > 20    # more points see a camera
    assert not torch.equal(left_out['bbox_heatmap'], once_out['bbox_heatmap'])


def test_views_need_one_sample_index_each():
    model = MultiTaskNet(small_config()).eval()
    with pytest.raises(ValueError, match='view_sample must be'):
        model(**make_batch(batch_size=2), view_sample=torch.zeros(3, dtype=torch.long))
