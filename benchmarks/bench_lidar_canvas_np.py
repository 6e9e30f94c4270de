"""Cost of the camera-painted pillar canvas in NumPy (core.lidar_canvas_np, the torch-free ONNX
Runtime path) against MultiTaskNet.lidar_canvas in torch, for the default model (256 x 256 grid,
32 camera and 32 pillar channels, 320 x 512 input images): 8,000 and 120,000 points, LiDAR-only,
one camera and six cameras around the vehicle.

Run: .venv/bin/python benchmarks/bench_lidar_canvas_np.py [--repeats 10] [--threads N]
Prints medians over the repeats (milliseconds) and the largest difference between the two canvases.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, invert_rigid
from mtl_perception_ros.core.lidar_canvas_np import lidar_canvas_np
from mtl_perception_ros.core.model import CAMERA_STRIDE, ModelConfig, MultiTaskNet, folded_pillar_weights
from timing import median_ms


def rig(num_views: int, image_hw: tuple[int, int]):
    """(K (V, 3, 3), vehicle_to_camera (V, 4, 4)) of cameras on the roof, 360 / V degrees apart."""
    height, width = image_hw
    k = np.array([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]])
    transforms = []
    for yaw in np.radians(np.arange(num_views) * 360.0 / max(num_views, 1)):
        camera_to_vehicle = np.eye(4)
        camera_to_vehicle[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        camera_to_vehicle[:3, 3] = (1.0, 0.0, 1.6)
        transforms.append(OPTICAL_FROM_FORWARD_LEFT_UP @ invert_rigid(camera_to_vehicle))
    return np.stack([k] * num_views).astype(np.float32), np.stack(transforms).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: leave the default)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MultiTaskNet(ModelConfig()).eval()
    cfg = model.cfg
    weight, bias = folded_pillar_weights(model.pillar_encoder)
    rng = np.random.default_rng(0)
    feature_hw = tuple(s // CAMERA_STRIDE for s in cfg.image_hw)
    print(f'lidar_canvas, one frame, grid {cfg.bev_grid.shape}, torch {torch.get_num_threads()} thread(s) '
          f'(median ms)')
    print(f'{"points":>8}{"views":>7}{"numpy":>9}{"torch":>9}{"max |diff|":>12}')
    for count in (8_000, 120_000):
        points = np.column_stack([rng.uniform(-10, 70, count), rng.uniform(-35, 35, count),
                                  rng.uniform(-2.5, 2.0, count), rng.uniform(0, 1, count)]).astype(np.float32)
        points_t = torch.from_numpy(points)
        points_batch = torch.zeros(count, dtype=torch.long)
        for num_views in (0, 1, 6):
            if num_views:
                features = rng.normal(size=(num_views, cfg.camera_feature_channels) + feature_hw).astype(np.float32)
                k, transforms = rig(num_views, cfg.image_hw)
                numpy_args = (features, k, transforms, cfg.image_hw)
                torch_kwargs = dict(camera_features=torch.from_numpy(features),
                                    camera_on=torch.ones(num_views, dtype=torch.bool),
                                    camera_matrix=torch.from_numpy(k), vehicle_to_camera=torch.from_numpy(transforms),
                                    image_hw=cfg.image_hw, view_sample=torch.zeros(num_views, dtype=torch.long))
            else:
                numpy_args = ()
                torch_kwargs = dict(camera_features=None, camera_on=torch.ones(1, dtype=torch.bool),
                                    camera_matrix=None, vehicle_to_camera=None, image_hw=None)

            def run_numpy():
                return lidar_canvas_np(points, cfg.bev_grid, weight, bias, *numpy_args)

            def run_torch():
                with torch.inference_mode():
                    return model.lidar_canvas(points_t, points_batch, 1, **torch_kwargs)

            difference = float(np.abs(run_numpy() - run_torch().numpy()).max())
            row = (median_ms(run_numpy, args.repeats), median_ms(run_torch, args.repeats))
            print(f'{count:>8}{num_views:>7}{row[0]:>9.1f}{row[1]:>9.1f}{difference:>12.1e}')


if __name__ == '__main__':
    main()
