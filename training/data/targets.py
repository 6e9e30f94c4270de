"""CenterPoint detection targets on the BEV output grid.

Per class a heatmap with a Gaussian at each box centre (CenterPoint / CornerNet radius), and per
object the regression vector (mtl_perception_ros.core.box_coding) at its centre cell and, with
`reg_radius` r > 0, at the cells up to r away from it (each cell's own offset to the centre), so a
heatmap peak that lands a cell off still decodes the true centre.
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
REG_RADIUS = 0


@dataclass
class BevTargets:
    """Targets of one frame; (H, W) = grid.output_shape, M = max_objects.

    - heatmap (C, H, W) float32 in [0, 1], exactly 1 at each object's centre cell.
    - S = M * (2 r + 1)**2 regression slots (r = reg_radius; S = M for r = 0), the centre cells
      first in object order: reg (S, 8) float32 regression vectors relative to the slot's cell;
      ind (S,) int64 flat cell index row * W + col; mask (S,) bool: slot holds a target; cls (S,)
      int64 class of the slot (0 where empty); weight (S,) float32 of the slot in the regression
      loss: 1 at centres, the object's heatmap Gaussian at its other cells, 0 where empty.
    """

    heatmap: np.ndarray
    reg: np.ndarray
    ind: np.ndarray
    mask: np.ndarray
    cls: np.ndarray
    weight: np.ndarray


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
                  min_radius: int = MIN_RADIUS, reg_radius: int = REG_RADIUS) -> BevTargets:
    """CenterPoint targets of (N, 7) boxes with (N,) class ids in [0, num_classes).

    Boxes whose centre falls outside the output grid are skipped; beyond `max_objects`
    in-grid boxes the rest are dropped (in input order). Radius per box:
    max(min_radius, int(gaussian_radius(length, width in output cells))).
    `reg_radius` r: also regress each box from the cells within r (Chebyshev) of its centre cell,
    capped at the box's heatmap radius. A cell that is some box's centre cell stays that box's
    alone; any other cell goes to the box whose centre is nearest to the cell's centre.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f'build_targets: {len(boxes)} boxes but {len(classes)} classes')
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f'build_targets: box classes must lie in [0, {num_classes}), '
                         f'got {sorted(set(classes.tolist()))}')
    if reg_radius < 0:
        raise ValueError(f'build_targets: reg_radius must be >= 0, got {reg_radius}')
    height, width = grid.output_shape
    heatmap = np.zeros((num_classes, height, width), dtype=np.float32)
    slots = max_objects * (2 * reg_radius + 1) ** 2
    reg = np.zeros((slots, REG_DIM), dtype=np.float32)
    ind = np.zeros(slots, dtype=np.int64)
    mask = np.zeros(slots, dtype=bool)
    cls = np.zeros(slots, dtype=np.int64)
    weight = np.zeros(slots, dtype=np.float32)

    box_reg, row_col, in_grid = encode_regression(boxes, grid)
    keep = np.flatnonzero(in_grid)[:max_objects]
    box_reg, cells, classes = box_reg[keep], row_col[keep], classes[keep]
    count = len(keep)
    sizes_cells = boxes[keep, 3:5] / grid.out_cell_m
    radii = np.maximum(min_radius, gaussian_radius(sizes_cells[:, 0], sizes_cells[:, 1],
                                                   min_overlap).astype(np.int64))
    for (row, col), radius, class_id in zip(cells, radii, classes):
        draw_gaussian(heatmap[class_id], int(row), int(col), int(radius))

    reg[:count] = box_reg
    ind[:count] = cells[:, 0] * width + cells[:, 1]
    mask[:count] = True
    cls[:count] = classes
    weight[:count] = 1.0
    if reg_radius > 0 and count:
        owner, rows, cols, gauss = _neighbour_cells(box_reg[:, :2] + cells, cells,
                                                    np.minimum(radii, reg_radius), radii, height, width)
        extra = slice(count, count + len(owner))
        reg[extra] = box_reg[owner]
        reg[extra, 0] += cells[owner, 0] - rows
        reg[extra, 1] += cells[owner, 1] - cols
        ind[extra] = rows * width + cols
        mask[extra] = True
        cls[extra] = classes[owner]
        weight[extra] = gauss
    return BevTargets(heatmap=heatmap, reg=reg, ind=ind, mask=mask, cls=cls, weight=weight)


def _neighbour_cells(centres: np.ndarray, centre_cells: np.ndarray, radii: np.ndarray,
                     heatmap_radii: np.ndarray, height: int, width: int):
    """The non-centre cells within each box's radius that the box owns (see build_targets).

    centres (K, 2) continuous (row, col) of the box centres; centre_cells (K, 2) their cells;
    radii (K,) int reach; heatmap_radii (K,) their heatmap Gaussians' radii. Returns (owner, rows,
    cols, gaussian): owner (E,) box index into the K boxes, the cells, and the box's heatmap
    Gaussian value at each cell.
    """
    reach = int(radii.max())
    offsets = np.arange(-reach, reach + 1)
    d_row, d_col = (a.reshape(-1) for a in np.meshgrid(offsets, offsets, indexing='ij'))
    ring = (d_row != 0) | (d_col != 0)
    d_row, d_col = d_row[ring], d_col[ring]
    owner = np.repeat(np.arange(len(radii)), len(d_row))
    d_row, d_col = np.tile(d_row, len(radii)), np.tile(d_col, len(radii))
    rows, cols = centre_cells[owner, 0] + d_row, centre_cells[owner, 1] + d_col
    valid = ((np.maximum(np.abs(d_row), np.abs(d_col)) <= radii[owner])
             & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width))
    flat = rows * width + cols
    valid &= ~np.isin(flat, centre_cells[:, 0] * width + centre_cells[:, 1])
    owner, rows, cols, flat, d_row, d_col = (a[valid] for a in (owner, rows, cols, flat, d_row, d_col))
    distance = np.hypot(rows + 0.5 - centres[owner, 0], cols + 0.5 - centres[owner, 1])
    order = np.lexsort((owner, distance, flat))            # per cell: nearest centre first (ties: first box)
    _, first = np.unique(flat[order], return_index=True)
    chosen = np.sort(order[first])
    sigma = (2 * heatmap_radii[owner[chosen]] + 1) / 6.0
    gaussian = np.exp(-(d_row[chosen] ** 2 + d_col[chosen] ** 2) / (2 * sigma * sigma))
    return owner[chosen], rows[chosen], cols[chosen], gaussian.astype(np.float32)
