"""Semantic segmentation metrics on a 3x3 hand case."""
from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.segmentation_metrics import (SegmentationAccumulator, accuracy_per_class, confusion_matrix,
                                                      iou_per_class, pixel_accuracy)

LABEL = np.array([[0, 0, 1],
                  [1, 2, 255],
                  [2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1],
                 [1, 2, 0],
                 [2, 0, 2]], dtype=np.int64)
# Counted (label, pred) pairs, the two 255 pixels left out:
#   row 0: (0,0) (0,1) (1,1);  row 1: (1,1) (2,2);  row 2: (2,2) (2,0)
# Confusion (rows = label):  [[1, 1, 0],
#                             [0, 2, 0],
#                             [1, 0, 2]]
CONFUSION = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 2]])


def test_confusion_matrix_ignores_255():
    np.testing.assert_array_equal(confusion_matrix(PRED, LABEL, 3), CONFUSION)


def test_iou_accuracy_by_hand():
    acc = SegmentationAccumulator(3, ('road', 'car', 'sky'))
    acc.update(PRED, LABEL)
    result = acc.compute()
    # IoU_k = C[k,k] / (row_k + col_k - C[k,k]):
    #   class 0: 1 / (2 + 2 - 1) = 1/3;  class 1: 2 / (2 + 3 - 2) = 2/3;  class 2: 2 / (3 + 2 - 2) = 2/3
    np.testing.assert_allclose(result['iou'], [1 / 3, 2 / 3, 2 / 3])
    assert result['miou'] == pytest.approx(5 / 9)
    assert result['pixel_accuracy'] == pytest.approx(5 / 7)          # trace 5 of 7 counted pixels
    np.testing.assert_allclose(result['class_accuracy'], [1 / 2, 2 / 2, 2 / 3])
    assert result['mean_class_accuracy'] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert result['num_pixels'] == 7
    assert result['class_names'] == ('road', 'car', 'sky')


def test_labels_at_or_above_num_classes_are_ignored():
    label = LABEL.copy()
    label[0, 0] = 5      # was a correct class-0 pixel
    cm = confusion_matrix(PRED, label, 3)
    assert cm.sum() == 6 and cm[0, 0] == 0


def test_class_absent_everywhere_is_nan_and_excluded_but_predicted_only_class_counts():
    acc = SegmentationAccumulator(4)
    acc.update(PRED, LABEL)
    result = acc.compute()
    assert np.isnan(result['iou'][3]) and np.isnan(result['class_accuracy'][3])
    assert result['miou'] == pytest.approx(5 / 9)
    # Predict class 3 on the (2, 0)-labelled pixel that was a class-2 hit: IoU_3 = 0 now counts.
    pred = PRED.copy()
    pred[2, 0] = 3
    acc = SegmentationAccumulator(4)
    acc.update(pred, LABEL)
    result = acc.compute()
    # class 2: 1 / (3 + 1 - 1) = 1/3; classes 0, 1 unchanged; class 3: 0 / 1.
    np.testing.assert_allclose(result['iou'], [1 / 3, 2 / 3, 1 / 3, 0.0])
    assert result['miou'] == pytest.approx((1 / 3 + 2 / 3 + 1 / 3 + 0) / 4)
    assert np.isnan(result['class_accuracy'][3])          # no class-3 label pixel


def test_accumulates_over_images_and_resets():
    acc = SegmentationAccumulator(3)
    acc.update(PRED, LABEL)
    acc.update(LABEL.astype(np.int64) % 255, LABEL)       # a perfect image (255 -> 0 is ignored anyway)
    perfect = np.diag([2, 2, 3])
    np.testing.assert_array_equal(acc.compute()['confusion_matrix'], CONFUSION + perfect)
    assert acc.compute()['pixel_accuracy'] == pytest.approx(12 / 14)
    acc.reset()
    result = acc.compute()
    assert result['num_pixels'] == 0 and np.isnan(result['miou']) and np.isnan(result['pixel_accuracy'])


def test_helpers_on_matrix():
    np.testing.assert_allclose(iou_per_class(np.zeros((2, 2))), [np.nan, np.nan])
    assert pixel_accuracy(CONFUSION) == pytest.approx(5 / 7)
    np.testing.assert_allclose(accuracy_per_class(CONFUSION), [0.5, 1.0, 2 / 3])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='shape'):
        confusion_matrix(PRED[:2], LABEL, 3)
    with pytest.raises(ValueError, match='0..2'):
        confusion_matrix(PRED + 1, LABEL, 3)
    with pytest.raises(ValueError, match='integer'):
        confusion_matrix(PRED.astype(np.float32), LABEL, 3)
    with pytest.raises(ValueError, match='ignore_index'):
        SegmentationAccumulator(3, ignore_index=1)
