"""Frames per second of the training loader (ChunkDataset + the trainer's DataLoader) over chunk files.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py --chunks CHUNK_DIR [--workers 2]

Prints: per-frame cost in one process (chunk read = PNG decode, sample = resize + augment +
targets), then loader throughput with the given workers, augmentation off and on, through
training.engine.data_loading.make_train_loader: the loader the trainer uses (forked workers
started anew each epoch, shuffled per (seed, epoch)).
`--make-synthetic N` first writes N full-size (1920x1208) synthetic frames into CHUNK_DIR with
the real A2D2 front-center calibration, for machines without converted data.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_perception_ros.core.boxes import points_in_boxes  # noqa: E402
from mtl_perception_ros.core.camera import project_points  # noqa: E402
from training.data.a2d2_calibration import front_center_camera, load_calibration  # noqa: E402
from training.data.chunks import write_chunk  # noqa: E402
from training.data.dataset import ChunkDataset, DatasetConfig, prepare_sample  # noqa: E402
from training.data.frame import Frame  # noqa: E402
from training.engine.data_loading import make_train_loader  # noqa: E402


def synthetic_frame(index: int, rng: np.random.Generator) -> Frame:
    """A full-size frame: ground and box points seen by the camera, a class map (road below the
    horizon, sky above, box classes inside projected boxes) and a noisy image of it."""
    camera = front_center_camera(load_calibration())
    height, width = camera.image_size_hw
    count = 10
    boxes = np.stack([rng.uniform(5, 60, count), rng.uniform(-15, 15, count), np.full(count, -0.1),
                      rng.uniform(3.5, 5, count), rng.uniform(1.6, 2.0, count), rng.uniform(1.4, 1.8, count),
                      rng.uniform(-np.pi, np.pi, count)], axis=1).astype(np.float32)
    classes = rng.integers(0, 4, count)
    ground = np.stack([rng.uniform(2, 70, 20000), rng.uniform(-35, 35, 20000), np.full(20000, -0.9)], axis=1)
    on_boxes = (boxes[rng.integers(0, count, 8000), :3]
                + rng.uniform(-0.5, 0.5, (8000, 3)) * np.array([4.0, 1.8, 1.5]))
    xyz = np.concatenate([ground, on_boxes])
    _, _, seen = project_points(xyz, camera.vehicle_to_camera, camera.camera_matrix, (height, width))
    xyz = xyz[seen]
    points = np.concatenate([xyz, rng.uniform(0, 1, (len(xyz), 1))], axis=1).astype(np.float32)

    class_map = np.full((height, width), 5, np.uint8)   # sky
    class_map[height // 2:] = 0                         # road
    uv, _, valid = project_points(points, camera.vehicle_to_camera, camera.camera_matrix, (height, width))
    inside = points_in_boxes(points, boxes, margin_m=0.1).any(axis=1) & valid
    cols, rows = uv[inside].astype(int).T
    class_map[rows, cols] = 10
    palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    image = palette[class_map].astype(np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    return Frame(name=f'synthetic/{index:09d}', scene='synthetic', points=points,
                 image=np.clip(image, 0, 255).astype(np.uint8), class_map=class_map, boxes=boxes,
                 box_classes=classes, track_ids=np.full(count, -1), camera_matrix=camera.camera_matrix,
                 vehicle_to_camera=camera.vehicle_to_camera, camera_timestamp_us=index * 100000,
                 lidar_timestamp_us=index * 100000)


def make_synthetic_chunks(folder: Path, frames: int, per_chunk: int = 8) -> None:
    rng = np.random.default_rng(0)
    for start in range(0, frames, per_chunk):
        stop = min(frames, start + per_chunk)
        write_chunk(folder / f'synthetic_{start // per_chunk:04d}.npz',
                    (synthetic_frame(i, rng) for i in range(start, stop)))
    print(f'wrote {frames} synthetic frames into {folder}')


def time_single_process(dataset: ChunkDataset, config: DatasetConfig, frames: int) -> None:
    read_s = prepare_s = 0.0
    rng = np.random.default_rng(0)
    for index in range(min(frames, len(dataset))):
        start = time.perf_counter()
        frame = dataset.frame(index)
        middle = time.perf_counter()
        prepare_sample(frame, config, rng)
        prepare_s += time.perf_counter() - middle
        read_s += middle - start
    n = min(frames, len(dataset))
    print(f'one process, augment={config.augment}: chunk read {1000 * read_s / n:.1f} ms/frame, '
          f'sample {1000 * prepare_s / n:.1f} ms/frame, total {n / (read_s + prepare_s):.1f} frames/s')


def time_loader(dataset: ChunkDataset, workers: int, batch_size: int, epochs: int) -> None:
    loader = make_train_loader(dataset, batch_size=batch_size, num_workers=workers, seed=0)
    start = time.perf_counter()
    first_batch_s = None
    frames = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            frames += len(batch['name'])
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
                steady_start, steady_frames = time.perf_counter(), frames
    total_s = time.perf_counter() - start
    steady_s = time.perf_counter() - steady_start
    steady = (frames - steady_frames) / steady_s if steady_s > 0 and frames > steady_frames else float('nan')
    print(f'DataLoader workers={workers} batch={batch_size} augment={dataset.config.augment}: '
          f'{frames} frames in {total_s:.2f} s = {frames / total_s:.1f} frames/s overall, '
          f'{steady:.1f} frames/s after the first batch ({first_batch_s:.2f} s to first batch)')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--chunks', type=Path, default=None,
                        help='chunk folder or .npz file (default: 32 synthetic frames in a temporary folder)')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--epochs', type=int, default=1, help='passes over the chunks per measurement')
    parser.add_argument('--input-hw', type=int, nargs=2, default=(320, 512), metavar=('ROWS', 'COLS'))
    parser.add_argument('--make-synthetic', type=int, default=0, metavar='N',
                        help='first write N synthetic full-size frames into --chunks')
    args = parser.parse_args(argv)
    if args.chunks is None:
        import tempfile
        args.chunks = Path(tempfile.mkdtemp(prefix='bench_loader_'))
        args.make_synthetic = args.make_synthetic or 32
    if args.make_synthetic:
        make_synthetic_chunks(args.chunks, args.make_synthetic)
    torch.manual_seed(0)
    for augment in (False, True):
        config = DatasetConfig(input_hw=tuple(args.input_hw), augment=augment)
        dataset = ChunkDataset(args.chunks, config)
        if not augment:
            print(f'{len(dataset)} frames in {len(dataset.paths)} chunk(s); torch threads '
                  f'{torch.get_num_threads()}')
        time_single_process(dataset, config, frames=8)
        time_loader(dataset, args.workers, args.batch_size, args.epochs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
