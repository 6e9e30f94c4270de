"""CenterPoint detection targets on the BEV output grid.

Per class a heatmap with a Gaussian at each box centre (CenterPoint / CornerNet radius), and per
object the regression vector (mtl_perception_ros.core.box_coding) at its centre cell.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.box_coding import REG_DIM, encode_regression
from mtl_perception_ros.core.boxes import BOX_DIM

MIN_OVERLAP = 0.1
MIN_RADIUS = 2
MAX_OBJECTS = 128


@dataclass
class BevTargets:
    """Targets of one frame; (H, W) = grid.output_shape, M = max_objects.

    - heatmap (C, H, W) float32 in [0, 1], exactly 1 at each object's centre cell.
    - reg (M, 8) float32 regression vectors; ind (M,) int64 flat cell index row * W + col;
      mask (M,) bool: slot holds an object; cls (M,) int64 class of the slot (0 where empty).
    """

    heatmap: np.ndarray
    reg: np.ndarray
    ind: np.ndarray
    mask: np.ndarray
    cls: np.ndarray


def gaussian_radius(length_cells, width_cells, min_overlap: float = MIN_OVERLAP):
    """CenterPoint's `gaussian_radius` (CornerNet's three cases), in cells, element-wise.

    The smallest of the three roots for which a box shifted/shrunk/grown by the radius still
    overlaps the true box by `min_overlap` IoU. Kept as in CenterPoint (whose cases 1-3 divide
    by 2 rather than 2a), so radii match models trained with it.
    """
    h = np.asarray(length_cells, dtype=np.float64)
    w = np.asarray(width_cells, dtype=np.float64)
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def gaussian_patch(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) float32 Gaussian with peak 1 at the centre, sigma = (2r+1) / 6.

    Values below machine epsilon of the peak are zeroed, as in CenterPoint's gaussian2D.
    """
    sigma = (2 * radius + 1) / 6.0
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    patch = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    patch[patch < np.finfo(np.float64).eps * patch.max()] = 0
    return patch.astype(np.float32)


def draw_gaussian(heatmap: np.ndarray, row: int, col: int, radius: int) -> None:
    """Element-wise max of a Gaussian of `radius` centred at (row, col) into (H, W) `heatmap`."""
    height, width = heatmap.shape
    patch = gaussian_patch(radius)
    top, bottom = min(row, radius), min(height - row, radius + 1)
    left, right = min(col, radius), min(width - col, radius + 1)
    region = heatmap[row - top:row + bottom, col - left:col + right]
    np.maximum(region, patch[radius - top:radius + bottom, radius - left:radius + right], out=region)


def build_targets(boxes: np.ndarray, classes: np.ndarray, grid: BevGrid, num_classes: int,
                  max_objects: int = MAX_OBJECTS, min_overlap: float = MIN_OVERLAP,
                  min_radius: int = MIN_RADIUS) -> BevTargets:
    """CenterPoint targets of (N, 7) boxes with (N,) class ids in [0, num_classes).

    Boxes whose centre falls outside the output grid are skipped; beyond `max_objects`
    in-grid boxes the rest are dropped (in input order). Radius per box:
    max(min_radius, int(gaussian_radius(length, width in output cells))).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f'build_targets: {len(boxes)} boxes but {len(classes)} classes')
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f'build_targets: box classes must lie in [0, {num_classes}), '
                         f'got {sorted(set(classes.tolist()))}')
    height, width = grid.output_shape
    heatmap = np.zeros((num_classes, height, width), dtype=np.float32)
    reg = np.zeros((max_objects, REG_DIM), dtype=np.float32)
    ind = np.zeros(max_objects, dtype=np.int64)
    mask = np.zeros(max_objects, dtype=bool)
    cls = np.zeros(max_objects, dtype=np.int64)

    box_reg, row_col, in_grid = encode_regression(boxes, grid)
    keep = np.flatnonzero(in_grid)[:max_objects]
    count = len(keep)
    sizes_cells = boxes[keep, 3:5] / grid.out_cell_m
    radii = np.maximum(min_radius, gaussian_radius(sizes_cells[:, 0], sizes_cells[:, 1],
                                                   min_overlap).astype(np.int64))
    for (row, col), radius, class_id in zip(row_col[keep], radii, classes[keep]):
        draw_gaussian(heatmap[class_id], int(row), int(col), int(radius))

    reg[:count] = box_reg[keep]
    ind[:count] = row_col[keep, 0] * width + row_col[keep, 1]
    mask[:count] = True
    cls[:count] = classes[keep]
    return BevTargets(heatmap=heatmap, reg=reg, ind=ind, mask=mask, cls=cls)
