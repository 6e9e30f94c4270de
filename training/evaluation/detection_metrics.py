"""BEV detection metrics: per-class average precision, nuScenes' AP by default.

The default (``interpolation='nuscenes'``) is nuScenes' detection AP exactly as nuscenes-devkit
computes it (python-sdk/nuscenes/eval/detection/algo.py, ``accumulate`` and ``calc_ap``), for one
class and one centre-distance threshold:

1. All predictions of the class over the dataset in descending score order; equal scores in
   the devkit's order, ``sorted((score, index))[::-1]``: the later prediction first (frames in
   input order, predictions in frame order).
2. In that order each takes the closest still-unmatched ground-truth box of the class in its
   frame (ties: the first GT box); a true positive when that distance is below the threshold
   (strict ``<``), else a false positive. Distance = BEV centre distance ``hypot(dx, dy)`` in
   metres. (With ``criterion='bev_iou'`` the closest is the box of highest rotated BEV IoU and
   the test is ``iou >= threshold``: not a nuScenes metric.)
3. Cumulative TP / FP; ``precision = tp / (tp + fp)``, ``recall = tp / num_gt``; precision on
   ``np.linspace(0, 1, 101)`` by ``np.interp(grid, recall, precision, right=0)`` (the raw,
   non-monotone curve, linearly); no prediction: all zeros.
4. ``calc_ap`` with ``min_recall = min_precision = 0.1``: the grid points from index
   ``round(100 * min_recall) + 1`` = 11 on (90 points, recall > 0.1), ``max(p - 0.1, 0)``,
   mean, divided by ``1 - 0.1``. A detector whose precision never exceeds 0.1, or whose recall
   stays at or below 0.1, scores 0.

``interpolation='coco_envelope'`` is another metric under its own name (the project's default
before 2026-12-03, ~0.015 mAP higher): precision made non-increasing from the right
(``p[i] = max(p[i:])``, COCO's rule) and read at the first PR point with ``recall >= r`` on the
grid ``k / 100``, 91 points from k = 10, stable score order (ties keep input order).

A class with no ground truth in the whole dataset has an undefined AP: it is NaN in the table
and left out of every mean. mAP = mean over classes (with GT) of the mean over thresholds.
Range filtering (nuScenes drops boxes beyond a class-specific distance) is the caller's job;
``range_band`` (metres from the vehicle origin, BEV) keeps only ground truth and predictions
whose centres lie in ``[low, high)`` (AP by range band); ``sector_deg`` likewise keeps those whose
centre azimuth |atan2(y, x)| lies in ``[low, high)`` degrees (AP by sector around a surround rig:
SECTORS_DEG front / sides / rear).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.core.boxes import BOX_DIM, bev_corners
from training.evaluation.formatting import format_number

CENTER_DISTANCE_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)
BEV_IOU_THRESHOLDS = (0.5, 0.7)
RECALL_GRID = np.linspace(0.0, 1.0, 101)          # nuscenes-devkit's rec_interp
ENVELOPE_RECALL_GRID = np.arange(101) / 100.0      # coco_envelope: exact k / 100
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
CRITERIA = ('center_distance', 'bev_iou')
INTERPOLATIONS = ('nuscenes', 'coco_envelope')
RANGE_BANDS_M = ((0.0, 20.0), (20.0, 40.0), (40.0, float('inf')))
SECTORS_DEG = {'front': (0.0, 45.0), 'sides': (45.0, 135.0), 'rear': (135.0, 181.0)}   # |azimuth|
TP_THRESHOLD_M = 2.0                       # nuScenes' dist_th_tp: the TP errors are measured at 2 m
TP_ERROR_NAMES = ('trans_err_m', 'scale_err', 'orient_err_rad')


def descending_score_order(scores: np.ndarray, ties: str = 'nuscenes') -> np.ndarray:
    """Indices of `scores` from the highest; equal scores: the later index first ('nuscenes', the
    devkit's sorted((score, index))[::-1]) or the earlier ('stable')."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if ties == 'stable':
        return np.argsort(-scores, kind='stable')
    return np.lexsort((np.arange(len(scores)), scores))[::-1]


def center_distances(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(N, >=2) and (M, >=2) boxes -> (N, M) BEV centre distances (x, y) in metres."""
    pred_xy = np.asarray(pred_boxes, dtype=np.float64)[:, :2]
    gt_xy = np.asarray(gt_boxes, dtype=np.float64)[:, :2]
    return np.hypot(pred_xy[:, None, 0] - gt_xy[None, :, 0], pred_xy[:, None, 1] - gt_xy[None, :, 1])


def bev_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, 7) and (M, 7) boxes -> (N, M) rotated IoU of their BEV footprints.

    Only pairs whose circumscribed circles overlap are intersected (vectorised over those
    pairs, see _intersection_area); the rest are 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, BOX_DIM)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, BOX_DIM)
    iou = np.zeros((len(a), len(b)))
    radius_a = 0.5 * np.hypot(a[:, 3], a[:, 4])
    radius_b = 0.5 * np.hypot(b[:, 3], b[:, 4])
    rows, cols = np.nonzero(center_distances(a, b) < radius_a[:, None] + radius_b[None, :])
    if len(rows) == 0:
        return iou
    intersection = _intersection_area(a[rows], b[cols])
    union = a[rows, 3] * a[rows, 4] + b[cols, 3] * b[cols, 4] - intersection
    iou[rows, cols] = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    return iou


def _intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, 7) and (P, 7) boxes -> (P,) area of the intersection of each pair's BEV footprints.

    The intersection of two rectangles is the convex polygon spanned by the corners of each
    inside the other plus the crossings of their edges; those candidate points are sorted by
    angle about their mean and the shoelace formula gives the area.
    """
    corners_a, corners_b = bev_corners(a), bev_corners(b)                 # (P, 4, 2)
    a_in_b = _inside_rectangle(corners_a, b[:, None, :])
    b_in_a = _inside_rectangle(corners_b, a[:, None, :])
    # Edge i of A against edge j of B: p + t r = q + u s with t, u in [0, 1].
    p = corners_a[:, :, None, :]
    r = np.roll(corners_a, -1, axis=1)[:, :, None, :] - p
    q = corners_b[:, None, :, :]
    s = np.roll(corners_b, -1, axis=1)[:, None, :, :] - q
    denom = _cross(r, s)                                                  # (P, 4, 4)
    parallel = np.abs(denom) < 1e-12
    safe = np.where(parallel, 1.0, denom)
    t = _cross(q - p, s) / safe
    u = _cross(q - p, r) / safe
    eps = 1e-9
    crossing = ~parallel & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    crossing_points = p + t[..., None] * r                                # (P, 4, 4, 2)
    points = np.concatenate([corners_a, corners_b, crossing_points.reshape(-1, 16, 2)], axis=1)
    valid = np.concatenate([a_in_b, b_in_a, crossing.reshape(-1, 16)], axis=1)  # (P, 24)
    count = valid.sum(axis=1)
    centre = (points * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    angle = np.arctan2(points[..., 1] - centre[:, None, 1], points[..., 0] - centre[:, None, 0])
    order = np.argsort(np.where(valid, angle, np.inf), axis=1, kind='stable')
    points = np.take_along_axis(points, order[..., None], axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    # Pad the tail with the first valid point: the padding adds only the closing edge.
    points = np.where(valid[..., None], points, points[:, :1])
    area = 0.5 * np.abs(_cross(points, np.roll(points, -1, axis=1)).sum(axis=1))
    return np.where(count >= 3, area, 0.0)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _inside_rectangle(points: np.ndarray, boxes: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """(..., K, 2) points, (..., 1, 7) boxes broadcastable -> (..., K) inside the BEV footprint."""
    dx = points[..., 0] - boxes[..., 0]
    dy = points[..., 1] - boxes[..., 1]
    cos, sin = np.cos(boxes[..., 6]), np.sin(boxes[..., 6])
    local_x = dx * cos + dy * sin
    local_y = -dx * sin + dy * cos
    return (np.abs(local_x) <= boxes[..., 3] / 2 + eps) & (np.abs(local_y) <= boxes[..., 4] / 2 + eps)


def greedy_match(cost: np.ndarray, allowed: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Greedy one-to-one matching of predictions (rows) to ground truth (columns).

    Rows are visited in `order`; each takes the still-unmatched column of lowest `cost` among
    those where `allowed` (ties: lowest column index). Returns (N,) int64 matched column or -1.
    When `allowed` is a sub-level set of `cost` (distance < threshold) this is exactly
    "closest unmatched GT, then test the threshold".
    """
    cost = np.where(allowed, np.asarray(cost, dtype=np.float64), np.inf)
    matched = np.full(cost.shape[0], -1, dtype=np.int64)
    if cost.shape[1] == 0:
        return matched
    taken = np.zeros(cost.shape[1], dtype=bool)
    for row in order:
        candidates = np.where(taken, np.inf, cost[row])
        col = int(np.argmin(candidates))
        if np.isfinite(candidates[col]):
            matched[row] = col
            taken[col] = True
    return matched


def match_detections_to_gt(pred_boxes: np.ndarray, pred_classes: np.ndarray, pred_scores: np.ndarray,
                           gt_boxes: np.ndarray, gt_classes: np.ndarray, thresholds=CENTER_DISTANCE_THRESHOLDS_M,
                           criterion: str = 'center_distance', ties: str = 'nuscenes',
                           return_matches: bool = False):
    """Match one frame's predictions to its ground truth, class by class (score order and ties:
    descending_score_order).

    Shapes: pred_boxes (N, 7), pred_classes (N,), pred_scores (N,), gt_boxes (M, 7),
    gt_classes (M,). Returns (N, T) bool: prediction n is a true positive at threshold t
    (metres for 'center_distance', IoU for 'bev_iou'). With return_matches: also (N, T) int64, the
    index of the matched ground-truth box (-1 for none).
    """
    if criterion not in CRITERIA:
        raise ValueError(f'criterion {criterion!r}: expected one of {CRITERIA}')
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    pred_classes = np.asarray(pred_classes).reshape(-1)
    gt_classes = np.asarray(gt_classes).reshape(-1)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    matches = np.full((len(pred_boxes), len(thresholds)), -1, dtype=np.int64)
    for cls in np.unique(pred_classes):
        pred_idx = np.nonzero(pred_classes == cls)[0]
        gt_idx = np.nonzero(gt_classes == cls)[0]
        if len(gt_idx) == 0:
            continue
        order = descending_score_order(pred_scores[pred_idx], ties)
        if criterion == 'center_distance':
            cost = center_distances(pred_boxes[pred_idx], gt_boxes[gt_idx])   # metres, lower is closer
            allowed = cost[None] < thresholds[:, None, None]
        else:
            iou = bev_iou(pred_boxes[pred_idx], gt_boxes[gt_idx])
            cost = -iou                                                       # highest IoU first
            allowed = iou[None] >= thresholds[:, None, None]
        for t in range(len(thresholds)):
            matched = greedy_match(cost, allowed[t], order)
            matches[pred_idx, t] = np.where(matched >= 0, gt_idx[np.maximum(matched, 0)], -1)
    is_tp = matches >= 0
    return (is_tp, matches) if return_matches else is_tp


def true_positive_errors(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(K, 7) predictions and their matched (K, 7) ground truth -> (K, 3) nuScenes' TP errors:
    translation (BEV centre distance, m), scale (1 - IoU of the two boxes aligned at one centre and
    heading: 1 - prod(min(lwh)) / union), orientation (|yaw difference| wrapped to [0, pi], rad)."""
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    translation = np.hypot(pred_boxes[:, 0] - gt_boxes[:, 0], pred_boxes[:, 1] - gt_boxes[:, 1])
    pred_size, gt_size = pred_boxes[:, 3:6], gt_boxes[:, 3:6]
    intersection = np.prod(np.minimum(pred_size, gt_size), axis=1)
    union = np.prod(pred_size, axis=1) + np.prod(gt_size, axis=1) - intersection
    scale = 1.0 - intersection / np.where(union > 0, union, 1.0)
    difference = (gt_boxes[:, 6] - pred_boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi
    return np.column_stack([translation, scale, np.abs(difference)])


def cumulative_mean(values: np.ndarray) -> np.ndarray:
    """Running mean (the devkit's cummean; no values: ones)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.ones(0)
    return np.cumsum(values) / np.arange(1, len(values) + 1)


def nuscenes_tp_error(scores_sorted: np.ndarray, recall: np.ndarray, is_tp_sorted: np.ndarray,
                      errors_sorted: np.ndarray, min_recall: float = MIN_RECALL) -> float:
    """One TP error of one class as the devkit's accumulate + calc_tp: the running mean of the
    error over the true positives in score order, carried onto the recall grid through the
    confidence, averaged from the grid point above min_recall to the highest recall reached;
    1 when there is no true positive or recall never passes min_recall."""
    if not np.any(is_tp_sorted):
        return 1.0
    confidence = np.interp(RECALL_GRID, recall, scores_sorted, right=0)
    tp_confidence = scores_sorted[is_tp_sorted]
    running = cumulative_mean(errors_sorted[is_tp_sorted])
    on_grid = np.interp(confidence[::-1], tp_confidence[::-1], running[::-1])[::-1]
    first = round(100 * min_recall) + 1
    nonzero = np.nonzero(confidence)[0]
    last = nonzero[-1] if len(nonzero) else 0
    if last < first:
        return 1.0
    return float(np.mean(on_grid[first:last + 1]))


def precision_recall(scores: np.ndarray, is_tp: np.ndarray, num_gt: int,
                     ties: str = 'nuscenes') -> tuple[np.ndarray, np.ndarray]:
    """(K,) scores and (K,) bool TP flags of one class over the dataset -> (precision, recall),
    each (K,), in descending_score_order. num_gt > 0."""
    order = descending_score_order(scores, ties)
    tp = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    fp = np.arange(1, len(tp) + 1) - tp
    return tp / np.maximum(tp + fp, 1), tp / float(num_gt)


def interpolated_precision(precision: np.ndarray, recall: np.ndarray,
                           interpolation: str = 'nuscenes') -> np.ndarray:
    """(K,) precision, recall (recall non-decreasing) -> (101,) precision on the recall grid.

    'nuscenes': the devkit's accumulate (linear interpolation of the raw curve on RECALL_GRID);
    'coco_envelope': best precision at recall >= r on ENVELOPE_RECALL_GRID (0 beyond the highest
    recall). See module doc.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if interpolation == 'coco_envelope':
        out = np.zeros(len(ENVELOPE_RECALL_GRID))
        if len(precision) == 0:
            return out
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, ENVELOPE_RECALL_GRID, side='left')
        reached = first < len(recall)
        out[reached] = envelope[first[reached]]
        return out
    if interpolation == 'nuscenes':
        if len(precision) == 0:
            return np.zeros(len(RECALL_GRID))
        return np.interp(RECALL_GRID, recall, precision, right=0)
    raise ValueError(f'interpolation {interpolation!r}: expected one of {INTERPOLATIONS}')


def nuscenes_ap(precision_on_grid: np.ndarray, min_recall: float = MIN_RECALL,
                min_precision: float = MIN_PRECISION) -> float:
    """AP from the (101,) interpolated precision, as the devkit's calc_ap: the grid from index
    round(100 * min_recall) + 1 on, minus min_precision (clipped at 0), mean, / (1 - min_precision)."""
    return _clipped_mean_ap(precision_on_grid, round(100 * min_recall) + 1, min_precision)


def envelope_ap(precision_on_grid: np.ndarray, min_recall: float = MIN_RECALL,
                min_precision: float = MIN_PRECISION) -> float:
    """coco_envelope AP: like nuscenes_ap but from the grid point at min_recall on (91 points)."""
    return _clipped_mean_ap(precision_on_grid, round(100 * min_recall), min_precision)


def _clipped_mean_ap(precision_on_grid, first_index: int, min_precision: float) -> float:
    kept = np.asarray(precision_on_grid, dtype=np.float64)[first_index:]
    ap = float(np.mean(np.clip(kept - min_precision, 0.0, None))) / (1.0 - min_precision)
    return min(ap, 1.0)   # a perfect curve gives 1 + 4e-16 by rounding


@dataclass
class DetectionMetrics:
    """Result of DetectionAccumulator.compute().

    ap: (C, T) AP per class and threshold, NaN for classes without GT; ap_per_class: (C,) mean
    over thresholds; map: mean of ap_per_class over classes with GT (NaN if none);
    precision_curves: (C, T, 101) interpolated precision on recall_grid (zeros without GT);
    interpolation: 'nuscenes' or 'coco_envelope'; range_band: (low, high) m or None;
    raw_curves[c][t]: (precision, recall) arrays before interpolation; num_gt, num_pred: (C,).
    """

    class_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    criterion: str
    ap: np.ndarray
    ap_per_class: np.ndarray
    map: float
    recall_grid: np.ndarray
    precision_curves: np.ndarray
    raw_curves: list
    num_gt: np.ndarray
    num_pred: np.ndarray
    interpolation: str = 'nuscenes'
    range_band: tuple | None = None
    sector_deg: tuple | None = None
    # (C, 3) nuScenes' TP errors per class (TP_ERROR_NAMES; at TP_THRESHOLD_M, centre distance
    # only; NaN without GT or without a 2 m threshold); mean over classes with GT: tp_error_means
    tp_errors: np.ndarray | None = None

    @property
    def tp_error_means(self) -> dict:
        if self.tp_errors is None:
            return {}
        has_gt = self.num_gt > 0
        return {name: float(np.mean(self.tp_errors[has_gt, k])) if has_gt.any() else float('nan')
                for k, name in enumerate(TP_ERROR_NAMES)}

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN -> None); curves on the 101-point grid included."""
        def clean(values):
            return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
        return {
            'criterion': self.criterion,
            'ap_rule': 'nuScenes AP (nuscenes-devkit calc_ap)' if self.interpolation == 'nuscenes'
                       else 'COCO-envelope AP (not nuScenes)',
            'range_band_m': None if self.range_band is None else [float(v) for v in self.range_band],
            'thresholds': [float(t) for t in self.thresholds],
            'map': None if np.isnan(self.map) else float(self.map),
            'classes': {
                name: {'ap': clean(self.ap[c]), 'ap_mean': clean([self.ap_per_class[c]])[0],
                       'num_gt': int(self.num_gt[c]), 'num_pred': int(self.num_pred[c]),
                       'tp_errors': None if self.tp_errors is None else dict(zip(TP_ERROR_NAMES,
                                                                                 clean(self.tp_errors[c]))),
                       'precision_curves': [clean(curve) for curve in self.precision_curves[c]]}
                for c, name in enumerate(self.class_names)},
            'recall_grid': clean(self.recall_grid),
            'tp_error_means': {name: None if np.isnan(v) else v for name, v in self.tp_error_means.items()},
        }

    def format_table(self) -> str:
        """Plain-text table: one row per class, one column per threshold, then the mean."""
        unit = ' m' if self.criterion == 'center_distance' else ''
        header = ['class'] + [f'AP@{t:g}{unit}' for t in self.thresholds] + ['mean', 'GT', 'pred']
        rows = [header]
        for c, name in enumerate(self.class_names):
            rows.append([name] + [format_number(v) for v in self.ap[c]] + [format_number(self.ap_per_class[c]),
                        str(int(self.num_gt[c])), str(int(self.num_pred[c]))])
        rows.append(['mAP'] + [''] * len(self.thresholds) + [format_number(self.map), '', ''])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return '\n'.join('  '.join(cell.rjust(w) if i else cell.ljust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths))) for row in rows)


class DetectionAccumulator:
    """Streams per-frame predictions and ground truth; compute() gives the AP table.

    Matching happens in update() (greedy matching only depends on score order within a frame),
    so only scores, classes and TP flags are kept: memory O(number of predictions).
    """

    def __init__(self, class_names, thresholds=None, criterion: str = 'center_distance',
                 interpolation: str = 'nuscenes', range_band: tuple | None = None,
                 sector_deg: tuple | None = None):
        if criterion not in CRITERIA:
            raise ValueError(f'criterion {criterion!r}: expected one of {CRITERIA}')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation {interpolation!r}: expected one of {INTERPOLATIONS}')
        if thresholds is None:
            thresholds = CENTER_DISTANCE_THRESHOLDS_M if criterion == 'center_distance' else BEV_IOU_THRESHOLDS
        self.class_names = tuple(class_names)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.criterion = criterion
        self.interpolation = interpolation
        self.range_band = None if range_band is None else (float(range_band[0]), float(range_band[1]))
        self.sector_deg = None if sector_deg is None else (float(sector_deg[0]), float(sector_deg[1]))
        self._ties = 'nuscenes' if interpolation == 'nuscenes' else 'stable'
        self._tp_index = (self.thresholds.index(TP_THRESHOLD_M)
                          if criterion == 'center_distance' and TP_THRESHOLD_M in self.thresholds else None)
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._is_tp: list[np.ndarray] = []
        self._errors: list[np.ndarray] = []       # (N, 3) TP errors at TP_THRESHOLD_M, NaN for the others
        self._num_gt = np.zeros(len(self.class_names), dtype=np.int64)
        self.num_frames = 0

    def update(self, pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes) -> None:
        """Add one frame. pred_boxes (N, 7), pred_classes (N,) int, pred_scores (N,),
        gt_boxes (M, 7), gt_classes (M,) int; class ids in 0..C-1, vehicle frame, metres."""
        pred_boxes = _as_boxes(pred_boxes, 'pred_boxes')
        gt_boxes = _as_boxes(gt_boxes, 'gt_boxes')
        pred_classes = self._as_classes(pred_classes, len(pred_boxes), 'pred_classes')
        gt_classes = self._as_classes(gt_classes, len(gt_boxes), 'gt_classes')
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if pred_scores.shape != (len(pred_boxes),) or not np.all(np.isfinite(pred_scores)):
            raise ValueError(f'pred_scores: expected {len(pred_boxes)} finite scores, '
                             f'got shape {pred_scores.shape}')
        for limits, inside in ((self.range_band, _in_band), (self.sector_deg, _in_sector)):
            if limits is not None:   # keep ground truth and predictions whose centres lie in the band / sector
                keep_pred, keep_gt = inside(pred_boxes, *limits), inside(gt_boxes, *limits)
                pred_boxes, pred_classes, pred_scores = pred_boxes[keep_pred], pred_classes[keep_pred], pred_scores[keep_pred]
                gt_boxes, gt_classes = gt_boxes[keep_gt], gt_classes[keep_gt]
        is_tp, matches = match_detections_to_gt(pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes,
                                                self.thresholds, self.criterion, self._ties, return_matches=True)
        errors = np.full((len(pred_boxes), len(TP_ERROR_NAMES)), np.nan)
        if self._tp_index is not None:
            rows = np.nonzero(matches[:, self._tp_index] >= 0)[0]
            errors[rows] = true_positive_errors(pred_boxes[rows], gt_boxes[matches[rows, self._tp_index]])
        self._errors.append(errors)
        self._scores.append(pred_scores)
        self._classes.append(pred_classes)
        self._is_tp.append(is_tp)
        self._num_gt += np.bincount(gt_classes, minlength=len(self.class_names))
        self.num_frames += 1

    def compute(self) -> DetectionMetrics:
        num_classes, num_thresholds = len(self.class_names), len(self.thresholds)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        classes = np.concatenate(self._classes) if self._classes else np.zeros(0, dtype=np.int64)
        is_tp = np.concatenate(self._is_tp) if self._is_tp else np.zeros((0, num_thresholds), dtype=bool)
        errors = np.concatenate(self._errors) if self._errors else np.zeros((0, len(TP_ERROR_NAMES)))
        tp_errors = np.full((num_classes, len(TP_ERROR_NAMES)), np.nan)
        ap = np.full((num_classes, num_thresholds), np.nan)
        grid = RECALL_GRID if self.interpolation == 'nuscenes' else ENVELOPE_RECALL_GRID
        ap_of = nuscenes_ap if self.interpolation == 'nuscenes' else envelope_ap
        curves = np.zeros((num_classes, num_thresholds, len(grid)))
        raw_curves: list = [[(np.zeros(0), np.zeros(0))] * num_thresholds for _ in range(num_classes)]
        for c in range(num_classes):
            if self._num_gt[c] == 0:
                continue
            mine = classes == c
            for t in range(num_thresholds):
                precision, recall = precision_recall(scores[mine], is_tp[mine, t], int(self._num_gt[c]), self._ties)
                curves[c, t] = interpolated_precision(precision, recall, self.interpolation)
                raw_curves[c][t] = (precision, recall)
                ap[c, t] = ap_of(curves[c, t])
            if self._tp_index is not None:
                order = descending_score_order(scores[mine], self._ties)
                hits = is_tp[mine, self._tp_index][order]
                recall = np.cumsum(hits) / float(self._num_gt[c])
                for k in range(len(TP_ERROR_NAMES)):
                    tp_errors[c, k] = nuscenes_tp_error(scores[mine][order], recall, hits, errors[mine, k][order])
        has_gt = self._num_gt > 0
        ap_per_class = np.full(num_classes, np.nan)
        ap_per_class[has_gt] = ap[has_gt].mean(axis=1)
        map_value = float(ap_per_class[has_gt].mean()) if has_gt.any() else float('nan')
        return DetectionMetrics(
            class_names=self.class_names, thresholds=self.thresholds, criterion=self.criterion,
            ap=ap, ap_per_class=ap_per_class, map=map_value, recall_grid=grid.copy(),
            precision_curves=curves, raw_curves=raw_curves, num_gt=self._num_gt.copy(),
            num_pred=np.bincount(classes, minlength=num_classes)[:num_classes],
            interpolation=self.interpolation, range_band=self.range_band, sector_deg=self.sector_deg,
            tp_errors=tp_errors if self._tp_index is not None else None)

    def _as_classes(self, classes, count: int, field: str) -> np.ndarray:
        classes = np.asarray(classes).reshape(-1)
        if classes.shape != (count,) or (count and not np.issubdtype(classes.dtype, np.integer)):
            raise ValueError(f'{field}: expected {count} integer class ids, got {classes.dtype} {classes.shape}')
        classes = classes.astype(np.int64)
        if count and (classes.min() < 0 or classes.max() >= len(self.class_names)):
            raise ValueError(f'{field}: class ids must be in 0..{len(self.class_names) - 1} '
                             f'({", ".join(self.class_names)}), got {np.unique(classes).tolist()}')
        return classes


def _in_band(boxes: np.ndarray, low: float, high: float) -> np.ndarray:
    distance = np.hypot(boxes[:, 0], boxes[:, 1])
    return (distance >= low) & (distance < high)


def _in_sector(boxes: np.ndarray, low_deg: float, high_deg: float) -> np.ndarray:
    azimuth = np.degrees(np.abs(np.arctan2(boxes[:, 1], boxes[:, 0])))
    return (azimuth >= low_deg) & (azimuth < high_deg)


def _as_boxes(boxes, field: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, BOX_DIM)
    if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM:
        raise ValueError(f'{field}: expected (N, {BOX_DIM}) boxes x, y, z, l, w, h, yaw, got {boxes.shape}')
    return boxes
