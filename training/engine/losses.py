"""Training losses of the multi-task network: detection (CenterPoint) + semantic segmentation.

- `heatmap_focal_loss`: CenterNet's penalty-reduced focal loss on the class heatmaps.
- `regression_l1_loss`: L1 on the 8 box parameters at the object centre cells.
- `semantic_cross_entropy`: pixel cross-entropy (ignore 255) at the label resolution.
- `semantic_class_weights`: ENet-style weights 1 / log(c + frequency) from a pixel histogram.
- `UncertaintyWeighting`: Kendall et al.'s learned task weighting.
- `MultiTaskLoss`: all of the above, returning the total and every term for logging.

Targets (training.data.targets / training.data.dataset): heatmap (B,C,H,W) float in [0, 1], exactly 1 at
object centres; reg (B,M,8) float; ind (B,M) int64 flat cell index row * W + col; mask (B,M)
bool (slot holds an object); class_map (B,Hi,Wi) int64 with 255 = ignore.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception_ros.core.labels import IGNORE_INDEX

FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0
PROB_EPS = 1e-4
TASKS = ('heatmap', 'reg', 'sem')


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
                       beta: float = FOCAL_BETA) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CenterNet), summed and divided by max(1, #objects).

    logits, target (B,C,H,W); p = sigmoid(logits) clamped to [1e-4, 1 - 1e-4]. Positives are the
    cells where target == 1: -(1-p)^alpha log p; every other cell: -(1-y)^beta p^alpha log(1-p).
    """
    pred = torch.sigmoid(logits.float()).clamp(PROB_EPS, 1.0 - PROB_EPS)
    target = target.float()
    positive = target >= 1.0
    pos_loss = torch.log(pred) * (1.0 - pred).pow(alpha)
    neg_loss = torch.log(1.0 - pred) * pred.pow(alpha) * (1.0 - target).pow(beta)
    loss = torch.where(positive, pos_loss, neg_loss).sum()
    num_pos = positive.sum().clamp(min=1).to(loss.dtype)
    return -loss / num_pos


def gather_at_centres(feature_map: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """Values of (B,R,H,W) maps at flat cell indices ind (B,M) -> (B,M,R)."""
    batch, channels = feature_map.shape[:2]
    flat = feature_map.reshape(batch, channels, -1)                    # (B, R, H*W)
    index = ind.long().clamp(0, flat.shape[-1] - 1)                    # empty slots may hold junk
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)  # (B, M, R)


def regression_l1_loss(reg: torch.Tensor, target: torch.Tensor, ind: torch.Tensor, mask: torch.Tensor,
                       code_weights: torch.Tensor | Sequence[float] | None = None,
                       slot_weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between predicted reg (B,8,H,W) at the cells `ind` (B,M) and target (B,M,8).

    Summed over the 8 parameters (each times its code weight, default 1) and averaged over the
    slots (mask (B,M) True), as CenterPoint; with `slot_weights` (B,M) a weighted mean (the
    targets' reg_weight: centres 1, cells around them less); 0 when there is no object.
    """
    pred = gather_at_centres(reg.float(), ind)                        # (B, M, 8)
    error = (pred - target.float()).abs()
    if code_weights is not None:
        error = error * torch.as_tensor(code_weights, dtype=error.dtype, device=error.device)
    valid = mask.bool()
    slot = valid.to(error.dtype) if slot_weights is None else torch.where(
        valid, slot_weights.to(error.dtype), torch.zeros_like(error[..., 0]))
    # where: NaN-safe in empty slots; every object's centre slot weighs 1, so the sum is >= 1
    total = torch.where(valid.unsqueeze(-1), error * slot.unsqueeze(-1), torch.zeros_like(error)).sum()
    return total / slot.sum().clamp(min=1)


def semantic_cross_entropy(sem_logits: torch.Tensor, class_map: torch.Tensor,
                           class_weights: torch.Tensor | None = None,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of sem_logits (B,K,h,w), bilinearly upsampled to class_map (B,Hi,Wi).

    Mean over labelled pixels (weighted mean with `class_weights` (K,)); pixels equal to
    `ignore_index` do not count; 0 (with gradient graph) when no pixel is labelled.
    """
    class_map = class_map.long()
    sem_logits = sem_logits.float()
    if sem_logits.shape[-2:] != class_map.shape[-2:]:
        sem_logits = F.interpolate(sem_logits, size=class_map.shape[-2:], mode='bilinear',
                                   align_corners=False)
    weight = None if class_weights is None else class_weights.to(sem_logits.device, torch.float32)
    per_pixel = F.cross_entropy(sem_logits, class_map, weight=weight, ignore_index=ignore_index,
                                reduction='none')  # (B, Hi, Wi), weighted, 0 where ignored
    labelled = class_map != ignore_index
    if weight is None:
        denominator = labelled.sum().to(per_pixel.dtype)
    else:  # PyTorch's weighted mean: divide by the summed weights of the labelled pixels
        safe_class = torch.where(labelled, class_map, torch.zeros_like(class_map))
        denominator = torch.where(labelled, weight[safe_class], torch.zeros_like(per_pixel)).sum()
    return per_pixel.sum() / denominator.clamp(min=1e-12)  # no labelled pixel -> 0, no host sync


def semantic_class_weights(pixel_histogram, c: float = 1.02) -> torch.Tensor:
    """ENet class weights 1 / log(c + f_k), f_k = class k's share of the labelled pixels.

    pixel_histogram (K,) counts (ignored pixels excluded). Frequent classes get ~1 / log(c + 1),
    absent ones the largest weight 1 / log(c). Returns (K,) float32.
    """
    counts = np.asarray(pixel_histogram, dtype=np.float64).reshape(-1)
    if counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError('semantic_class_weights: need non-negative counts with a positive sum, '
                         f'got {counts}')
    if c <= 1.0:
        raise ValueError(f'semantic_class_weights: c must be > 1 (weights are 1 / log(c + f)), got {c}')
    frequency = counts / counts.sum()
    return torch.as_tensor(1.0 / np.log(c + frequency), dtype=torch.float32)


class UncertaintyWeighting(nn.Module):
    """Kendall, Gal & Cipolla (2018): total = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i, s_i learned.

    s_i = log sigma_i^2 starts at 0. Remember to give this module's parameters to the optimizer.
    """

    def __init__(self, tasks: Sequence[str] = TASKS):
        super().__init__()
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = self.log_vars.new_zeros(())
        for s, task in zip(self.log_vars, self.tasks):
            total = total + 0.5 * torch.exp(-s) * losses[task] + 0.5 * s
        return total


class MultiTaskLoss(nn.Module):
    """Detection + semantic loss: w_hm L_focal + w_reg L_L1 + lambda_sem L_CE (or uncertainty-weighted).

    forward(outputs, targets) -> (total, terms). `outputs`: the model's dict; `targets`: a
    dict (e.g. a collated batch) with heatmap, reg, ind, mask and optionally class_map (missing
    or None -> no semantic term). `terms` holds detached scalars for logging: the raw
    'heatmap', 'reg', 'sem' losses, their weighted values 'weighted/<task>', 'total', and with
    uncertainty weighting 'log_var/<task>'.
    """

    def __init__(self, heatmap_weight: float = 1.0, reg_weight: float = 0.25, sem_weight: float = 1.0,
                 class_weights: torch.Tensor | Sequence[float] | None = None,
                 reg_code_weights: Sequence[float] | None = None, uncertainty_weighting: bool = False):
        super().__init__()
        self.weights = {'heatmap': float(heatmap_weight), 'reg': float(reg_weight), 'sem': float(sem_weight)}
        for task, weight in self.weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f'MultiTaskLoss: {task} weight must be a finite number >= 0, got {weight}')
        self.register_buffer('class_weights', None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))
        self.register_buffer('reg_code_weights', None if reg_code_weights is None
                             else torch.as_tensor(reg_code_weights, dtype=torch.float32))
        self.uncertainty = UncertaintyWeighting(TASKS) if uncertainty_weighting else None

    def forward(self, outputs: dict, targets: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raw = {
            'heatmap': heatmap_focal_loss(outputs['bbox_heatmap'], targets['heatmap']),
            'reg': regression_l1_loss(outputs['bbox_reg'], targets['reg'], targets['ind'], targets['mask'],
                                      self.reg_code_weights, targets.get('reg_weight')),
        }
        class_map = targets.get('class_map')
        raw['sem'] = (semantic_cross_entropy(outputs['sem_logits'], class_map, self.class_weights)
                      if class_map is not None else outputs['sem_logits'].sum() * 0.0)
        weighted = {task: self.weights[task] * loss for task, loss in raw.items()}
        if self.uncertainty is not None:
            total = self.uncertainty(weighted)
        else:
            total = weighted['heatmap'] + weighted['reg'] + weighted['sem']
        terms = {task: loss.detach() for task, loss in raw.items()}
        terms.update({f'weighted/{task}': loss.detach() for task, loss in weighted.items()})
        terms['total'] = total.detach()
        if self.uncertainty is not None:
            terms.update({f'log_var/{task}': s.detach() for task, s in
                          zip(self.uncertainty.tasks, self.uncertainty.log_vars)})
        return total, terms
