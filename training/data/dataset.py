"""The training Dataset over NPZ chunk files, and the collate function for its samples.

A sample is one frame at the model input size with its BEV targets (see `prepare_sample`): its
LiDAR points and one or more camera views (a surround rig), stacked per view.
Chunks are opened lazily in each DataLoader worker and kept in a small LRU cache, so a worker
only maps the chunks it reads from; the dataset object itself stays cheap to fork or pickle.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.model_input import model_input
from mtl_perception_ros.core.labels import IGNORE_INDEX
from training.data.augment import AugmentConfig, augment_frame
from training.data.chunks import ChunkReader
from training.data.frame import CameraView, Frame
from training.data.targets import MAX_OBJECTS, MIN_RADIUS, REG_RADIUS, build_targets

# The process that imported this module: a forked DataLoader worker has another pid.
_IMPORTED_IN_PID = os.getpid()

# Keys of a sample that are per-frame lists in a batch; VIEW_KEYS are per view (V, ...) and are
# concatenated over the batch with `view_sample`; everything else is stacked.
LIST_KEYS = ('gt_boxes', 'gt_classes', 'name', 'camera_names')
VIEW_KEYS = ('image', 'camera_matrix', 'vehicle_to_camera', 'camera_valid', 'class_map')


@dataclass(frozen=True)
class DatasetConfig:
    """What a sample looks like: BEV grid, model input size (rows, cols), augmentation."""

    grid: BevGrid = field(default_factory=BevGrid)
    input_hw: tuple[int, int] = (320, 512)
    num_box_classes: int = 4
    max_objects: int = MAX_OBJECTS
    augment: bool = False
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    chunk_cache_size: int = 4
    frame_cache_mb: float = 0.0      # > 0: resized images shared by the workers (training.data.frame_cache)
    heatmap_min_radius: int = MIN_RADIUS   # smallest Gaussian radius of a heatmap target, output cells
    reg_radius: int = REG_RADIUS     # box regression also at cells up to this far from the centre cell
    cameras: tuple[str, ...] | None = None  # the cameras a sample uses, by name (None: every view of the frame)
    views_per_sample: int = 0        # training (augment): a random subset of this many views per sample (0: all)

    @classmethod
    def from_dict(cls, values: dict) -> 'DatasetConfig':
        """From a plain dict (e.g. a YAML training config): `grid` and `augment_config` as dicts."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f'DatasetConfig: unknown keys {sorted(unknown)}, '
                             f'expected some of {sorted(cls.__dataclass_fields__)}')
        values = dict(values)
        if isinstance(values.get('grid'), dict):
            values['grid'] = BevGrid.from_dict(values['grid'])
        if isinstance(values.get('augment_config'), dict):
            augment = dict(values['augment_config'])
            unknown = set(augment) - set(AugmentConfig.__dataclass_fields__)
            if unknown:
                raise ValueError(f'DatasetConfig.augment_config: unknown keys {sorted(unknown)}')
            if 'scale_range' in augment:
                augment['scale_range'] = tuple(float(v) for v in augment['scale_range'])
            values['augment_config'] = AugmentConfig(**augment)
        if 'input_hw' in values:
            values['input_hw'] = tuple(int(v) for v in values['input_hw'])
        if values.get('cameras') is not None:
            values['cameras'] = tuple(str(v) for v in values['cameras'])
        return cls(**values)


def find_chunks(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """Chunk files from a folder (its `*.npz`, sorted), a file, or a list of either."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(source.glob('*.npz'))
            if not found:
                raise FileNotFoundError(f'{source}: no chunk files (*.npz) in this folder')
            paths.extend(found)
        elif source.is_file():
            paths.append(source)
        else:
            raise FileNotFoundError(f'{source}: no such chunk file or folder')
    return paths


def resize_view(view: CameraView, input_hw: tuple[int, int]) -> CameraView:
    """Image (as the node's inference: mtl_perception_ros.core.model_input) and class map
    (nearest) resized to `input_hw`, K scaled to match.

    A missing class map becomes all IGNORE_INDEX, so every view has one.
    """
    height, width = input_hw
    class_map = view.class_map
    if view.image.shape[:2] == tuple(input_hw) and class_map is not None and class_map.shape == tuple(input_hw):
        return view   # already at the model input size (e.g. from the frame cache)
    if class_map is None:
        class_map = np.full(input_hw, IGNORE_INDEX, dtype=np.uint8)
    elif class_map.shape[:2] != tuple(input_hw):
        class_map = cv2.resize(class_map, (width, height), interpolation=cv2.INTER_NEAREST)
    image, camera_matrix = model_input(view.image, view.camera_matrix, input_hw)
    return dataclasses.replace(view, image=image, class_map=class_map, camera_matrix=camera_matrix)


def resize_frame(frame: Frame, input_hw: tuple[int, int]) -> Frame:
    """`resize_view` of every camera of the frame."""
    return frame.with_views([resize_view(view, input_hw) for view in frame.views])


def select_views(frame: Frame, cameras: Sequence[str] | None, count: int = 0,
                 rng: np.random.Generator | None = None) -> tuple[Frame, bool]:
    """The frame with only the views of `cameras` (None: all), then a random `count` of them
    (count 0 or no rng: all). Returns (frame, has_camera): when no view is left, the frame keeps
    its first view without its class map and has_camera is False (a LiDAR-only sample)."""
    views = frame.views
    chosen = views if cameras is None else [view for view in views if view.name in cameras]
    if count and rng is not None and len(chosen) > count:
        picked = np.sort(rng.choice(len(chosen), size=count, replace=False))
        chosen = [chosen[index] for index in picked]
    if not chosen:
        return frame.with_views([dataclasses.replace(views[0], class_map=None)]), False
    return (frame if chosen == views else frame.with_views(chosen)), True


def prepare_sample(frame: Frame, config: DatasetConfig, rng: np.random.Generator | None = None) -> dict:
    """One training sample (torch tensors) from a Frame: choose views, resize, augment, crop to grid, targets.

    Keys, V = the sample's camera views: points (N, 4) float32 inside the grid; image (V, 3, H, W)
    uint8; camera_matrix (V, 3, 3) and vehicle_to_camera (V, 4, 4) float32; camera_valid (V,) bool;
    class_map (V, H, W) int64 (255 ignore); camera_names: list of V names; heatmap (C, h, w)
    float32, reg (S, 8) float32, ind (S,) int64, mask (S,) bool, cls (S,) int64, reg_weight (S,)
    float32 (training.data.targets: S regression slots); gt_boxes (G, 7) float32 and gt_classes (G,) int64: the boxes whose
    centre lies in the grid; name: str. Augments when config.augment (needs `rng`), which also
    picks config.views_per_sample random views.
    """
    if config.augment and rng is None:
        raise ValueError('prepare_sample: config.augment needs a numpy Generator `rng`')
    frame, has_camera = select_views(frame, config.cameras, config.views_per_sample if config.augment else 0, rng)
    frame = resize_frame(frame, config.input_hw)
    if config.augment:
        frame = augment_frame(frame, rng, config.augment_config)
    grid = config.grid
    points = np.asarray(frame.points, dtype=np.float32)
    points = points[grid.in_range(points)]
    boxes = np.asarray(frame.boxes, dtype=np.float32).reshape(-1, 7)
    box_classes = np.asarray(frame.box_classes, dtype=np.int64).reshape(-1)
    targets = build_targets(boxes, box_classes, grid, config.num_box_classes, config.max_objects,
                            min_radius=config.heatmap_min_radius, reg_radius=config.reg_radius)
    in_grid = ((boxes[:, 0] >= grid.x_min_m) & (boxes[:, 0] < grid.x_max_m)
               & (boxes[:, 1] >= grid.y_min_m) & (boxes[:, 1] < grid.y_max_m))
    views = frame.views
    return {
        'points': torch.from_numpy(np.ascontiguousarray(points)),
        'image': torch.from_numpy(np.stack([view.image for view in views])).permute(0, 3, 1, 2).contiguous(),
        'camera_matrix': torch.from_numpy(np.stack([view.camera_matrix for view in views]).astype(np.float32)),
        'vehicle_to_camera': torch.from_numpy(np.stack([view.vehicle_to_camera for view in views])
                                              .astype(np.float32)),
        'camera_valid': torch.full((len(views),), has_camera, dtype=torch.bool),
        'class_map': torch.from_numpy(np.stack([view.class_map for view in views]).astype(np.int64)),
        'camera_names': [view.name for view in views],
        'heatmap': torch.from_numpy(targets.heatmap),
        'reg': torch.from_numpy(targets.reg),
        'ind': torch.from_numpy(targets.ind),
        'mask': torch.from_numpy(targets.mask),
        'cls': torch.from_numpy(targets.cls),
        'reg_weight': torch.from_numpy(targets.weight),
        'gt_boxes': torch.from_numpy(np.ascontiguousarray(boxes[in_grid])),
        'gt_classes': torch.from_numpy(box_classes[in_grid]),
        'name': frame.name,
    }


class ChunkDataset(Dataset):
    """Frames of one or more chunk files as training samples (`prepare_sample`).

    `sources`: a chunk folder, a chunk file, or a list of either. Augmentation randomness is
    drawn from torch's generator (per worker seeded by the DataLoader), so `torch.manual_seed`
    makes a run repeatable and each epoch differs.
    """

    def __init__(self, sources, config: DatasetConfig = DatasetConfig()):
        self.config = config
        self.paths = find_chunks(sources)
        self.frame_names: list[str] = []
        self._starts = [0]
        first_views = []   # per frame: the frame-cache slot of its first view (one slot per view)
        views = 0
        for path in self.paths:
            reader = ChunkReader(path)   # only to count and name the frames; closed again
            self.frame_names.extend(reader.frame_names)
            self._starts.append(self._starts[-1] + len(reader))
            offsets = reader.array('view_offsets')
            first_views.extend((views + offsets[:-1]).tolist())
            views += int(offsets[-1])
        self._first_view = np.asarray(first_views + [views], dtype=np.int64)
        self._readers: OrderedDict[int, ChunkReader] = OrderedDict()
        self.frame_cache = None
        if config.frame_cache_mb > 0 and len(self):
            from training.data.frame_cache import FrameCache
            self.frame_cache = FrameCache(views, config.input_hw, config.frame_cache_mb)

    def __len__(self) -> int:
        return self._starts[-1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_readers'] = OrderedDict()   # open chunks stay in the process that opened them
        return state

    def locate(self, index: int) -> tuple[int, int]:
        """(chunk number, frame number within the chunk) of dataset `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f'ChunkDataset: index {index} out of range 0..{len(self) - 1}')
        chunk = bisect.bisect_right(self._starts, index) - 1
        return chunk, index - self._starts[chunk]

    def index_of(self, name: str) -> int:
        """Dataset index of the frame called `name` (e.g. '20180807_145028/000003780')."""
        try:
            return self.frame_names.index(name)
        except ValueError:
            raise KeyError(f'ChunkDataset: no frame named {name!r} in {len(self.paths)} chunk(s)') from None

    def reader(self, chunk: int) -> ChunkReader:
        """The open reader of chunk number `chunk` (opened on demand, least recently used closed)."""
        reader = self._readers.pop(chunk, None)
        if reader is None:
            reader = ChunkReader(self.paths[chunk])
        self._readers[chunk] = reader
        while len(self._readers) > max(1, self.config.chunk_cache_size):
            self._readers.popitem(last=False)
        return reader

    def frame(self, index: int) -> Frame:
        """The stored Frame of dataset `index`, unchanged."""
        chunk, local = self.locate(index)
        return self.reader(chunk).frame(local)

    def resized_frame(self, index: int) -> Frame:
        """`resize_frame` of frame `index`, its views from the frame cache when it holds them."""
        chunk, local = self.locate(index)
        reader = self.reader(chunk)
        slots = range(int(self._first_view[index]), int(self._first_view[index + 1]))
        cache = self.frame_cache
        cached = [cache.get(slot) for slot in slots] if cache is not None else [None]
        if all(entry is not None for entry in cached):
            frame = reader.frame(local, decode_images=False)
            return frame.with_views([dataclasses.replace(view, image=image, class_map=class_map,
                                                         camera_matrix=camera_matrix)
                                     for view, (image, class_map, camera_matrix) in zip(frame.views, cached)])
        frame = resize_frame(reader.frame(local), self.config.input_hw)
        if cache is not None:
            for slot, view in zip(slots, frame.views):
                cache.put(slot, view.image, view.class_map, view.camera_matrix)
        return frame

    def __getitem__(self, index: int) -> dict:
        rng = None
        if self.config.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ()).item()))
        return prepare_sample(self.resized_frame(index), self.config, rng)


def collate_samples(samples: Sequence[dict]) -> dict:
    """Batch samples: points concatenated (P, 4) with points_batch (P,) int64 (sample index); the
    per-view keys (VIEW_KEYS) concatenated over all views (V, ...) with view_sample (V,) int64
    (sample of each view) and first_view (B,) int64 (row of each sample's first view); gt_boxes,
    gt_classes, name and camera_names as lists; every other key stacked on a new first axis."""
    if not samples:
        raise ValueError('collate_samples: empty batch')
    batch = {'points': torch.cat([s['points'] for s in samples]),
             'points_batch': torch.cat([torch.full((len(s['points']),), i, dtype=torch.int64)
                                        for i, s in enumerate(samples)])}
    views = torch.tensor([len(s['image']) for s in samples], dtype=torch.int64)
    batch['view_sample'] = torch.repeat_interleave(torch.arange(len(samples)), views)
    batch['first_view'] = torch.cumsum(views, 0) - views
    for key in samples[0]:
        if key == 'points':
            continue
        values = [s[key] for s in samples]
        if key in LIST_KEYS:
            batch[key] = values
        else:
            batch[key] = torch.cat(values) if key in VIEW_KEYS else torch.stack(values)
    return batch


def model_arguments(batch: dict) -> dict:
    """The MultiTaskNet.forward keyword arguments of a collated batch (view_sample only when some
    sample has several views: one view per sample takes the model's direct path)."""
    one_view_each = len(batch['view_sample']) == len(batch['first_view'])
    return {'points': batch['points'], 'points_batch': batch['points_batch'], 'image': batch['image'],
            'camera_matrix': batch['camera_matrix'], 'vehicle_to_camera': batch['vehicle_to_camera'],
            'camera_valid': batch['camera_valid'], 'batch_size': len(batch['first_view']),
            'view_sample': None if one_view_each else batch['view_sample']}


def init_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: one OpenCV thread per worker (workers already run in parallel).

    Only in a fresh (spawned) worker: in a forked one, cv2.setNumThreads can hang on the
    parent's thread pool (seen: stuck in pthread_cond_destroy). A parent that forks workers
    should call cv2.setNumThreads(0) itself first (training.engine.data_loading does).
    """
    if os.getpid() == _IMPORTED_IN_PID:
        cv2.setNumThreads(1)
