"""The bird's-eye-view (BEV) grid: one definition shared by targets, model, decoding and node.

Frame: the vehicle (LiDAR) frame, REP-103 axes (x forward, y left, z up), metres.
Cell (row, col) of the output grid covers x in [x_min + row*out_cell_m, ...) and
y in [y_min + col*out_cell_m, ...): rows run along +x, columns along +y, so an array indexed
[row, col] is the BEV seen from above with forward pointing down the rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BevGrid:
    """Metric extent and resolution of the BEV input grid and of the (strided) output grid."""

    x_min_m: float = 0.0
    x_max_m: float = 64.0
    y_min_m: float = -32.0
    y_max_m: float = 32.0
    z_min_m: float = -3.0
    z_max_m: float = 3.0
    cell_m: float = 0.25
    output_stride: int = 4

    def __post_init__(self):
        if self.x_max_m <= self.x_min_m or self.y_max_m <= self.y_min_m or self.z_max_m <= self.z_min_m:
            raise ValueError(f'BevGrid: empty extent {self}')
        if self.cell_m <= 0 or self.output_stride < 1:
            raise ValueError(f'BevGrid: cell_m must be > 0 and output_stride >= 1, got {self}')
        for span, name in ((self.x_max_m - self.x_min_m, 'x'), (self.y_max_m - self.y_min_m, 'y')):
            cells = span / (self.cell_m * self.output_stride)
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f'BevGrid: {name} extent {span} m is not a multiple of '
                                 f'cell_m * output_stride = {self.cell_m * self.output_stride} m')

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along x, cols along y) of the input (pillar) grid."""
        return (int(round((self.x_max_m - self.x_min_m) / self.cell_m)),
                int(round((self.y_max_m - self.y_min_m) / self.cell_m)))

    @property
    def out_cell_m(self) -> float:
        return self.cell_m * self.output_stride

    @property
    def output_shape(self) -> tuple[int, int]:
        """(H, W) of the heatmap / regression maps."""
        rows, cols = self.shape
        return rows // self.output_stride, cols // self.output_stride

    def in_range(self, xyz: np.ndarray) -> np.ndarray:
        """Boolean mask of points (..., >=3) inside the grid's x, y and z extent."""
        x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        return ((x >= self.x_min_m) & (x < self.x_max_m) & (y >= self.y_min_m) & (y < self.y_max_m)
                & (z >= self.z_min_m) & (z < self.z_max_m))

    def xy_to_cell(self, x, y, cell_m: float | None = None):
        """Continuous (row, col) coordinates of metric x, y on a grid with `cell_m` cells.

        Default: the output grid. Integer part = cell index, fraction = sub-cell offset.
        Works on numpy arrays and torch tensors alike.
        """
        cell = self.out_cell_m if cell_m is None else cell_m
        return (x - self.x_min_m) / cell, (y - self.y_min_m) / cell

    def cell_to_xy(self, row, col, cell_m: float | None = None):
        """Inverse of `xy_to_cell`: metric x, y of continuous (row, col) coordinates."""
        cell = self.out_cell_m if cell_m is None else cell_m
        return row * cell + self.x_min_m, col * cell + self.y_min_m

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> 'BevGrid':
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f'BevGrid: unknown keys {sorted(unknown)}')
        return cls(**known)
