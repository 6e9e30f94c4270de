"""Turn the detection head's maps into boxes: heatmap peaks -> top-K -> threshold -> boxes.

`decode_detections` runs in torch on the maps' device (CPU or GPU); only the final (few)
detections come back to numpy. Shared by evaluation and the node. `decode_detections_np` gives
the same boxes for one frame in NumPy: importing this module does not import torch, so the ONNX
Runtime path can decode in a process without it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.box_coding import REG_DIM, decode_regression

if TYPE_CHECKING:  # annotations only: torch is imported where a torch path runs
    import torch


@dataclass
class Detections:
    """Detections of one frame, vehicle frame, sorted by descending score.

    boxes (N, 7) float32 (mtl_perception_ros.core.boxes), classes (N,) int64 heatmap channel,
    scores (N,) float32 in (0, 1).
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> 'Detections':
        return cls(np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))


def heatmap_peaks(heatmap: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep values that are the maximum of their kernel x kernel neighbourhood, zero the rest.

    heatmap [B, C, H, W] of probabilities; returns the same shape. Ties on a plateau all stay.
    """
    import torch.nn.functional as F

    pooled = F.max_pool2d(heatmap, kernel_size=kernel, stride=1, padding=kernel // 2)
    return heatmap * (pooled == heatmap).to(heatmap.dtype)


def decode_detections(bbox_heatmap: torch.Tensor, bbox_reg: torch.Tensor, grid: BevGrid,
                      score_threshold: float = 0.3, max_detections: int = 100,
                      nms_radius_m: float | Mapping[int, float] | None = None) -> list[Detections]:
    """Boxes from the detection head, one `Detections` per batch item.

    bbox_heatmap [B, C, H, W] logits; bbox_reg [B, 8, H, W] (mtl_perception_ros.core.box_coding);
    (H, W) = grid.output_shape. Sigmoid -> 3x3 max-pool peaks -> top `max_detections` over all
    classes and cells -> keep score >= `score_threshold` -> decode. `nms_radius_m` optionally
    adds a greedy per-class circle NMS on BEV centre distance: one radius for all classes or
    {class id: radius} (classes not listed are not suppressed).
    """
    import torch

    if bbox_heatmap.dim() != 4 or bbox_reg.dim() != 4:
        raise ValueError(f'decode_detections: expected bbox_heatmap [B, C, H, W] and bbox_reg '
                         f'[B, {REG_DIM}, H, W], got {tuple(bbox_heatmap.shape)} and {tuple(bbox_reg.shape)}')
    _check_maps('decode_detections', tuple(bbox_heatmap.shape), tuple(bbox_reg.shape), grid)
    batch, num_classes, height, width = bbox_heatmap.shape

    with torch.no_grad():
        peaks = heatmap_peaks(torch.sigmoid(bbox_heatmap.float()))
        k = min(max_detections, num_classes * height * width)
        scores, flat = peaks.reshape(batch, -1).topk(k, dim=1)            # [B, K]
        classes = flat // (height * width)
        cells = flat % (height * width)
        rows, cols = cells // width, cells % width
        reg = bbox_reg.float().reshape(batch, REG_DIM, height * width)
        reg = reg.gather(2, cells[:, None, :].expand(batch, REG_DIM, k)).transpose(1, 2)  # [B, K, 8]
        boxes = decode_regression(reg, rows, cols, grid)                  # [B, K, 7]
        keep = scores >= score_threshold
    boxes, classes, scores, keep = (boxes.cpu().numpy(), classes.cpu().numpy(),
                                    scores.cpu().numpy(), keep.cpu().numpy())
    return [_frame_detections(boxes[b][keep[b]], classes[b][keep[b]], scores[b][keep[b]], nms_radius_m)
            for b in range(batch)]


def decode_detections_np(bbox_heatmap: np.ndarray, bbox_reg: np.ndarray, grid: BevGrid,
                         score_threshold: float = 0.3, max_detections: int = 100,
                         nms_radius_m: float | Mapping[int, float] | None = None) -> Detections:
    """`decode_detections` for ONE frame in NumPy, without torch: bbox_heatmap (C, H, W) logits,
    bbox_reg (8, H, W). The same steps and result; among exactly equal scores the lower flat index
    (class, row, col) comes first (torch.topk leaves that order unspecified)."""
    heatmap = np.asarray(bbox_heatmap, dtype=np.float32)
    reg_map = np.asarray(bbox_reg, dtype=np.float32)
    if heatmap.ndim != 3 or reg_map.ndim != 3:
        raise ValueError(f'decode_detections_np: expected one frame, bbox_heatmap [C, H, W] and bbox_reg '
                         f'[{REG_DIM}, H, W], got {heatmap.shape} and {reg_map.shape}')
    _check_maps('decode_detections_np', heatmap.shape, reg_map.shape, grid)
    if max_detections < 0:
        raise ValueError(f'decode_detections_np: max_detections must be >= 0, got {max_detections}')
    num_classes, height, width = heatmap.shape

    scores = heatmap_peaks_np(_sigmoid(heatmap)).reshape(-1)
    flat = _top_k(scores, min(max_detections, scores.size))
    scores = scores[flat]
    classes, cells = np.divmod(flat, height * width)
    rows, cols = np.divmod(cells, width)
    reg = reg_map.reshape(REG_DIM, height * width)[:, cells].T                # (K, 8)
    boxes = decode_regression(reg, rows, cols, grid)                          # (K, 7)
    keep = scores >= score_threshold
    return _frame_detections(boxes[keep], classes[keep], scores[keep], nms_radius_m)


def heatmap_peaks_np(heatmap: np.ndarray, kernel: int = 3) -> np.ndarray:
    """`heatmap_peaks` in NumPy: heatmap (..., H, W) of probabilities, the same shape back.

    The max-pool pads with -inf, as F.max_pool2d does, so border cells compare only with the
    cells that exist. A separable max (rows, then columns) is exact.
    """
    pad = kernel // 2
    padded = np.pad(heatmap, [(0, 0)] * (heatmap.ndim - 2) + [(pad, pad), (pad, pad)],
                    constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view
    pooled = windows(windows(padded, kernel, axis=-1).max(axis=-1), kernel, axis=-2).max(axis=-1)
    return heatmap * (pooled == heatmap).astype(heatmap.dtype)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    with np.errstate(over='ignore'):  # exp(-x) overflows to inf for x << 0: the sigmoid is then 0
        return (1.0 / (1.0 + np.exp(-logits))).astype(logits.dtype, copy=False)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of the flat `scores`, by descending score, equal ones by index."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return top[np.lexsort((top, -scores[top]))].astype(np.int64)


def _check_maps(caller: str, heatmap_shape: tuple, reg_shape: tuple, grid: BevGrid) -> None:
    """bbox_heatmap (..., C, H, W) and bbox_reg (..., 8, H, W) with the same leading dims, H x W
    the grid's output."""
    *leading, _, height, width = heatmap_shape
    if tuple(reg_shape) != (*leading, REG_DIM, height, width):
        raise ValueError(f'{caller}: bbox_reg {tuple(reg_shape)} does not match '
                         f'bbox_heatmap {tuple(heatmap_shape)} (expected {REG_DIM} channels)')
    if (height, width) != tuple(grid.output_shape):
        raise ValueError(f'{caller}: maps are {height}x{width} but the BEV grid output '
                         f'is {grid.output_shape[0]}x{grid.output_shape[1]}')


def _frame_detections(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                      nms_radius_m: float | Mapping[int, float] | None) -> Detections:
    """One frame's kept detections (sorted by score) as `Detections`, after the optional NMS."""
    det = Detections(boxes.astype(np.float32), classes.astype(np.int64), scores.astype(np.float32))
    if nms_radius_m is not None and len(det):
        det = circle_nms(det, nms_radius_m)
    return det


def circle_nms(det: Detections, radius_m: float | Mapping[int, float]) -> Detections:
    """Greedy per-class NMS on BEV centre distance: drop a box closer than the radius of its
    class to a higher-scoring kept box of the same class. `det` must be sorted by score."""
    keep = np.ones(len(det), dtype=bool)
    centres = det.boxes[:, :2].astype(np.float64)
    for cls in np.unique(det.classes):
        radius = radius_m.get(int(cls)) if isinstance(radius_m, Mapping) else float(radius_m)
        if radius is None or radius <= 0:
            continue
        members = np.flatnonzero(det.classes == cls)
        # Pairwise distances among this class's boxes only (at most max_detections).
        close = np.linalg.norm(centres[members, None] - centres[None, members], axis=-1) < radius
        alive = np.ones(len(members), dtype=bool)
        for i in range(len(members)):
            if alive[i]:
                alive[i + 1:] &= ~close[i, i + 1:]
        keep[members] = alive
    return Detections(det.boxes[keep], det.classes[keep], det.scores[keep])
