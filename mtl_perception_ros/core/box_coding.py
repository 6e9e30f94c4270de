"""Box regression coding on the BEV output grid: (N, 7) boxes <-> (N, 8) regression vectors.

One regression vector per box, stored at the output cell (row, col) that holds its centre:
    dx, dy   sub-cell offset of the centre in cells (0..1), (row + dx, col + dy) =
             BevGrid.xy_to_cell(x, y): row along x, col along y
    z        centre height, metres
    log l, log w, log h   log of the size in metres
    sin yaw, cos yaw      heading, CCW about +z

`encode_regression` runs on numpy (training targets); `decode_regression` runs on torch tensors on
any device (the node decodes on the GPU) and on numpy arrays, through one formula. Importing this
module does not import torch (the ONNX Runtime path runs without it).
"""
from __future__ import annotations

import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.boxes import BOX_DIM

REG_FIELDS = ('dx', 'dy', 'z', 'log_length', 'log_width', 'log_height', 'sin_yaw', 'cos_yaw')
REG_DIM = len(REG_FIELDS)

# Sizes below this are clamped before the log (a degenerate label must not give -inf targets).
MIN_SIZE_M = 0.01
# Decoded log sizes are clamped to this so an untrained head cannot overflow exp() (148 m).
MAX_LOG_SIZE = 5.0


def encode_regression(boxes: np.ndarray, grid: BevGrid):
    """Regression targets of (N, 7) boxes on `grid`'s output grid.

    Returns (reg, row_col, in_grid):
    - reg (N, 8) float32 (REG_FIELDS),
    - row_col (N, 2) int64 output-cell indices of the centres (meaningful only where in_grid),
    - in_grid (N,) bool: centre inside the output grid (0 <= row < H, 0 <= col < W).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    height, width = grid.output_shape
    row_f, col_f = grid.xy_to_cell(boxes[:, 0], boxes[:, 1])
    rows, cols = np.floor(row_f), np.floor(col_f)
    in_grid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    sizes = np.maximum(boxes[:, 3:6], MIN_SIZE_M)
    reg = np.concatenate([(row_f - rows)[:, None], (col_f - cols)[:, None], boxes[:, 2:3],
                          np.log(sizes), np.sin(boxes[:, 6:7]), np.cos(boxes[:, 6:7])], axis=1)
    row_col = np.stack([rows, cols], axis=1).astype(np.int64)
    return reg.astype(np.float32), row_col, in_grid


def decode_regression(reg, rows, cols, grid: BevGrid):
    """(N, 8) regression vectors at output cells (rows, cols) -> (N, 7) boxes, vehicle frame.

    Torch tensors stay on their device and dtype; numpy arrays come back as numpy (same dtype
    as `reg`), without importing torch. Log sizes are clamped to MAX_LOG_SIZE; yaw = atan2(sin, cos)
    in (-pi, pi].
    """
    if reg.shape[-1] != REG_DIM:
        raise ValueError(f'decode_regression: expected reg (..., {REG_DIM}), got {tuple(reg.shape)}')
    if isinstance(reg, np.ndarray):
        xp = np
        rows, cols = (np.asarray(index).astype(reg.dtype) for index in (rows, cols))
    else:
        import torch  # only for tensors: a numpy caller must not pay for importing torch
        xp = torch
        rows, cols = (torch.as_tensor(index, device=reg.device).to(reg.dtype) for index in (rows, cols))
    # The same calls in numpy and torch (torch has numpy's arctan2, clip and concatenate(axis=)).
    x, y = grid.cell_to_xy(rows + reg[..., 0], cols + reg[..., 1])
    sizes = xp.exp(xp.clip(reg[..., 3:6], None, MAX_LOG_SIZE))
    yaw = xp.arctan2(reg[..., 6], reg[..., 7])
    return xp.concatenate([x[..., None], y[..., None], reg[..., 2:3], sizes, yaw[..., None]], axis=-1)
