"""BEV detection AP on hand-made cases whose answers are worked out in the comments.

Most hand cases use the COCO-envelope rule (training/evaluation/detection_metrics.py), whose
sums are easy by hand: interpolated precision on the grid r_k = k/100 is the best precision
reached at recall >= r_k (0 beyond the last recall); AP = sum over k = 10..100 (91 points) of
max(p_k - 0.1, 0), divided by 91 * 0.9 = 81.9. The default, nuScenes' AP as nuscenes-devkit
computes it, is pinned by hand below and against a literal transcription of the devkit's
accumulate + calc_ap on random cases.
"""
from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.detection_metrics import (ENVELOPE_RECALL_GRID, DetectionAccumulator, bev_iou,
                                                   center_distances, greedy_match, interpolated_precision,
                                                   match_detections_to_gt, nuscenes_ap)

CLASSES = ('car', 'pedestrian')
ENVELOPE = 'coco_envelope'


def boxes(*xy, length=4.0, width=2.0, yaw=0.0):
    """(N, 7) boxes at the given BEV centres."""
    return np.array([[x, y, 0.0, length, width, 1.5, yaw] for x, y in xy], dtype=np.float64).reshape(-1, 7)


def classes(*ids):
    return np.array(ids, dtype=np.int64)


def test_three_gt_four_predictions_over_two_frames_by_hand():
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    # Frame 0: GT A (10, 0), B (20, 5). p1 (score .9) 0.2 m from A -> TP; p3 (.7) 0.3 m from B -> TP.
    acc.update(boxes((10.2, 0), (20, 5.3)), classes(0, 0), [0.9, 0.7],
               boxes((10, 0), (20, 5)), classes(0, 0))
    # Frame 1: GT C (30, -5). p2 (.8) sits where A is in frame 0, but frames never mix: 20.6 m
    # from C -> FP; p4 (.6) 0.3 m from C -> TP.
    acc.update(boxes((10, 0), (30.3, -5)), classes(0, 0), [0.8, 0.6], boxes((30, -5)), classes(0))
    result = acc.compute()
    # Score order p1 TP, p2 FP, p3 TP, p4 TP; num_gt = 3:
    #   precision 1/1, 1/2, 2/3, 3/4;  recall 1/3, 1/3, 2/3, 1
    #   envelope (max to the right)   1, 3/4, 3/4, 3/4
    # grid k = 0..33 (r <= 0.33 < 1/3): first point with recall >= r is p1 -> 1.0
    # grid k = 34..100: first point is p3 (recall 2/3) or p4 -> 0.75
    # kept k = 10..33: 24 points * (1 - 0.1) = 21.6;  k = 34..100: 67 * (0.75 - 0.1) = 43.55
    # AP = (21.6 + 43.55) / 81.9 = 65.15 / 81.9 = 0.795482...
    expected = 65.15 / 81.9
    np.testing.assert_allclose(result.ap[0], [expected] * 4)   # all offsets < 0.5 m
    np.testing.assert_allclose(result.precision_curves[0, 0, [0, 33, 34, 100]], [1.0, 1.0, 0.75, 0.75])
    precision, recall = result.raw_curves[0][0]
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 1])
    assert np.isnan(result.ap[1]).all()                          # no pedestrian GT
    assert result.map == pytest.approx(expected)
    assert result.num_gt.tolist() == [3, 0] and result.num_pred.tolist() == [4, 0]


def test_perfect_detection_gives_ap_one():
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes((5, 1), (12, -3), (30, 8)), classes(0, 1, 0), [0.9, 0.8, 0.7],
               boxes((5, 1), (12, -3), (30, 8)), classes(0, 1, 0))
    result = acc.compute()
    np.testing.assert_allclose(result.ap, 1.0)
    assert result.map == pytest.approx(1.0)


def test_no_predictions_gives_zero_and_class_without_gt_is_excluded():
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes(), classes(), [], boxes((5, 1)), classes(0))
    acc.update(boxes(), classes(), [], boxes(), classes())
    result = acc.compute()
    np.testing.assert_allclose(result.ap[0], 0.0)
    assert np.isnan(result.ap_per_class[1])
    assert result.map == pytest.approx(0.0)


def test_nothing_seen_at_all_gives_nan_map():
    result = DetectionAccumulator(CLASSES).compute()
    assert np.isnan(result.ap).all() and np.isnan(result.map)


def test_prediction_1p5_m_off_counts_at_2_and_4_m_only():
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes((11.2, 10.9)), classes(0), [0.5], boxes((10, 10)), classes(0))  # hypot(1.2, 0.9) = 1.5
    result = acc.compute()
    np.testing.assert_allclose(result.ap[0], [0.0, 0.0, 1.0, 1.0])
    assert result.ap_per_class[0] == pytest.approx(0.5)
    assert result.map == pytest.approx(0.5)


def test_distance_threshold_is_strict_like_nuscenes():
    is_tp = match_detections_to_gt(boxes((11, 0)), classes(0), [0.5], boxes((10, 0)), classes(0))
    assert is_tp.tolist() == [[False, False, True, True]]   # exactly 1 m: not < 1 m


def test_class_mismatch_does_not_match():
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes((10, 0)), classes(1), [0.9], boxes((10, 0)), classes(0))
    result = acc.compute()
    np.testing.assert_allclose(result.ap[0], 0.0)      # the car is missed
    assert np.isnan(result.ap[1]).all()                # the pedestrian FP has no GT to be judged on
    is_tp = match_detections_to_gt(boxes((10, 0)), classes(1), [0.9], boxes((10, 0)), classes(0))
    assert is_tp.tolist() == [[False] * 4]
    # A car prediction (.95) on a pedestrian, then a correct car (.9) in another frame:
    # FP, TP -> precision 0, 1/2; recall 0, 1 -> envelope 1/2 everywhere: AP = (0.5 - 0.1)/0.9 = 4/9.
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes((10, 0)), classes(0), [0.95], boxes((10, 0)), classes(1))
    acc.update(boxes((10, 0)), classes(0), [0.9], boxes((10, 0)), classes(0))
    np.testing.assert_allclose(acc.compute().ap[0], 4 / 9)


def test_map_is_mean_over_classes_of_mean_over_thresholds():
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    # car: perfect (AP 1 at every threshold); pedestrian: 1.5 m off (0, 0, 1, 1) -> mean 0.5.
    acc.update(boxes((10, 0), (21.5, 5)), classes(0, 1), [0.9, 0.8], boxes((10, 0), (20, 5)), classes(0, 1))
    result = acc.compute()
    np.testing.assert_allclose(result.ap_per_class, [1.0, 0.5])
    assert result.map == pytest.approx(0.75)


def test_greedy_matching_follows_score_order():
    # GT1 (10, 0), GT2 (20, 0). A (.9) is 1.5 m from GT1, B (.8) is 0.1 m from GT1, C (.7) 0.1 m from GT2.
    pred, scores = boxes((11.5, 0), (10.1, 0), (20.1, 0)), [0.9, 0.8, 0.7]
    gt = boxes((10, 0), (20, 0))
    is_tp = match_detections_to_gt(pred, classes(0, 0, 0), scores, gt, classes(0, 0))
    # At 2 and 4 m the higher-scored A takes GT1 although B is closer; B is left with GT2 (9.9 m) -> FP.
    # At 0.5 and 1 m A matches nothing, so B takes GT1.
    assert is_tp.tolist() == [[False, False, True, True], [True, True, False, False], [True] * 4]
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(pred, classes(0, 0, 0), scores, gt, classes(0, 0))
    ap = acc.compute().ap[0]
    # 0.5 / 1 m: FP, TP, TP -> precision 0, 1/2, 2/3, recall 0, 1/2, 1 -> envelope 2/3 everywhere:
    #   AP = (2/3 - 0.1) / 0.9 = 17/27.
    # 2 / 4 m: TP, FP, TP -> precision 1, 1/2, 2/3, recall 1/2, 1/2, 1 -> envelope 1, 2/3, 2/3:
    #   k = 10..50: 41 * 0.9 = 36.9;  k = 51..100: 50 * (2/3 - 0.1) = 85/3;  AP = (36.9 + 85/3) / 81.9.
    np.testing.assert_allclose(ap, [17 / 27, 17 / 27, (36.9 + 85 / 3) / 81.9, (36.9 + 85 / 3) / 81.9])


def test_greedy_match_takes_closest_unmatched_in_given_order():
    cost = np.array([[1.0, 0.5], [0.4, 3.0]])
    assert greedy_match(cost, cost < 2, order=np.array([0, 1])).tolist() == [1, 0]
    assert greedy_match(cost, cost < 2, order=np.array([1, 0])).tolist() == [1, 0]
    assert greedy_match(cost, cost < 0.45, order=np.array([0, 1])).tolist() == [-1, 0]


def test_low_precision_region_is_discarded():
    # 1 GT; 19 FPs (far away) score above the single TP: precision at the TP = 1/20 = 0.05,
    # the envelope is 0.05 on the whole grid, max(0.05 - 0.1, 0) = 0 -> AP 0 (plain AP would be 0.05).
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    far = [(50.0 + i, 20.0) for i in range(19)]
    acc.update(boxes(*far, (10, 0)), classes(*[0] * 20), np.linspace(0.99, 0.9, 19).tolist() + [0.5],
               boxes((10, 0)), classes(0))
    result = acc.compute()
    np.testing.assert_allclose(result.precision_curves[0, 0], 0.05)
    np.testing.assert_allclose(result.ap[0], 0.0)
    # 4 FPs then the TP: precision 1/5 = 0.2 -> AP = (0.2 - 0.1) / 0.9 = 1/9.
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes(*far[:4], (10, 0)), classes(0, 0, 0, 0, 0), [0.9, 0.8, 0.7, 0.6, 0.5],
               boxes((10, 0)), classes(0))
    np.testing.assert_allclose(acc.compute().ap[0], 1 / 9)


def test_low_recall_region_is_discarded():
    # 20 GT, one perfect prediction: recall 0.05 with precision 1; grid points k >= 6 get 0 and
    # only k >= 10 count -> AP 0.
    gt_xy = [(5.0 * i, 0.0) for i in range(20)]
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes(gt_xy[0]), classes(0), [0.9], boxes(*gt_xy), classes(*[0] * 20))
    np.testing.assert_allclose(acc.compute().ap[0], 0.0)
    # 10 GT, one hit: recall exactly 0.1 = grid point k = 10 (the first one kept): precision 1
    # at k = 0..10, 0 beyond -> AP = (1 - 0.1) / 81.9 = 1/91.
    acc = DetectionAccumulator(CLASSES, interpolation=ENVELOPE)
    acc.update(boxes(gt_xy[0]), classes(0), [0.9], boxes(*gt_xy[:10]), classes(*[0] * 10))
    np.testing.assert_allclose(acc.compute().ap[0], 1 / 91)


def test_nuscenes_interpolation_reproduces_linear_interp_of_raw_curve():
    # 2 GT; FP, TP, TP: recall 0, 1/2, 1; precision 0, 1/2, 2/3 (recall starts at 0: nothing prepended).
    # Linear interpolation: p(r) = r on [0, 0.5], p(r) = 0.5 + (r - 0.5)/3 on [0.5, 1].
    #   k = 11..50: sum (k - 10)/100 = 820/100 = 8.2
    #   k = 51..100: sum (0.4 + (k - 50)/300) = 50 * 0.4 + 1275/300 = 24.25
    #   AP = (8.2 + 24.25) / (90 * 0.9).  The envelope rule gives (2/3 - 0.1)/0.9 = 17/27 instead.
    pred, scores, gt = boxes((40, 0), (10, 0), (20, 0)), [0.9, 0.8, 0.7], boxes((10, 0), (20, 0))
    for interpolation, expected in (('nuscenes', 32.45 / 81), (ENVELOPE, 17 / 27)):
        acc = DetectionAccumulator(CLASSES, interpolation=interpolation)
        acc.update(pred, classes(0, 0, 0), scores, gt, classes(0, 0))
        np.testing.assert_allclose(acc.compute().ap[0], expected)


def test_interpolation_edge_cases():
    np.testing.assert_allclose(interpolated_precision([], [], ENVELOPE), 0.0)
    # No prediction in nuScenes mode: all zeros (the devkit's no_predictions()).
    np.testing.assert_allclose(interpolated_precision([], [], 'nuscenes'), 0.0)
    # First recall 0.5: np.interp holds p[0] to the left, so precision is flat 1 up to 0.5.
    curve = interpolated_precision([1.0, 1.0], [0.5, 1.0], 'nuscenes')
    np.testing.assert_allclose(curve, 1.0)
    assert nuscenes_ap(curve) == pytest.approx(1.0)
    assert ENVELOPE_RECALL_GRID[35] == 7 / 20     # exact grid: 20 GT with 7 hits lands on k = 35
    with pytest.raises(ValueError, match='interpolation'):
        interpolated_precision([1.0], [1.0], 'cubic')


def test_bad_inputs_raise_with_field_names():
    acc = DetectionAccumulator(CLASSES)
    with pytest.raises(ValueError, match='pred_classes'):
        acc.update(boxes((1, 1)), classes(2), [0.5], boxes(), classes())
    with pytest.raises(ValueError, match='gt_boxes'):
        acc.update(boxes(), classes(), [], np.zeros((1, 5)), classes(0))
    with pytest.raises(ValueError, match='pred_scores'):
        acc.update(boxes((1, 1)), classes(0), [np.nan], boxes(), classes())


def test_report_helpers():
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes((10, 0)), classes(0), [0.9], boxes((10, 0)), classes(0))
    result = acc.compute()
    summary = result.to_dict()
    assert summary['classes']['car']['ap'] == [1.0] * 4
    assert summary['classes']['pedestrian']['ap'] == [None] * 4
    assert len(summary['classes']['car']['precision_curves'][0]) == 101
    table = result.format_table()
    assert 'car' in table and 'AP@0.5 m' in table and '1.0000' in table


def test_center_distances():
    np.testing.assert_allclose(center_distances(boxes((3, 4)), boxes((0, 0), (3, 0))), [[5.0, 4.0]])


def _polygon_area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _clip_sutherland_hodgman(subject, clip):
    """Reference for the test only: clip convex polygon `subject` by convex CCW polygon `clip`."""
    output = list(subject)
    for k in range(len(clip)):
        a, b = clip[k], clip[(k + 1) % len(clip)]
        inputs, output = output, []
        inside = [((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) >= 0 for p in inputs]
        for i, p in enumerate(inputs):
            q = inputs[i - 1]
            if inside[i] != inside[i - 1]:
                d1, d2 = p - q, b - a
                t = ((a[0] - q[0]) * d2[1] - (a[1] - q[1]) * d2[0]) / (d1[0] * d2[1] - d1[1] * d2[0])
                output.append(q + t * d1)
            if inside[i]:
                output.append(p)
        if not output:
            return np.zeros((0, 2))
    return np.array(output)


def test_bev_iou_hand_cases():
    square = boxes((0, 0), length=2.0, width=2.0)
    shifted = boxes((1, 0), length=2.0, width=2.0)
    rotated = boxes((0, 0), length=2.0, width=2.0, yaw=np.pi / 4)
    far = boxes((10, 0))
    assert bev_iou(square, square)[0, 0] == pytest.approx(1.0)
    assert bev_iou(square, shifted)[0, 0] == pytest.approx(2.0 / 6.0)   # overlap 1 x 2, union 4 + 4 - 2
    # A 2 m square and itself turned by 45 deg overlap in a regular octagon of inradius 1:
    # area 8 tan(22.5 deg) = 8 (sqrt 2 - 1); IoU = a / (8 - a).
    octagon = 8 * (np.sqrt(2) - 1)
    assert bev_iou(square, rotated)[0, 0] == pytest.approx(octagon / (8 - octagon))
    assert bev_iou(square, far)[0, 0] == 0.0
    assert bev_iou(square, boxes()).shape == (1, 0)


def test_bev_iou_matches_polygon_clipping_on_random_boxes():
    from mtl_perception_ros.core.boxes import bev_corners
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(-2, 2, (30, 2)), np.zeros(30), rng.uniform(0.5, 5, (30, 2)),
                         np.ones(30), rng.uniform(-np.pi, np.pi, 30)])
    b = np.column_stack([rng.uniform(-2, 2, (20, 2)), np.zeros(20), rng.uniform(0.5, 5, (20, 2)),
                         np.ones(20), rng.uniform(-np.pi, np.pi, 20)])
    iou = bev_iou(a, b)
    ca, cb = bev_corners(a)[:, ::-1], bev_corners(b)[:, ::-1]   # corners are clockwise; make them CCW
    expected = np.zeros_like(iou)
    for i in range(len(a)):
        for j in range(len(b)):
            poly = _clip_sutherland_hodgman(ca[i], cb[j])
            inter = _polygon_area(poly) if len(poly) >= 3 else 0.0
            expected[i, j] = inter / (a[i, 3] * a[i, 4] + b[j, 3] * b[j, 4] - inter)
    assert (expected > 0).sum() > 100
    np.testing.assert_allclose(iou, expected, atol=1e-9)


def test_bev_iou_criterion_ap():
    acc = DetectionAccumulator(CLASSES, criterion='bev_iou')
    assert acc.thresholds == (0.5, 0.7)
    # car: exact box -> AP 1; pedestrian: square shifted by half its size (IoU 1/3) -> AP 0.
    acc.update(np.vstack([boxes((10, 0)), boxes((1, 0), length=2, width=2)]), classes(0, 1), [0.9, 0.9],
               np.vstack([boxes((10, 0)), boxes((0, 0), length=2, width=2)]), classes(0, 1))
    result = acc.compute()
    np.testing.assert_allclose(result.ap, [[1.0, 1.0], [0.0, 0.0]])
    assert 'AP@0.5' in result.format_table()


# ----------------------------------------------------------------------------- nuScenes AP, exactly
def test_nuscenes_ap_of_the_three_gt_case_by_hand():
    # The first hand case under the devkit's rule. Score order p1 TP, p2 FP, p3 TP, p4 TP, 3 GT:
    #   recall 1/3, 1/3, 2/3, 1; precision 1, 1/2, 2/3, 3/4.  np.interp on linspace(0, 1, 101):
    #   r < 1/3: 1 (held to the left);  1/3 < r < 2/3: 1/2 + (r - 1/3)/2;  2/3 < r <= 1: 2/3 + (r - 2/3)/4.
    #   calc_ap keeps k = 11..100 (90 points), sum of max(p - 0.1, 0):
    #     k = 11..33: 23 * 0.9 = 20.7
    #     k = 34..66: 33 * 0.4 + (sum k/100 - 33/3) / 2 = 13.2 + (16.5 - 11) / 2 = 15.95
    #     k = 67..100: 34 * 17/30 + (sum k/100 - 34 * 2/3) / 4 = 19.2667 + (28.39 - 22.6667) / 4 = 20.6975
    #   AP = 57.3475 / (90 * 0.9) = 0.707994...
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes((10.2, 0), (20, 5.3)), classes(0, 0), [0.9, 0.7], boxes((10, 0), (20, 5)), classes(0, 0))
    acc.update(boxes((10, 0), (30.3, -5)), classes(0, 0), [0.8, 0.6], boxes((30, -5)), classes(0))
    result = acc.compute()
    np.testing.assert_allclose(result.ap[0], [(20.7 + 15.95 + 34 * 17 / 30 + (28.39 - 68 / 3) / 4) / 81] * 4)
    assert result.ap[0, 0] == pytest.approx(0.707994, abs=1e-6)
    assert result.to_dict()['ap_rule'].startswith('nuScenes AP')


def devkit_ap(frames, class_id: int, dist_th: float) -> float:
    """nuscenes-devkit 1.x accumulate + calc_ap for one class, written out as the devkit does it
    (loops, its sort and its arrays), frames = [(pred_xy, pred_cls, pred_score, gt_xy, gt_cls)]."""
    gts = {i: [(tuple(xy), c) for xy, c in zip(f[3], f[4])] for i, f in enumerate(frames)}
    npos = sum(c == class_id for g in gts.values() for _, c in g)
    preds = [(i, tuple(xy), s) for i, f in enumerate(frames) for xy, c, s in zip(f[0], f[1], f[2]) if c == class_id]
    if npos == 0:
        return float('nan')
    confs = [p[2] for p in preds]
    sortind = [i for (v, i) in sorted((v, i) for (i, v) in enumerate(confs))][::-1]
    tp, fp, taken = [], [], set()
    for ind in sortind:
        frame, xy, _ = preds[ind]
        min_dist, match = np.inf, None
        for gt_idx, (gt_xy, gt_cls) in enumerate(gts[frame]):
            if gt_cls == class_id and (frame, gt_idx) not in taken:
                distance = np.linalg.norm(np.array(gt_xy) - np.array(xy))
                if distance < min_dist:
                    min_dist, match = distance, gt_idx
        if min_dist < dist_th:
            taken.add((frame, match))
            tp.append(1)
            fp.append(0)
        else:
            tp.append(0)
            fp.append(1)
    if len(preds) == 0 or sum(tp) == 0:
        precision = np.zeros(101)
    else:
        tp_sum, fp_sum = np.cumsum(tp).astype(float), np.cumsum(fp).astype(float)
        prec, rec = tp_sum / (fp_sum + tp_sum), tp_sum / float(npos)
        precision = np.interp(np.linspace(0, 1, 101), rec, prec, right=0)
    prec = np.copy(precision)[round(100 * 0.1) + 1:]
    prec -= 0.1
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - 0.1)


@pytest.mark.parametrize('seed', range(12))
def test_nuscenes_ap_equals_the_devkits_on_random_scenes(seed):
    """Random frames with near and far predictions, duplicate detections and tied scores."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(rng.integers(1, 6)):
        gt_xy = rng.uniform(-30, 30, (rng.integers(0, 6), 2))
        gt_cls = rng.integers(0, 2, len(gt_xy))
        near = gt_xy[rng.random(len(gt_xy)) < 0.7]
        near = near + rng.normal(0, 1.2, near.shape)          # within and beyond the thresholds
        pred_xy = np.vstack([near, near[:1] + 0.3, rng.uniform(-30, 30, (rng.integers(0, 4), 2))])
        pred_cls = rng.integers(0, 2, len(pred_xy))
        pred_score = rng.choice([0.9, 0.7, 0.5, 0.3], len(pred_xy)) if seed % 2 else rng.random(len(pred_xy))
        frames.append((pred_xy, pred_cls, pred_score, gt_xy, gt_cls))
    acc = DetectionAccumulator(CLASSES)
    for pred_xy, pred_cls, pred_score, gt_xy, gt_cls in frames:
        acc.update(boxes(*pred_xy), pred_cls, pred_score, boxes(*gt_xy), gt_cls)
    result = acc.compute()
    for c in range(len(CLASSES)):
        expected = [devkit_ap(frames, c, t) for t in result.thresholds]
        np.testing.assert_allclose(result.ap[c], expected, atol=1e-12, equal_nan=True)


def test_equal_scores_follow_the_devkits_order_the_later_prediction_first():
    # One GT at (10, 0); two predictions with the same score, the first 0.3 m off, the second 0.8 m
    # off. The devkit takes the later one first: at 1 m it is the TP and the closer one the FP.
    is_tp = match_detections_to_gt(boxes((10.3, 0), (10.8, 0)), classes(0, 0), [0.5, 0.5], boxes((10, 0)), classes(0))
    assert is_tp[:, 1].tolist() == [False, True]
    is_tp = match_detections_to_gt(boxes((10.3, 0), (10.8, 0)), classes(0, 0), [0.5, 0.5], boxes((10, 0)), classes(0),
                                   ties='stable')
    assert is_tp[:, 1].tolist() == [True, False]


def test_range_bands_keep_ground_truth_and_predictions_by_distance():
    acc_near = DetectionAccumulator(CLASSES, range_band=(0.0, 20.0))
    acc_far = DetectionAccumulator(CLASSES, range_band=(20.0, 40.0))
    for acc in (acc_near, acc_far):
        # near: a perfect detection at 10 m; far: a GT at 30 m missed, an FP at 35 m
        acc.update(boxes((10, 0), (35, 0)), classes(0, 0), [0.9, 0.8], boxes((10, 0), (30, 0)), classes(0, 0))
    near, far = acc_near.compute(), acc_far.compute()
    np.testing.assert_allclose(near.ap[0], 1.0)
    np.testing.assert_allclose(far.ap[0], 0.0)
    assert near.num_gt[0] == far.num_gt[0] == 1 and near.to_dict()['range_band_m'] == [0.0, 20.0]


def devkit_tp_errors(frames, class_id: int) -> list:
    """nuscenes-devkit 1.x accumulate (dist_th_tp = 2 m) + calc_tp for trans, scale and orient
    errors of one class, written out as the devkit does; frames = [(pred_boxes, pred_cls,
    pred_score, gt_boxes, gt_cls)] with (N, 7) boxes x, y, z, l, w, h, yaw."""
    def angle_diff(x, y, period):
        diff = (x - y + period / 2) % period - period / 2
        return diff - 2 * np.pi if diff > np.pi else diff

    def scale_iou(a, b):
        size_a, size_b = a[3:6], b[3:6]
        intersection = np.prod(np.minimum(size_a, size_b))
        return intersection / (np.prod(size_a) + np.prod(size_b) - intersection)
    gts = {i: [(box, c) for box, c in zip(f[3], f[4])] for i, f in enumerate(frames)}
    npos = sum(c == class_id for g in gts.values() for _, c in g)
    preds = [(i, box, s) for i, f in enumerate(frames) for box, c, s in zip(f[0], f[1], f[2]) if c == class_id]
    confs = [p[2] for p in preds]
    sortind = [i for (v, i) in sorted((v, i) for (i, v) in enumerate(confs))][::-1]
    tp, fp, conf, taken = [], [], [], set()
    match = {'trans_err': [], 'scale_err': [], 'orient_err': [], 'conf': []}
    for ind in sortind:
        frame, box, score = preds[ind]
        min_dist, match_gt = np.inf, None
        for gt_idx, (gt_box, gt_cls) in enumerate(gts[frame]):
            if gt_cls == class_id and (frame, gt_idx) not in taken:
                distance = np.linalg.norm(gt_box[:2] - box[:2])
                if distance < min_dist:
                    min_dist, match_gt = distance, gt_idx
        if min_dist < 2.0:
            taken.add((frame, match_gt))
            tp.append(1)
            fp.append(0)
            conf.append(score)
            gt_box = gts[frame][match_gt][0]
            match['trans_err'].append(np.linalg.norm(gt_box[:2] - box[:2]))
            match['scale_err'].append(1 - scale_iou(gt_box, box))
            match['orient_err'].append(abs(angle_diff(gt_box[6], box[6], 2 * np.pi)))
            match['conf'].append(score)
        else:
            tp.append(0)
            fp.append(1)
            conf.append(score)
    if npos == 0 or len(match['trans_err']) == 0:
        return [1.0, 1.0, 1.0]
    tp, fp = np.cumsum(tp).astype(float), np.cumsum(fp).astype(float)
    rec = tp / float(npos)
    rec_interp = np.linspace(0, 1, 101)
    conf = np.interp(rec_interp, rec, np.array(conf), right=0)
    out = []
    for key in ('trans_err', 'scale_err', 'orient_err'):
        values = np.array(match[key], dtype=float)
        tmp = np.cumsum(values) / np.arange(1, len(values) + 1)
        on_grid = np.interp(conf[::-1], np.array(match['conf'])[::-1], tmp[::-1])[::-1]
        non_zero = np.nonzero(conf)[0]
        last = non_zero[-1] if len(non_zero) else 0
        out.append(1.0 if last < 11 else float(np.mean(on_grid[11:last + 1])))
    return out


@pytest.mark.parametrize('seed', range(8))
def test_tp_errors_equal_the_devkits_on_random_scenes(seed):
    rng = np.random.default_rng(100 + seed)
    frames = []
    for _ in range(rng.integers(2, 6)):
        n = rng.integers(1, 7)
        gt = np.column_stack([rng.uniform(-30, 30, (n, 2)), np.zeros(n), rng.uniform(1, 5, (n, 3)),
                              rng.uniform(-np.pi, np.pi, n)])
        pred = gt[rng.random(n) < 0.8].copy()
        pred[:, :2] += rng.normal(0, 0.8, (len(pred), 2))
        pred[:, 3:6] *= rng.uniform(0.7, 1.3, (len(pred), 3))
        pred[:, 6] += rng.normal(0, 0.5, len(pred)) + np.pi * (rng.random(len(pred)) < 0.2)
        noise = np.column_stack([rng.uniform(-30, 30, (2, 2)), np.zeros(2), np.full((2, 3), 2.0), np.zeros(2)])
        pred = np.vstack([pred, noise])
        frames.append((pred, rng.integers(0, 2, len(pred)) if seed % 3 == 0 else np.zeros(len(pred), np.int64),
                       rng.random(len(pred)), gt, np.zeros(n, np.int64) if seed % 3 else rng.integers(0, 2, n)))
    acc = DetectionAccumulator(CLASSES)
    for frame in frames:
        acc.update(*frame)
    result = acc.compute()
    for c in range(len(CLASSES)):
        if result.num_gt[c]:
            np.testing.assert_allclose(result.tp_errors[c], devkit_tp_errors(frames, c), atol=1e-12)
    assert set(result.to_dict()['tp_error_means']) == {'trans_err_m', 'scale_err', 'orient_err_rad'}


def test_tp_errors_by_hand():
    # One car, found 0.5 m off (3-4-5: dx 0.3, dy 0.4), half as long, turned by 0.2 rad: recall 1 at
    # precision 1, so the running means are these values on the whole grid.
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes((10.3, 0.4), length=2.0, yaw=0.2), classes(0), [0.8], boxes((10, 0)), classes(0))
    errors = acc.compute().tp_errors[0]
    np.testing.assert_allclose(errors, [0.5, 1 - 0.5, 0.2], atol=1e-12)      # scale: IoU 1/2
    # No true positive within 2 m: every error is 1 (the devkit's convention).
    acc = DetectionAccumulator(CLASSES)
    acc.update(boxes((13, 0)), classes(0), [0.8], boxes((10, 0)), classes(0))
    np.testing.assert_allclose(acc.compute().tp_errors[0], 1.0)
