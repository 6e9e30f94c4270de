"""Training throughput in frames/s (prints figures; not a test).

    .venv/bin/python benchmarks/bench_training.py                          # CPU, default model
    .venv/bin/python benchmarks/bench_training.py --chunks CHUNK_DIR --workers 2   # + data loading
    .venv/bin/python benchmarks/bench_training.py --device cuda --preset gpu_large --batch 8

1. Optimizer steps on ready batches (forward + MultiTaskLoss + backward + clip + AdamW), i.e.
   the trainer's own step (training.engine.train.TrainStep) without data loading: fp32, and on CUDA
   also bf16 and fp16 autocast (fp16 with a GradScaler).
2. With --chunks: the DataLoader alone (decode PNGs, resize, targets; --workers processes) and
   loader + step together, as training.engine.train runs them.
Batches for (1) are toy frames (training.data.toy_chunks) at the model's input size with
--points LiDAR points each, passed through the real sample preparation (targets included).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_perception_ros.core.labels import LabelSet  # noqa: E402
from training.data.dataset import DatasetConfig, collate_samples, prepare_sample  # noqa: E402
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES  # noqa: E402
from training.engine.losses import MultiTaskLoss  # noqa: E402
from training.data.toy_chunks import toy_frame  # noqa: E402
from training.engine.train import TrainStep, build_model_config, build_optimizer  # noqa: E402
from training.engine.data_loading import (make_dataset, make_train_loader, prepare_for_loader_workers,  # noqa: E402
                                          read_chunk_folder, to_device)
from mtl_perception_ros.core.model import MultiTaskNet  # noqa: E402


def toy_batches(model_cfg, detection: LabelSet, semantic: LabelSet, batch: int, count: int,
                points: int, seed: int = 0) -> list[dict]:
    grid = model_cfg.bev_grid
    extent = grid.x_max_m - grid.x_min_m
    config = DatasetConfig(grid=grid, input_hw=tuple(model_cfg.image_hw), num_box_classes=len(detection))
    rng = np.random.default_rng(seed)
    batches = []
    for b in range(count):
        frames = [toy_frame(rng, f'toy/{b:04d}{i}', 'toy', semantic, tuple(model_cfg.image_hw), extent,
                            ground_points=points) for i in range(batch)]
        batches.append(collate_samples([prepare_sample(f, config) for f in frames]))
    return batches


def time_steps(train_step, optimizer, batches, device, steps: int, amp_dtype=None, warmup: int = 3) -> list[float]:
    """Seconds per optimizer step (after `warmup` untimed ones)."""
    scaler = torch.amp.GradScaler('cuda', enabled=amp_dtype == torch.float16)
    parameters = [p for p in train_step.parameters() if p.requires_grad]
    times = []
    for i in range(warmup + steps):
        batch = to_device(batches[i % len(batches)], device)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            total, _, _ = train_step(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        scaler.step(optimizer)
        scaler.update()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float], batch: int) -> None:
    median = statistics.median(times)
    print(f'{label:<34} {batch / median:8.2f} frames/s   {1000 * median:8.1f} ms/step (median of {len(times)}, '
          f'batch {batch})')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='auto')
    parser.add_argument('--preset', default='default', choices=('default', 'gpu_large'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--points', type=int, default=20000, help='LiDAR points per toy frame')
    parser.add_argument('--chunks', default=None, help='chunk folder: also time the DataLoader')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device)
    semantic = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
    detection = LabelSet.from_yaml(DEFAULT_BOX_CLASSES)
    model_cfg = build_model_config({'preset': args.preset}, semantic, detection)
    torch.manual_seed(0)
    model = MultiTaskNet(model_cfg).to(device)
    train_step = TrainStep(model, MultiTaskLoss()).to(device).train()
    optimizer = build_optimizer([train_step], {'lr': 1e-3, 'weight_decay': 0.01, 'betas': (0.9, 0.999)})
    print(f'device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, preset {args.preset}: '
          f'image {model_cfg.image_hw}, BEV grid {model_cfg.bev_grid.shape} -> {model_cfg.bev_grid.output_shape}, '
          f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters')

    batches = toy_batches(model_cfg, detection, semantic, args.batch, 3, args.points)
    report('step, fp32', time_steps(train_step, optimizer, batches, device, args.steps), args.batch)
    if device.type == 'cuda':
        if torch.cuda.is_bf16_supported():
            report('step, bf16 autocast', time_steps(train_step, optimizer, batches, device, args.steps,
                                                     torch.bfloat16), args.batch)
        report('step, fp16 autocast + GradScaler', time_steps(train_step, optimizer, batches, device, args.steps,
                                                              torch.float16), args.batch)
        print(f'peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB')

    if args.chunks:
        prepare_for_loader_workers(args.workers)
        folder = read_chunk_folder(args.chunks)
        dataset = make_dataset(folder.files['train'], model_cfg, folder.detection_labels, augment=True)
        loader = make_train_loader(dataset, args.batch, args.workers, seed=0, pin_memory=device.type == 'cuda')
        limit = min(len(loader), args.steps + 3)
        start, frames = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            if i >= limit:
                break
            frames += len(batch['name'])
        elapsed = time.perf_counter() - start
        print(f'{"DataLoader alone":<34} {frames / elapsed:8.2f} frames/s   ({args.workers} workers, '
              f'{frames} frames incl. worker start-up)')
        start, frames = time.perf_counter(), 0
        scaler_free = [p for p in train_step.parameters() if p.requires_grad]
        for i, batch in enumerate(loader):
            if i >= limit:
                break
            batch = to_device(batch, device)
            total, _, _ = train_step(batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(scaler_free, 10.0)
            optimizer.step()
            frames += len(batch['name'])
        if device.type == 'cuda':
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        print(f'{"DataLoader + step, fp32":<34} {frames / elapsed:8.2f} frames/s   ({frames} frames)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
