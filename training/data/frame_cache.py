"""Camera images and class maps already decoded and resized to the model input, shared by the
DataLoader workers of a run.

Decoding a full-size A2D2 PNG (1920 x 1208) is most of the cost of a training sample (~50 ms of a
CPU core of ~80), yet the network only sees the image at its input size (320 x 512 by default).
`FrameCache` keeps each frame's resized image, class map and scaled camera matrix in file-backed
arrays (np.memmap, shared mappings): a frame is decoded once per run, by whichever worker process
meets it first, and the workers of every later epoch (they are not persistent) read it back at
memory speed. What is cached is exactly what `training.data.dataset.resize_frame` returns, so a
sample is the same with or without the cache; augmentation runs after it, on a copy.

The files live in a temporary folder that the creating process removes with the cache. A budget
in MB bounds them (frames past it are decoded every time), and the budget shrinks to the free
space of the folder's disk when that is smaller.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)
FILLED = 1   # state of a slot; the files start as zeros: nothing cached


def _remove(folder: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:     # never from a forked worker that inherited the object
        shutil.rmtree(folder, ignore_errors=True)


class FrameCache:
    """Resized (image, class map, camera matrix) for frames 0 .. slots - 1 of a dataset."""

    def __init__(self, count: int, input_hw: tuple[int, int], budget_mb: float, directory=None):
        height, width = (int(v) for v in input_hw)
        self.shape_hw = (height, width)
        self.frame_bytes = height * width * 4 + 9 * 8 + 1
        self.folder = tempfile.mkdtemp(prefix='mtl_frame_cache_', dir=directory)
        budget = budget_mb * 1e6
        free = shutil.disk_usage(self.folder).free * 0.8
        if free < min(budget, count * self.frame_bytes):
            LOG.warning('frame cache: only %.0f MB free in %s, caching fewer frames than the %.0f MB budget allows',
                        free / 1e6, self.folder, budget_mb)
            budget = free
        self.slots = int(max(0, min(count, budget // self.frame_bytes)))
        self._finalizer = weakref.finalize(self, _remove, self.folder, os.getpid())
        self._maps: dict | None = None
        if self.slots:
            self._open('w+')

    @property
    def megabytes(self) -> float:
        return self.slots * self.frame_bytes / 1e6

    def _open(self, mode: str) -> dict:
        height, width = self.shape_hw
        specs = {'image': (np.uint8, (self.slots, height, width, 3)),
                 'class_map': (np.uint8, (self.slots, height, width)),
                 'camera_matrix': (np.float64, (self.slots, 3, 3)),
                 'state': (np.uint8, (self.slots,))}
        self._maps = {name: np.memmap(Path(self.folder) / f'{name}.bin', dtype=dtype, mode=mode, shape=shape)
                      for name, (dtype, shape) in specs.items()}
        return self._maps

    def _arrays(self) -> dict:
        return self._maps if self._maps is not None else self._open('r+')

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_maps'] = None             # each process maps the files itself
        state['_finalizer'] = None        # and only the creating one removes them
        return state

    def get(self, index: int):
        """(image (H, W, 3), class map (H, W), camera matrix (3, 3)) copies, or None when not cached."""
        if not 0 <= index < self.slots:
            return None
        arrays = self._arrays()
        if arrays['state'][index] != FILLED:
            return None
        return (np.array(arrays['image'][index]), np.array(arrays['class_map'][index]),
                np.array(arrays['camera_matrix'][index]))

    def put(self, index: int, image: np.ndarray, class_map: np.ndarray, camera_matrix: np.ndarray) -> None:
        """Store a frame's resized arrays (ignored past the budget or for a size not the cache's)."""
        if not 0 <= index < self.slots or image.shape[:2] != self.shape_hw or class_map.shape != self.shape_hw:
            return
        arrays = self._arrays()
        arrays['image'][index] = image
        arrays['class_map'][index] = class_map
        arrays['camera_matrix'][index] = camera_matrix
        arrays['state'][index] = FILLED   # last: a reader sees a complete frame or none

    def close(self) -> None:
        """Remove the files now (also done when the cache is garbage-collected)."""
        self._maps = None
        if self._finalizer is not None:
            self._finalizer()
