"""Box regression coding and heatmap decoding: targets in, the same boxes out."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.box_coding import decode_regression, encode_regression
from mtl_perception_ros.core.decode import decode_detections
from training.data.targets import build_targets

GRID = BevGrid()  # output: 64 x 64 cells of 1 m, x 0..64, y -32..32

# Yaw of both signs, near +-pi, centres on and near cell edges, different sizes and heights.
BOXES = np.array([
    [10.25, -5.75, -0.8, 4.5, 1.9, 1.6, 0.3],
    [20.00, 3.00, -0.5, 12.0, 2.6, 3.5, -2.9],
    [35.99, 15.01, 0.2, 0.7, 0.6, 1.8, 3.1],
    [50.50, -20.40, -1.0, 1.8, 0.7, 1.7, -0.01],
    [5.10, 30.90, -0.2, 4.0, 1.8, 1.5, -1.5708],
], dtype=np.float32)
CLASSES = np.array([0, 1, 2, 3, 0])


def test_encode_gives_cells_and_offsets_worked_out_by_hand():
    reg, row_col, in_grid = encode_regression(BOXES[:1], GRID)
    # x 10.25 -> row 10 + 0.25; y -5.75 -> col 26 + 0.25.
    assert row_col.tolist() == [[10, 26]] and in_grid.tolist() == [True]
    np.testing.assert_allclose(reg[0], [0.25, 0.25, -0.8, np.log(4.5), np.log(1.9), np.log(1.6),
                                        np.sin(0.3), np.cos(0.3)], rtol=1e-6)
    assert reg.dtype == np.float32 and row_col.dtype == np.int64


def test_encode_decode_round_trip_numpy_and_torch():
    reg, row_col, in_grid = encode_regression(BOXES, GRID)
    assert in_grid.all()
    boxes = decode_regression(reg, row_col[:, 0], row_col[:, 1], GRID)
    assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes[:, :6], BOXES[:, :6], atol=1e-4)
    np.testing.assert_allclose(boxes[:, 6], BOXES[:, 6], atol=1e-5)
    boxes_torch = decode_regression(torch.from_numpy(reg).double(), torch.from_numpy(row_col[:, 0]),
                                    torch.from_numpy(row_col[:, 1]), GRID)
    assert boxes_torch.dtype == torch.float64
    np.testing.assert_allclose(boxes_torch.numpy(), boxes, atol=1e-4)


def test_encode_marks_centres_outside_the_grid():
    boxes = np.array([[-0.1, 0, 0, 1, 1, 1, 0], [64.0, 0, 0, 1, 1, 1, 0], [1, 32.0, 0, 1, 1, 1, 0],
                      [63.99, -32.0, 0, 1, 1, 1, 0]])
    _, row_col, in_grid = encode_regression(boxes, GRID)
    assert in_grid.tolist() == [False, False, False, True]
    assert row_col[3].tolist() == [63, 0]


def targets_as_model_outputs(boxes, classes, num_classes=4):
    """Scatter the regression targets into maps and turn the heatmap into logits."""
    targets = build_targets(boxes, classes, GRID, num_classes)
    height, width = GRID.output_shape
    reg_map = np.zeros((8, height * width), np.float32)
    reg_map[:, targets.ind[targets.mask]] = targets.reg[targets.mask].T
    logits = torch.logit(torch.from_numpy(targets.heatmap), eps=1e-6)
    return logits[None], torch.from_numpy(reg_map.reshape(1, 8, height, width))


def test_targets_decode_back_to_the_boxes():
    heatmap_logits, reg_map = targets_as_model_outputs(BOXES, CLASSES)
    [det] = decode_detections(heatmap_logits, reg_map, GRID, score_threshold=0.3)
    assert len(det) == len(BOXES)
    order = np.lexsort((det.boxes[:, 1], det.boxes[:, 0]))
    expected = np.lexsort((BOXES[:, 1], BOXES[:, 0]))
    np.testing.assert_allclose(det.boxes[order, :6], BOXES[expected, :6], atol=1e-4)
    np.testing.assert_allclose(det.boxes[order, 6], BOXES[expected, 6], atol=1e-5)
    assert det.classes[order].tolist() == CLASSES[expected].tolist()
    np.testing.assert_allclose(det.scores, 1.0, atol=1e-5)
    assert det.boxes.dtype == np.float32 and det.classes.dtype == np.int64 and det.scores.dtype == np.float32


def test_batch_threshold_and_max_detections():
    logits_a, reg_a = targets_as_model_outputs(BOXES, CLASSES)
    logits_b, reg_b = targets_as_model_outputs(BOXES[:2], CLASSES[:2])
    logits = torch.cat([logits_a, logits_b])
    # Item b's truck (class 1) at a quarter of the confidence: peak 0.25 < 0.3, so gone.
    logits[1, 1] = torch.logit(torch.sigmoid(logits[1, 1]) * 0.25)
    dets = decode_detections(logits, torch.cat([reg_a, reg_b]), GRID, score_threshold=0.3)
    assert [len(d) for d in dets] == [5, 1]
    assert dets[1].classes.tolist() == [0]
    assert len(decode_detections(logits, torch.cat([reg_a, reg_b]), GRID, max_detections=3)[0]) == 3
    assert len(decode_detections(logits, torch.cat([reg_a, reg_b]), GRID, score_threshold=0.1)[1]) == 2


def test_maps_sliced_from_one_head_output_decode_the_same():
    logits, reg = targets_as_model_outputs(BOXES, CLASSES)
    # One [B, 4 + 8, H, W] tensor for a batch of two, split by channel: non-contiguous views.
    head = torch.cat([torch.cat([logits, reg], dim=1)] * 2)
    assert not head[:, 4:].is_contiguous()
    dets = decode_detections(head[:, :4], head[:, 4:], GRID)
    [expected] = decode_detections(logits, reg, GRID)
    for det in dets:
        np.testing.assert_array_equal(det.boxes, expected.boxes)


def test_circle_nms_suppresses_close_boxes_of_the_same_class_only():
    height, width = GRID.output_shape
    logits = torch.full((1, 2, height, width), -10.0)
    reg = torch.zeros((1, 8, height, width))
    reg[:, 7] = 1.0  # cos yaw
    logits[0, 0, 10, 10] = 3.0      # car at cell (10, 10)
    logits[0, 0, 12, 10] = 2.0      # car 2 m away, weaker
    logits[0, 0, 10, 20] = 1.0      # car 10 m away
    logits[0, 1, 10, 12] = 1.5      # other class 2 m away
    assert len(decode_detections(logits, reg, GRID)[0]) == 4
    [det] = decode_detections(logits, reg, GRID, nms_radius_m=3.0)
    # Cell (r, c) with zero offsets decodes to x = r m, y = c - 32 m.
    centres = sorted(map(tuple, det.boxes[:, :2].round(3).tolist()))
    assert centres == [(10.0, -22.0), (10.0, -20.0), (10.0, -12.0)]
    [det] = decode_detections(logits, reg, GRID, nms_radius_m={1: 3.0})
    assert len(det) == 4


def test_decode_rejects_maps_that_do_not_match_the_grid():
    with pytest.raises(ValueError, match='64x64'):
        decode_detections(torch.zeros(1, 4, 32, 32), torch.zeros(1, 8, 32, 32), GRID)
    with pytest.raises(ValueError, match='8 channels'):
        decode_detections(torch.zeros(1, 4, 64, 64), torch.zeros(1, 7, 64, 64), GRID)
