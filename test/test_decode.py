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


# ----------------------------------------------------------------------------- decode_detections_np

def strong_peaks_maps(rng, num_classes=3, peaks=12):
    """Background logits well below 0.3 plus `peaks` strong peaks of distinct scores, some on the
    borders and corners of the map (where the max-pool's -inf padding matters), random regression."""
    height, width = GRID.output_shape
    logits = rng.normal(-5.0, 0.7, (num_classes, height, width)).astype(np.float32)
    cells = [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (0, 17), (40, width - 1)]
    cells += [tuple(rng.integers(1, height - 1, 2)) for _ in range(peaks - len(cells))]
    for i, (row, col) in enumerate(cells):
        logits[i % num_classes, row, col] = 3.0 - 0.45 * i       # sigmoid 0.95 .. 0.1, no two equal
    reg = rng.normal(0.0, 1.0, (8, height, width)).astype(np.float32)
    return logits, reg


def assert_same_detections(det_np, det_torch):
    assert len(det_np) == len(det_torch)
    np.testing.assert_array_equal(det_np.classes, det_torch.classes)
    np.testing.assert_allclose(det_np.scores, det_torch.scores, rtol=1e-6)
    np.testing.assert_allclose(det_np.boxes, det_torch.boxes, rtol=1e-5, atol=1e-5)
    assert det_np.boxes.dtype == np.float32 and det_np.classes.dtype == np.int64 and det_np.scores.dtype == np.float32


def decode_both(logits, reg, **options):
    from mtl_perception_ros.core.decode import decode_detections_np
    [expected] = decode_detections(torch.from_numpy(logits[None]), torch.from_numpy(reg[None]), GRID, **options)
    return decode_detections_np(logits, reg, GRID, **options), expected


@pytest.mark.parametrize('options', [{}, {'score_threshold': 0.5}, {'score_threshold': 0.05},
                                     {'max_detections': 5}, {'max_detections': 0}, {'nms_radius_m': 3.0},
                                     {'nms_radius_m': {0: 2.0, 2: 5.0}, 'score_threshold': 0.05}],
                         ids=lambda options: ','.join(f'{k}={v}' for k, v in options.items()) or 'defaults')
def test_numpy_decoding_gives_the_torch_detections(options):
    logits, reg = strong_peaks_maps(np.random.default_rng(len(str(options))))
    det_np, det_torch = decode_both(logits, reg, **options)
    assert_same_detections(det_np, det_torch)
    if options.get('max_detections') == 5:
        assert len(det_np) == 5                     # fewer than the 9 peaks above 0.3: top-K cuts
    elif not options:
        assert len(det_np) == 9


def test_numpy_decoding_suppresses_near_peaks_like_torch():
    """Peaks two and four cells apart in the same class and across classes: NMS by one radius and
    by a per-class one drops the same boxes in both."""
    logits = np.full((2,) + GRID.output_shape, -8.0, np.float32)
    reg = np.zeros((8,) + GRID.output_shape, np.float32)
    reg[7] = 1.0
    for i, (cls, row, col) in enumerate([(0, 10, 10), (0, 12, 10), (0, 10, 14), (1, 10, 12), (1, 30, 30),
                                         (1, 31, 32)]):
        logits[cls, row, col] = 3.0 - 0.3 * i
    # Zero offsets: cell (r, c) decodes to (r, c - 32) m, so the pairs are 2, 4 and 2.2 m apart.
    for radius, survivors in ((3.0, 4), (5.0, 3), ({1: 3.0}, 5), ({0: 4.5, 1: 0.0}, 4)):
        det_np, det_torch = decode_both(logits, reg, nms_radius_m=radius)
        assert_same_detections(det_np, det_torch)
        assert len(det_np) == survivors, radius


def test_a_plateau_keeps_all_its_cells_in_both():
    """Equal neighbours are all peaks (torch.topk orders them in no set way: compared as sets)."""
    logits = np.full((2,) + GRID.output_shape, -8.0, np.float32)
    reg = np.random.default_rng(0).normal(size=(8,) + GRID.output_shape).astype(np.float32)
    logits[1, 0, 0] = logits[1, 0, 1] = logits[1, 1, 0] = 2.0
    logits[0, 20, 20] = 1.0
    det_np, det_torch = decode_both(logits, reg)
    assert len(det_np) == len(det_torch) == 4

    def as_set(det):
        return sorted(zip(det.classes.tolist(), np.round(det.scores, 6).tolist(), map(tuple, det.boxes.round(4))))
    assert as_set(det_np) == as_set(det_torch)


def test_numpy_decoding_refuses_maps_of_the_wrong_shape():
    from mtl_perception_ros.core.decode import decode_detections_np
    with pytest.raises(ValueError, match=r'one frame, bbox_heatmap \[C, H, W\]'):
        decode_detections_np(np.zeros((1, 4, 64, 64)), np.zeros((1, 8, 64, 64)), GRID)
    with pytest.raises(ValueError, match='64x64'):
        decode_detections_np(np.zeros((4, 32, 32)), np.zeros((8, 32, 32)), GRID)
    with pytest.raises(ValueError, match='8 channels'):
        decode_detections_np(np.zeros((4, 64, 64)), np.zeros((7, 64, 64)), GRID)
    with pytest.raises(ValueError, match='max_detections must be >= 0'):
        decode_detections_np(np.zeros((4, 64, 64)), np.zeros((8, 64, 64)), GRID, max_detections=-1)


def test_decode_regression_of_numpy_arrays_and_tensors_agree():
    reg = np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32)
    reg[0, 3] = 9.0                                      # a log size past MAX_LOG_SIZE is clamped in both
    rows, cols = np.arange(50) % 64, (np.arange(50) * 7) % 64
    boxes = decode_regression(reg, rows, cols, GRID)
    boxes_torch = decode_regression(torch.from_numpy(reg), torch.from_numpy(rows), torch.from_numpy(cols), GRID)
    assert boxes.dtype == np.float32 and boxes_torch.dtype == torch.float32
    np.testing.assert_allclose(boxes, boxes_torch.numpy(), rtol=1e-6, atol=1e-6)
    assert np.isclose(boxes[0, 3], np.exp(5.0))
