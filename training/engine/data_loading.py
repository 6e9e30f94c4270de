"""From a chunk folder to the batches the trainer and the evaluation tools iterate over.

- `read_chunk_folder` / `read_split`: the chunk files per split, the label sets and the train
  split's pixel histogram, from the folder's manifest (training.data.manifest) when it has one.
- `make_dataset`: a ChunkDataset whose samples fit a model (grid, input size, class count).
- `make_train_loader` (shuffled, reproducible per (seed, epoch), split over DDP ranks) and
  `make_eval_loader` (in order, each frame on exactly one rank), with `to_device` for their batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from mtl_perception_ros.core.labels import LabelSet
from training.data.dataset import ChunkDataset, DatasetConfig, collate_samples, init_worker
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
from training.data.manifest import MANIFEST_NAME, load_manifest
from training.data.targets import MIN_RADIUS, REG_RADIUS
from training.engine.config import ConfigError


@dataclass
class ChunkFolder:
    """What the trainer needs from a chunk folder (training.data.convert's layout and manifest)."""

    path: Path
    files: dict                      # split -> [chunk paths]
    semantic_labels: LabelSet
    detection_labels: LabelSet
    train_pixel_counts: np.ndarray | None   # (K,) labelled pixels per class in the train split
    complete: bool


def read_split(chunk_dir, split: str) -> 'ChunkFolder':
    """`read_chunk_folder` for one split; ValueError when that split has no chunks."""
    folder = read_chunk_folder(chunk_dir, splits=(split,))
    if not folder.files[split]:
        raise ValueError(f'{chunk_dir}: no chunks of split {split!r}')
    return folder


def read_chunk_folder(chunk_dir, splits=('train', 'val')) -> ChunkFolder:
    """Chunk files per split and label sets, from CHUNK_DIR/manifest.json when there is one.

    Without a manifest, files are found as CHUNK_DIR/<split>_*.npz and the label sets are the
    defaults in config/a2d2/.
    """
    path = Path(chunk_dir)
    if not path.is_dir():
        raise FileNotFoundError(f'{path}: no such chunk folder (write one with `python -m training.data.convert '
                                '--root A2D2_ROOT --out CHUNK_DIR`, or set data.chunks)')
    manifest = load_manifest(path)
    files: dict = {}
    if manifest is not None:
        try:
            for split in splits:
                files[split] = [path / e['file'] for e in manifest['chunks'] if e['split'] == split]
            semantic = LabelSet.from_dict(manifest['semantic_classes'])
            detection = LabelSet.from_dict(manifest['box_classes'])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f'{path / MANIFEST_NAME}: unusable manifest ({type(error).__name__}: {error})') from None
        counts = manifest.get('splits', {}).get('train', {}).get('class_pixel_counts')
        pixel_counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        complete = bool(manifest.get('complete', False))
    else:
        for split in splits:
            files[split] = sorted(path.glob(f'{split}_*.npz'))
        semantic = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
        detection = LabelSet.from_yaml(DEFAULT_BOX_CLASSES)
        pixel_counts, complete = None, True
    for split, paths in files.items():
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f'{path}: chunk files of split {split!r} listed in the manifest are '
                                    f'missing: {missing[:3]}')
    return ChunkFolder(path, files, semantic, detection, pixel_counts, complete)


def make_dataset(paths, model_config, detection_labels: LabelSet, max_objects: int = 128,
                 augment: bool = False, augment_config: dict | None = None,
                 chunk_cache_size: int = 4, frame_cache_mb: float = 0.0,
                 heatmap_min_radius: int = MIN_RADIUS, reg_radius: int = REG_RADIUS, cameras=None,
                 views_per_sample: int = 0) -> ChunkDataset:
    """A ChunkDataset whose samples fit the model: its BEV grid, input size and class count."""
    from training.data.augment import AugmentConfig
    if not paths:
        raise FileNotFoundError('make_dataset: no chunk files for this split')
    values = dict(augment_config or {})
    if 'scale_range' in values:
        values['scale_range'] = tuple(values['scale_range'])
    try:
        augment_values = AugmentConfig(**values)
    except TypeError as error:
        raise ConfigError(f'data.augment_config: {error} '
                          '(fields: see training/data/augment.py AugmentConfig)') from None
    config = DatasetConfig(grid=model_config.bev_grid, input_hw=tuple(model_config.image_hw),
                           num_box_classes=len(detection_labels), max_objects=int(max_objects),
                           augment=bool(augment), augment_config=augment_values,
                           chunk_cache_size=int(chunk_cache_size), frame_cache_mb=float(frame_cache_mb or 0),
                           heatmap_min_radius=int(heatmap_min_radius), reg_radius=int(reg_radius),
                           cameras=None if cameras is None else tuple(str(c) for c in cameras),
                           views_per_sample=int(views_per_sample or 0))
    return ChunkDataset([Path(p) for p in paths], config)


class ShardSampler(Sampler):
    """Indices rank, rank + world, rank + 2 world, ...: every frame exactly once over all ranks
    (no padding, unlike DistributedSampler), for evaluation."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_train_loader(dataset, batch_size: int, num_workers: int, seed: int, rank: int = 0,
                      world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """Shuffled loader whose order depends only on (seed, epoch): call sampler.set_epoch(epoch).

    Workers are not persistent, so each epoch's workers are seeded from the main process's torch
    RNG: a resumed run (RNG restored) repeats the augmentations of an uninterrupted one.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    prepare_for_loader_workers(num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_samples, worker_init_fn=init_worker, pin_memory=pin_memory)


def make_eval_loader(dataset, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1,
                     pin_memory: bool = False) -> DataLoader:
    """In-order loader over this rank's shard of the frames (all of them when world_size = 1)."""
    prepare_for_loader_workers(num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                      num_workers=num_workers, collate_fn=collate_samples, worker_init_fn=init_worker,
                      pin_memory=pin_memory)


def prepare_for_loader_workers(num_workers: int) -> None:
    """Switch OpenCV's thread pool off in this process when DataLoader workers will be forked.

    A worker forked after the parent used OpenCV's pool (debug pictures, a sample read in the
    parent) deadlocks on its first cv2 call: the pool's threads do not exist in the child.
    """
    if num_workers > 0:
        import cv2
        cv2.setNumThreads(0)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a collated batch moved to `device` (lists such as gt_boxes stay on the CPU)."""
    non_blocking = device.type == 'cuda'
    return {key: value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}
