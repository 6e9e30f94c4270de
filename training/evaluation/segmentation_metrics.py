"""Semantic segmentation metrics from a dataset-level confusion matrix.

The confusion matrix has rows = ground-truth class, columns = predicted class (K x K, int64).
Pixels whose label is the ignore index (255) or any other value >= K are left out.

Per-class IoU = tp / (tp + fp + fn) = C[k, k] / (row_k + col_k - C[k, k]). A class with union 0
(never in the labels nor in the predictions over the whole dataset) has an undefined IoU: NaN,
and mIoU is the mean over the other classes. A class present only in the predictions has IoU 0
and counts. Per-class accuracy (recall) = C[k, k] / row_k, NaN for classes absent from the
labels; its mean is over classes present in the labels.
"""
from __future__ import annotations

import numpy as np

from mtl_perception_ros.core.labels import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) int predictions and (H, W) int labels -> (K, K) int64 counts, rows = label.

    Labels >= num_classes (including IGNORE_INDEX = 255) are ignored; predictions must lie in
    0..K-1 on the counted pixels.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f'prediction shape {pred.shape} != label shape {label.shape}')
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(label.dtype, np.integer)):
        raise ValueError(f'expected integer class ids, got prediction {pred.dtype}, label {label.dtype}')
    label = label.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    counted = (label >= 0) & (label < num_classes)
    label, pred = label[counted], pred[counted]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f'prediction class ids must be in 0..{num_classes - 1}, got '
                         f'{pred.min()}..{pred.max()}')
    return np.bincount(label * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """(K, K) confusion -> (K,) IoU, NaN where the union is 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)


def accuracy_per_class(confusion: np.ndarray) -> np.ndarray:
    """(K, K) confusion -> (K,) fraction of each class's labelled pixels predicted right, NaN if none."""
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), total, out=np.full(len(total), np.nan), where=total > 0)


def pixel_accuracy(confusion: np.ndarray) -> float:
    """(K, K) confusion -> fraction of counted pixels predicted right (NaN when none counted)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total > 0 else float('nan')


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


class SegmentationAccumulator:
    """Sums confusion matrices over a dataset; compute() gives IoU, mIoU and accuracies."""

    def __init__(self, num_classes: int, class_names=None, ignore_index: int = IGNORE_INDEX):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class names for {num_classes} classes')
        if 0 <= ignore_index < num_classes:
            raise ValueError(f'ignore_index {ignore_index} collides with a class id (K={num_classes})')
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(k) for k in range(num_classes))
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one image (or a batch with the same shape): pred (H, W) ints, label (H, W) uint8."""
        self.confusion += confusion_matrix(pred, label, self.num_classes)

    def compute(self) -> dict:
        """dict: confusion_matrix (K, K), iou (K,), miou, pixel_accuracy, class_accuracy (K,),
        mean_class_accuracy, num_pixels, class_names. NaN marks undefined values (see module doc)."""
        iou = iou_per_class(self.confusion)
        class_accuracy = accuracy_per_class(self.confusion)
        return {
            'class_names': self.class_names,
            'confusion_matrix': self.confusion.copy(),
            'iou': iou,
            'miou': _nanmean(iou),
            'pixel_accuracy': pixel_accuracy(self.confusion),
            'class_accuracy': class_accuracy,
            'mean_class_accuracy': _nanmean(class_accuracy),
            'num_pixels': int(self.confusion.sum()),
        }
