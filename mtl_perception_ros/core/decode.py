"""Turn the detection head's maps into boxes: heatmap peaks -> top-K -> threshold -> boxes.

Runs in torch on the maps' device (CPU or GPU); only the final (few) detections come back to
numpy. Shared by evaluation and the node.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.box_coding import REG_DIM, decode_regression


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
    pooled = F.max_pool2d(heatmap, kernel_size=kernel, stride=1, padding=kernel // 2)
    return heatmap * (pooled == heatmap).to(heatmap.dtype)


@torch.no_grad()
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
    if bbox_heatmap.dim() != 4 or bbox_reg.dim() != 4:
        raise ValueError(f'decode_detections: expected bbox_heatmap [B, C, H, W] and bbox_reg '
                         f'[B, {REG_DIM}, H, W], got {tuple(bbox_heatmap.shape)} and {tuple(bbox_reg.shape)}')
    batch, num_classes, height, width = bbox_heatmap.shape
    if bbox_reg.shape != (batch, REG_DIM, height, width):
        raise ValueError(f'decode_detections: bbox_reg {tuple(bbox_reg.shape)} does not match '
                         f'bbox_heatmap {tuple(bbox_heatmap.shape)} (expected {REG_DIM} channels)')
    if (height, width) != tuple(grid.output_shape):
        raise ValueError(f'decode_detections: maps are {height}x{width} but the BEV grid output '
                         f'is {grid.output_shape[0]}x{grid.output_shape[1]}')

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
    results = []
    for b in range(batch):
        det = Detections(boxes[b][keep[b]].astype(np.float32), classes[b][keep[b]].astype(np.int64),
                         scores[b][keep[b]].astype(np.float32))
        if nms_radius_m is not None and len(det):
            det = circle_nms(det, nms_radius_m)
        results.append(det)
    return results


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
