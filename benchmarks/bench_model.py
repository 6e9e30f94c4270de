"""Forward-pass timing of MultiTaskNet on a synthetic frame (prints figures; not a test).

    .venv/bin/python benchmarks/bench_model.py                      # default config, CPU
    .venv/bin/python benchmarks/bench_model.py --points 8000 --iters 50
    .venv/bin/python benchmarks/bench_model.py --preset gpu_large --device cuda --batch 8
    .venv/bin/python benchmarks/bench_model.py --grid 512 --input 480x768 --device cuda

Reports parameters per part, the median and p95 of eval-mode forward time under
torch.inference_mode (CUDA: fp32, fp16 and bf16 autocast, with synchronisation), and with
--train (always on CUDA) a training-step throughput (forward + simple loss + backward + AdamW).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP  # noqa: E402
from mtl_perception_ros.core.latency import latency_percentiles  # noqa: E402
from mtl_perception_ros.core.model import ModelConfig, MultiTaskNet, parameter_summary  # noqa: E402


def synthetic_batch(cfg: ModelConfig, batch: int, points_per_sample: int, device: torch.device,
                    seed: int = 0) -> dict:
    """Points spread over the BEV grid (mostly ground-like heights) and a forward camera."""
    rng = np.random.default_rng(seed)
    grid = cfg.bev_grid
    height, width = cfg.image_hw
    points, batch_index = [], []
    for b in range(batch):
        xyz = np.stack([rng.uniform(grid.x_min_m, grid.x_max_m, points_per_sample),
                        rng.uniform(grid.y_min_m, grid.y_max_m, points_per_sample),
                        rng.uniform(-2.0, 1.0, points_per_sample)], axis=1)
        reflectance = rng.uniform(0.0, 1.0, (points_per_sample, 1))
        points.append(np.concatenate([xyz, reflectance], axis=1))
        batch_index.append(np.full(points_per_sample, b))
    focal = 0.88 * width  # ~60 degree horizontal field of view
    camera_matrix = np.array([[focal, 0, width / 2 - 0.5], [0, focal, height / 2 - 0.5], [0, 0, 1]])
    camera_in_vehicle = np.eye(4)
    camera_in_vehicle[:3, 3] = (1.7, 0.0, 1.4)
    vehicle_to_camera = OPTICAL_FROM_FORWARD_LEFT_UP @ np.linalg.inv(camera_in_vehicle)
    image = rng.integers(0, 256, (batch, 3, height, width), dtype=np.uint8)
    return {
        'points': torch.as_tensor(np.concatenate(points), dtype=torch.float32, device=device),
        'points_batch': torch.as_tensor(np.concatenate(batch_index), dtype=torch.int64, device=device),
        'image': torch.as_tensor(image, device=device),
        'camera_matrix': torch.as_tensor(np.repeat(camera_matrix[None], batch, 0), dtype=torch.float32,
                                         device=device),
        'vehicle_to_camera': torch.as_tensor(np.repeat(vehicle_to_camera[None], batch, 0),
                                             dtype=torch.float32, device=device),
    }


def time_calls(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Wall time of `fn()` in ms, `iters` times after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def describe(times_ms: list[float]) -> str:
    p50, p95 = latency_percentiles(times_ms)
    return f'median {p50:7.2f} ms   p95 {p95:7.2f} ms   min {min(times_ms):7.2f} ms'


def train_step_throughput(model: MultiTaskNet, batch: dict, iters: int, warmup: int,
                          device: torch.device, autocast_dtype: torch.dtype | None) -> float:
    """Samples per second of forward + a stand-in loss + backward + AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**batch)
            loss = sum(v.float().square().mean() for v in out.values())
        loss.backward()
        optimizer.step()

    times = time_calls(step, iters, warmup, device)
    model.eval()
    return batch['image'].shape[0] / (statistics.median(times) / 1e3)


def parse_hw(text: str) -> tuple[int, int]:
    height, width = text.lower().split('x')
    return int(height), int(width)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=('default', 'gpu_large'), default='default')
    parser.add_argument('--grid', type=int, default=None,
                        help='BEV input cells per side over the same metric extent (default: preset)')
    parser.add_argument('--input', type=parse_hw, default=None, help='camera input HxW (default: preset)')
    parser.add_argument('--points', type=int, default=8000, help='points per sample')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--channels-last', action='store_true', help='model in channels_last memory format')
    parser.add_argument('--train', action='store_true', help='also time training steps (always on CUDA)')
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = ModelConfig.gpu_large() if args.preset == 'gpu_large' else ModelConfig()
    if args.grid:
        grid = cfg.bev_grid
        cfg = cfg.with_grid(replace(grid, cell_m=(grid.x_max_m - grid.x_min_m) / args.grid))
    if args.input:
        cfg = replace(cfg, image_hw=args.input)
    model = MultiTaskNet(cfg).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = synthetic_batch(cfg, args.batch, args.points, device)

    if device.type == 'cuda':
        where = torch.cuda.get_device_name(device)
    else:
        where = f'{torch.get_num_threads()} threads'
    print(f'device {device} ({where}), torch {torch.__version__}')
    print(f'preset {args.preset}: BEV grid {cfg.bev_grid.shape} cells of {cfg.bev_grid.cell_m} m -> output '
          f'{cfg.bev_grid.output_shape}; image {cfg.image_hw}; batch {args.batch} x {args.points} points')
    print(f'channels: camera {cfg.camera_channels} blocks {cfg.camera_blocks}, camera features '
          f'{cfg.camera_feature_channels}, pillars {cfg.pillar_channels}, BEV {cfg.bev_channels} blocks '
          f'{cfg.bev_blocks}, neck {cfg.neck_channels}, heads {cfg.head_channels}')
    print('parameters: ' + ', '.join(f'{k} {v / 1e6:.3f}M' for k, v in parameter_summary(model).items()))

    def forward():
        with torch.inference_mode():
            return model(**batch)

    out = forward()
    print('outputs: ' + ', '.join(f'{k} {tuple(v.shape)}' for k, v in out.items()))
    print(f'forward fp32: {describe(time_calls(forward, args.iters, args.warmup, device))}')
    if device.type == 'cuda':
        for dtype in (torch.float16, torch.bfloat16):
            def forward_amp(dtype=dtype):
                with torch.inference_mode(), torch.autocast('cuda', dtype=dtype):
                    return model(**batch)
            print(f'forward {str(dtype).split(".")[-1]} autocast: '
                  f'{describe(time_calls(forward_amp, args.iters, args.warmup, device))}')
    if args.train or device.type == 'cuda':
        amp = torch.bfloat16 if device.type == 'cuda' else None
        rate = train_step_throughput(model, batch, max(5, args.iters // 2), 3, device, amp)
        print(f'train step ({"bf16 autocast" if amp else "fp32"}, batch {args.batch}): {rate:.1f} samples/s')


if __name__ == '__main__':
    main()
