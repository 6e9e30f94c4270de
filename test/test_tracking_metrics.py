"""CLEAR-MOT and IDF1 on hand-made sequences; the numbers are worked out in the comments.

Each frame is (GT objects, hypotheses), each a list of (id, x, y, class); matching at 2 m.
"""
from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.tracking_metrics import TrackingAccumulator, count_fragmentations

CLASSES = ('car', 'pedestrian')


def unpack(objects):
    ids = np.array([o[0] for o in objects], dtype=np.int64)
    xy = np.array([[o[1], o[2]] for o in objects], dtype=np.float64).reshape(-1, 2)
    cls = np.array([o[3] for o in objects], dtype=np.int64)
    return ids, xy, cls


def evaluate(frames, acc=None):
    acc = acc or TrackingAccumulator(CLASSES, max_distance_m=2.0)
    for gt, hyp in frames:
        acc.update(*unpack(gt), *unpack(hyp))
    return acc.compute()


def test_perfect_tracking():
    frames = [([(1, t, 0, 0), (2, t, 5, 0)], [(7, t + 0.5, 0, 0), (8, t, 5.5, 0)]) for t in range(4)]
    car = evaluate(frames)['car']
    assert (car['num_gt'], car['num_matches'], car['fn'], car['fp'], car['idsw'], car['frag']) == (8, 8, 0, 0, 0, 0)
    assert car['mota'] == 1.0 and car['idf1'] == 1.0
    assert car['motp_m'] == pytest.approx(0.5)


def test_id_switch_in_the_middle():
    # GT 1 drives along x for 4 frames; hypothesis 10 follows it in frames 0-1, hypothesis 11 in 2-3.
    frames = [([(1, t, 0, 0)], [(10 if t < 2 else 11, t + 0.1, 0, 0)]) for t in range(4)]
    car = evaluate(frames)['car']
    # Matches 4, FN 0, FP 0, one switch (frame 2): MOTA = 1 - 1/4 = 0.75.
    assert (car['num_matches'], car['fn'], car['fp'], car['idsw'], car['frag']) == (4, 0, 0, 1, 0)
    assert car['mota'] == pytest.approx(0.75)
    # IDF1: GT 1 can be given to 10 or 11, each co-occurring 2 frames -> IDTP 2, IDFN 2, IDFP 2;
    # IDF1 = 2*2 / (4 + 4) = 0.5.
    assert (car['idtp'], car['idfn'], car['idfp']) == (2, 2, 2)
    assert car['idf1'] == pytest.approx(0.5)


def test_fragmentation():
    # GT 1 exists for 5 frames; hypothesis 10 is lost in frame 2 and comes back with the same id.
    frames = [([(1, t, 0, 0)], [(10, t, 0.5, 0)] if t != 2 else []) for t in range(5)]
    car = evaluate(frames)['car']
    # FN 1 (frame 2), frag 1, no switch: MOTA = 1 - 1/5 = 0.8; IDTP 4, IDF1 = 2*4 / (5 + 4) = 8/9.
    assert (car['fn'], car['fp'], car['idsw'], car['frag']) == (1, 0, 0, 1)
    assert car['mota'] == pytest.approx(0.8)
    assert car['idf1'] == pytest.approx(8 / 9)


def test_false_positive_track():
    # GT 1 tracked by 10 for 3 frames; a ghost track 99 10 m away for the same 3 frames.
    frames = [([(1, t, 0, 0)], [(10, t, 0.2, 0), (99, t, 10, 0)]) for t in range(3)]
    car = evaluate(frames)['car']
    # FP 3: MOTA = 1 - 3/3 = 0; IDTP 3, IDFP 3: IDF1 = 2*3 / (3 + 6) = 2/3, IDP 1/2, IDR 1.
    assert (car['fn'], car['fp'], car['idsw']) == (0, 3, 0)
    assert car['mota'] == pytest.approx(0.0)
    assert car['idf1'] == pytest.approx(2 / 3)
    assert car['idp'] == pytest.approx(0.5) and car['idr'] == pytest.approx(1.0)


def test_previous_correspondence_is_kept_over_a_closer_hungarian_choice():
    frames = [
        # Frame 0: a=1 at (0, 0) <- hyp 10 at (0.5, 0); b=2 at (3, 0) <- hyp 11 at (3.5, 0).
        ([(1, 0, 0, 0), (2, 3, 0, 0)], [(10, 0.5, 0, 0), (11, 3.5, 0, 0)]),
        # Frame 1: a (0, 0), b (2, 0); hyp 10 at (1.5, 0), hyp 11 at (0.5, 0). Hungarian alone would
        # pick a-11 + b-10 (0.5 + 0.5 m), but a-10 (1.5 m) and b-11 (1.5 m) are still within 2 m,
        # so CLEAR-MOT keeps them: no switch.
        ([(1, 0, 0, 0), (2, 2, 0, 0)], [(10, 1.5, 0, 0), (11, 0.5, 0, 0)]),
    ]
    car = evaluate(frames)['car']
    assert car['idsw'] == 0 and car['num_matches'] == 4
    assert car['motp_m'] == pytest.approx((0.5 + 0.5 + 1.5 + 1.5) / 4)


def test_last_match_survives_a_gap():
    # GT 1 matched by 10 in frame 0, nobody in frame 1, then hypotheses 10 (1.5 m) and 12 (0.1 m)
    # in frame 2: the old pairing 1-10 is resumed (no switch) and 12 is a FP.
    frames = [([(1, 0, 0, 0)], [(10, 0, 0, 0)]),
              ([(1, 0, 0, 0)], []),
              ([(1, 0, 0, 0)], [(10, 1.5, 0, 0), (12, 0.1, 0, 0)])]
    car = evaluate(frames)['car']
    assert (car['fn'], car['fp'], car['idsw'], car['frag']) == (1, 1, 0, 1)
    # Same without 10 in frame 2: 12 takes over -> a switch, although a frame apart.
    frames[2] = ([(1, 0, 0, 0)], [(12, 0.1, 0, 0)])
    car = evaluate(frames)['car']
    assert (car['fn'], car['fp'], car['idsw'], car['frag']) == (1, 0, 1, 1)


def test_distance_threshold_is_strict():
    car = evaluate([([(1, 0, 0, 0)], [(10, 2.0, 0, 0)])])['car']
    assert (car['num_matches'], car['fn'], car['fp']) == (0, 1, 1)


def test_classes_are_separate_and_overall_sums_counts():
    frames = [
        # car 1 tracked by car hyp 10; pedestrian 5 "tracked" by hyp 20 labelled car -> no match.
        ([(1, 0, 0, 0), (5, 10, 0, 1)], [(10, 0, 0.3, 0), (20, 10, 0.3, 0)]),
        ([(1, 1, 0, 0), (5, 10, 1, 1)], [(10, 1, 0.3, 0), (21, 10, 1.2, 1)]),
    ]
    result = evaluate(frames)
    car, ped, overall = result['car'], result['pedestrian'], result['overall']
    # car: 2 GT, 2 matches, FP 1 (hyp 20 in frame 0) -> MOTA 1 - 1/2 = 0.5.
    assert (car['num_gt'], car['num_matches'], car['fp'], car['fn']) == (2, 2, 1, 0)
    assert car['mota'] == pytest.approx(0.5)
    # pedestrian: 2 GT, frame 0 missed, frame 1 matched by 21 -> FN 1, MOTA 0.5, no fragmentation
    # (the trajectory's matched span starts in frame 1).
    assert (ped['num_gt'], ped['num_matches'], ped['fp'], ped['fn'], ped['frag']) == (2, 1, 0, 1, 0)
    assert ped['mota'] == pytest.approx(0.5)
    # overall: FN 1 + FP 1 over 4 GT -> MOTA 0.5; IDTP 2 + 1 = 3, IDF1 = 6 / (4 + 4) = 0.75.
    assert (overall['num_gt'], overall['fn'], overall['fp'], overall['idtp']) == (4, 1, 1, 3)
    assert overall['mota'] == pytest.approx(0.5)
    assert overall['idf1'] == pytest.approx(0.75)
    assert overall['num_frames'] == 2


def test_sequences_do_not_share_identities():
    acc = TrackingAccumulator(CLASSES)
    evaluate([([(1, 0, 0, 0)], [(10, 0, 0, 0)])], acc)
    acc.start_sequence()
    # Same GT id 1 in a new scene, tracked by hyp 11: a new object, so no switch and IDTP counts it.
    car = evaluate([([(1, 50, 0, 0)], [(11, 50, 0, 0)])], acc)['car']
    assert car['idsw'] == 0 and car['idtp'] == 2 and car['idf1'] == 1.0


def test_no_gt_gives_nan_mota():
    result = evaluate([([], [(10, 0, 0, 0)])])
    assert np.isnan(result['car']['mota']) and result['car']['fp'] == 1
    assert np.isnan(result['pedestrian']['idf1'])


def test_count_fragmentations():
    assert count_fragmentations([False, True, False, False, True, False, True, False]) == 2
    assert count_fragmentations([False, False]) == 0
    assert count_fragmentations([True, True]) == 0


def test_bad_inputs_raise():
    acc = TrackingAccumulator(CLASSES)
    with pytest.raises(ValueError, match='duplicate'):
        acc.update(*unpack([(1, 0, 0, 0), (1, 5, 0, 0)]), *unpack([]))
    with pytest.raises(ValueError, match='hyp_classes'):
        acc.update(*unpack([]), *unpack([(1, 0, 0, 7)]))
    with pytest.raises(ValueError, match='gt_xy'):
        acc.update([1, 2], np.zeros((3, 2)), [0, 0], *unpack([]))
