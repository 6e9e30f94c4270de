"""The BEV tracker on hand-made sequences whose answers are worked out on paper."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mtl_perception_ros.core.tracking import Tracker, TrackerConfig, gates_for_class_names

CAR, TRUCK, PEDESTRIAN, CYCLIST = 0, 1, 2, 3
DT = 0.1


def box(x, y, yaw=0.0, length=4.0, width=2.0):
    return [x, y, 0.0, length, width, 1.5, yaw]


def frame(tracker, boxes, classes, stamp_s, scores=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    scores = np.full(len(boxes), 0.9) if scores is None else np.asarray(scores, dtype=np.float64)
    return tracker.update(boxes, np.asarray(classes, dtype=np.int64), scores, stamp_s)


def ids_by_class(tracks) -> dict:
    return dict(zip(tracks.classes.tolist(), tracks.track_ids.tolist()))


def test_constant_velocity_objects_keep_their_ids_and_velocities_converge():
    rng = np.random.default_rng(0)
    tracker = Tracker(TrackerConfig(birth_hits=2))
    car_v, pedestrian_v = np.array([5.0, 1.0]), np.array([1.0, -0.5])
    history = []
    for k in range(40):
        t = k * DT
        car = np.array([10.0, -3.0]) + car_v * t + rng.normal(0, 0.1, 2)
        pedestrian = np.array([8.0, 4.0]) + pedestrian_v * t + rng.normal(0, 0.05, 2)
        tracks = frame(tracker, [box(*car), box(*pedestrian, length=0.6, width=0.6)], [CAR, PEDESTRIAN], t)
        history.append(tracks)
    assert len(history[0]) == 0                        # tentative after one hit
    assert ids_by_class(history[1]) == {CAR: 1, PEDESTRIAN: 2}
    assert all(ids_by_class(tracks) == {CAR: 1, PEDESTRIAN: 2} for tracks in history[1:])
    last = history[-1]
    np.testing.assert_allclose(last.velocities[last.classes == CAR][0], car_v, atol=0.4)
    np.testing.assert_allclose(last.velocities[last.classes == PEDESTRIAN][0], pedestrian_v, atol=0.25)
    assert not last.coasting.any()


def test_a_confident_new_detection_is_confirmed_at_once_a_weak_one_waits_its_hits():
    tracker = Tracker(TrackerConfig(birth_hits=2, confirm_score=0.7))
    first = frame(tracker, [box(10, 0), box(20, 5)], [CAR, CAR], 0.0, scores=[0.8, 0.5])
    assert first.track_ids.tolist() == [1] and first.boxes[0, 0] == 10.0       # 0.8 >= 0.7: an id at once
    assert first.detection_track_ids(2).tolist() == [1, -1]
    second = frame(tracker, [box(10, 0), box(20, 5)], [CAR, CAR], DT, scores=[0.8, 0.5])
    assert second.track_ids.tolist() == [1, 2]                                  # 0.5: after birth_hits = 2
    # a confident detection of a tentative track's object in its 2nd frame confirms through hits, as before
    late = frame(tracker, [box(10, 0), box(20, 5), box(30, -5)], [CAR, CAR, CAR], 2 * DT, scores=[0.8, 0.5, 0.3])
    assert late.track_ids.tolist() == [1, 2]
    off = Tracker(TrackerConfig(birth_hits=2))                                  # confirm_score 0: off
    assert len(frame(off, [box(10, 0)], [CAR], 0.0, scores=[0.99])) == 0


def test_noise_free_velocity_is_exact_after_a_few_frames():
    tracker = Tracker(TrackerConfig(birth_hits=1))
    for k in range(10):
        tracks = frame(tracker, [box(20.0 - 8.0 * k * DT, 2.0 + 0.5 * k * DT)], [CAR], 100.0 + k * DT)
    np.testing.assert_allclose(tracks.velocities[0], [-8.0, 0.5], atol=0.05)
    np.testing.assert_allclose(tracks.boxes[0, :2], [20.0 - 8.0 * 0.9, 2.0 + 0.5 * 0.9], atol=0.02)


@pytest.mark.parametrize('association', ['hungarian', 'greedy'])
def test_two_crossing_objects_keep_their_ids(association):
    # Same class, opposite directions at 20 m/s, 0.6 m apart sideways: A x = 20 t, B x = 21 - 20 t.
    # At t = 0.5 s A is at 10, B at 11; at t = 0.6 s A is at 12, B at 9. Matching to the last
    # positions would swap them (1.17 + 1.17 m < 2 + 2 m); the constant-velocity predictions don't.
    tracker = Tracker(TrackerConfig(birth_hits=2, association=association))
    seen = []
    for k in range(11):
        t = k * DT
        a, b = (20.0 * t, 0.0), (21.0 - 20.0 * t, 0.6)
        tracks = frame(tracker, [box(*a), box(*b, yaw=math.pi)], [CAR, CAR], t)
        if k >= 1:
            assert len(tracks) == 2
            a_row = int(np.argmin(np.hypot(*(tracks.boxes[:, :2] - a).T)))
            seen.append((int(tracks.track_ids[a_row]), int(tracks.track_ids[1 - a_row])))
        if k >= 4:          # the filter has converged (two frames give 85 % of the speed)
            np.testing.assert_allclose(tracks.velocities[a_row], [20.0, 0.0], atol=0.5)
            np.testing.assert_allclose(tracks.velocities[1 - a_row], [-20.0, 0.0], atol=0.5)
    assert seen == [(1, 2)] * 10


def test_a_dropped_frame_keeps_the_id_and_the_track_coasts_on_its_prediction():
    tracker = Tracker(TrackerConfig(birth_hits=2, death_misses=3))
    for k in range(5):
        tracks = frame(tracker, [box(10.0 + k, 0.0)], [CAR], k * DT)       # 10 m/s
    assert tracks.track_ids.tolist() == [1]
    coasting = tracker.predict_only(5 * DT)                                  # the frame is lost
    assert coasting.track_ids.tolist() == [1] and coasting.coasting.tolist() == [True]
    assert coasting.detection_index.tolist() == [-1]
    np.testing.assert_allclose(coasting.boxes[0, :2], [15.0, 0.0], atol=0.2)
    tracks = frame(tracker, [box(16.0, 0.0)], [CAR], 6 * DT)
    assert tracks.track_ids.tolist() == [1] and not tracks.coasting.any()


def test_a_missed_detection_of_one_object_keeps_both_ids():
    tracker = Tracker(TrackerConfig(birth_hits=2))
    cars = lambda k: [box(10.0 + 0.5 * k, -4.0), box(20.0 - 0.5 * k, 4.0)]   # noqa: E731
    for k in range(4):
        frame(tracker, cars(k), [CAR, CAR], k * DT)
    tracks = frame(tracker, cars(4)[1:], [CAR], 4 * DT)                       # the first car is missed
    assert tracks.track_ids.tolist() == [1, 2] and tracks.coasting.tolist() == [True, False]
    assert tracks.detection_track_ids(1).tolist() == [2]
    tracks = frame(tracker, cars(5), [CAR, CAR], 5 * DT)
    assert tracks.track_ids.tolist() == [1, 2] and tracks.detection_track_ids(2).tolist() == [1, 2]


def test_birth_after_m_hits_and_a_tentative_track_dies_at_its_first_miss():
    tracker = Tracker(TrackerConfig(birth_hits=3))
    assert len(frame(tracker, [box(10, 0)], [CAR], 0.0)) == 0
    assert len(frame(tracker, [box(10, 0)], [CAR], 0.1)) == 0
    assert tracker.num_tracks == 1 and tracker.num_confirmed == 0
    assert len(tracker.predict_only(0.2)) == 0 and tracker.num_tracks == 0  # missed: gone
    for stamp in (0.3, 0.4):
        assert len(frame(tracker, [box(10, 0)], [CAR], stamp)) == 0
    tracks = frame(tracker, [box(10, 0)], [CAR], 0.5)                       # third hit
    assert tracks.track_ids.tolist() == [1]


def test_death_after_k_consecutive_misses_and_a_new_id_afterwards():
    tracker = Tracker(TrackerConfig(birth_hits=1, death_misses=3))
    assert frame(tracker, [box(10, 0)], [CAR], 0.0).track_ids.tolist() == [1]
    assert tracker.predict_only(0.1).track_ids.tolist() == [1]               # miss 1: coasting
    assert tracker.predict_only(0.2).track_ids.tolist() == [1]               # miss 2: coasting
    assert len(tracker.predict_only(0.3)) == 0 and tracker.num_tracks == 0   # miss 3: deleted
    assert frame(tracker, [box(10, 0)], [CAR], 0.4).track_ids.tolist() == [2]


def test_class_gates_and_only_same_class_matches():
    config = TrackerConfig(birth_hits=1, gates_m={CAR: 4.0, PEDESTRIAN: 1.5})
    tracker = Tracker(config)
    first = frame(tracker, [box(10, 0), box(5, 5, length=0.6, width=0.6)], [CAR, PEDESTRIAN], 0.0)
    assert first.track_ids.tolist() == [1, 2]
    # both jump 2 m: inside the car gate, outside the pedestrian gate
    second = frame(tracker, [box(12, 0), box(7, 5, length=0.6, width=0.6)], [CAR, PEDESTRIAN], 0.1)
    assert second.detection_track_ids(2).tolist() == [1, 3]
    # a cyclist (no gate given: default_gate_m) exactly where the car is: not the car's track
    third = frame(tracker, [box(12.5, 0)], [CYCLIST], 0.2)
    assert third.detection_track_ids(1).tolist() == [4]
    assert config.gate_of([CAR, TRUCK, PEDESTRIAN]).tolist() == [4.0, config.default_gate_m, 1.5]
    assert gates_for_class_names(['car', 'bus', 'pedestrian']) == {0: 4.0, 2: 1.5}


def test_hungarian_prefers_the_least_total_distance_greedy_the_highest_score():
    # Tracks at (0, 0) and (3, 0). D1 (score 0.9) at (1.4, 0), D2 (0.5) at (-0.9, 0).
    # Hungarian: T1-D2 0.9 + T2-D1 1.6 = 2.5 < T1-D1 1.4 + T2-D2 3.9 = 5.3.
    # Greedy: D1 first takes its nearest track T1; D2 takes T2 (3.9 m, inside the 4 m gate).
    results = {}
    for association in ('hungarian', 'greedy'):
        tracker = Tracker(TrackerConfig(birth_hits=1, association=association))
        frame(tracker, [box(0, 0), box(3, 0)], [CAR, CAR], 0.0)
        tracks = frame(tracker, [box(1.4, 0), box(-0.9, 0)], [CAR, CAR], 0.1, scores=[0.9, 0.5])
        results[association] = tracks.detection_track_ids(2).tolist()
    assert results == {'hungarian': [2, 1], 'greedy': [1, 2]}


def test_yaw_near_plus_pi_observed_at_minus_pi_stays_smooth():
    tracker = Tracker(TrackerConfig(birth_hits=1, yaw_alpha=0.5))
    yaws = [3.10, -3.10, 3.12, -3.12, -3.13, 3.13]        # all within 0.05 rad of pi
    for k, yaw in enumerate(yaws):
        tracks = frame(tracker, [box(10, 0, yaw=yaw)], [CAR], k * DT)
        distance_to_pi = abs((tracks.boxes[0, 6] - math.pi + math.pi) % (2 * math.pi) - math.pi)
        assert distance_to_pi < 0.05, tracks.boxes[0, 6]   # a plain average would give ~0
        assert -math.pi <= tracks.boxes[0, 6] < math.pi


def test_a_detection_flipped_by_180_degrees_does_not_turn_the_track():
    tracker = Tracker(TrackerConfig(birth_hits=1, yaw_alpha=0.5))
    frame(tracker, [box(10, 0, yaw=0.2)], [CAR], 0.0)
    tracks = frame(tracker, [box(10, 0, yaw=0.2 - math.pi)], [CAR], 0.1)      # front/back confused
    assert tracks.boxes[0, 6] == pytest.approx(0.2, abs=1e-9)
    tracks = frame(tracker, [box(10, 0, yaw=0.4)], [CAR], 0.2)
    assert tracks.boxes[0, 6] == pytest.approx(0.3, abs=1e-9)                 # 0.2 + 0.5 * 0.2


def test_heading_from_velocity_turns_a_backwards_track():
    tracker = Tracker(TrackerConfig(birth_hits=1, heading_from_velocity_mps=1.0))
    for k in range(6):
        tracks = frame(tracker, [box(10 + 1.0 * k, 0, yaw=math.pi)], [CAR], k * DT)   # moves +x at 10 m/s
    assert abs(tracks.boxes[0, 6]) < 0.05


def test_time_jumps_reset_and_same_stamp_does_not_predict():
    tracker = Tracker(TrackerConfig(birth_hits=1, max_gap_s=1.0))
    frame(tracker, [box(10, 0)], [CAR], 5.0)
    tracks = frame(tracker, [box(11, 0)], [CAR], 5.1)
    assert tracks.track_ids.tolist() == [1]
    tracks = frame(tracker, [box(11, 0)], [CAR], 5.1)                 # dt = 0: no prediction, same track
    assert tracks.track_ids.tolist() == [1] and tracker.resets == 0
    assert frame(tracker, [box(11, 0)], [CAR], 4.0).track_ids.tolist() == [2]     # back in time
    assert frame(tracker, [box(11, 0)], [CAR], 9.0).track_ids.tolist() == [3]     # 5 s gap
    assert tracker.resets == 2
    assert frame(tracker, [box(11, 0)], [CAR], 9.5).track_ids.tolist() == [3]


def test_ego_motion_gives_velocity_over_ground():
    # A parked car 20 m ahead; the vehicle drives +x at 10 m/s, so the car comes 1 m closer per frame.
    ego_step = np.eye(4)
    ego_step[0, 3] = -1.0                        # previous frame -> this frame: p' = p - (1, 0, 0)
    relative, compensated = Tracker(TrackerConfig(birth_hits=1)), Tracker(TrackerConfig(birth_hits=1))
    for k in range(10):
        detections = [box(20.0 - k, 0.0)]
        a = frame(relative, detections, [CAR], k * DT)
        b = compensated.update(np.array(detections), [CAR], [0.9], k * DT, ego_motion=ego_step if k else None)
    np.testing.assert_allclose(a.velocities[0], [-10.0, 0.0], atol=0.1)
    np.testing.assert_allclose(b.velocities[0], [0.0, 0.0], atol=0.1)
    # a 90 degree left turn of the vehicle in place: the car's yaw turns by -90 degrees
    turn = np.array([[0.0, 1.0, 0, 0], [-1.0, 0.0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])   # p' = R(-90) p
    c = compensated.update(np.zeros((0, 7)), [], [], 1.0, ego_motion=turn)
    np.testing.assert_allclose(c.boxes[0, :2], [0.0, -11.0], atol=0.2)
    assert c.boxes[0, 6] == pytest.approx(-math.pi / 2, abs=1e-6)


def test_the_same_inputs_give_the_same_outputs_ordered_by_id():
    rng = np.random.default_rng(7)
    starts = np.column_stack([rng.uniform(0, 60, 60), rng.uniform(-30, 30, 60)])
    velocities = rng.normal(0, 3, (60, 2))
    classes = rng.integers(0, 4, 60)
    sequence = []
    for k in range(15):
        keep = rng.random(60) > 0.1
        xy = starts + velocities * k * DT + rng.normal(0, 0.1, (60, 2))
        boxes = np.column_stack([xy, np.zeros(60), np.full(60, 4.0), np.full(60, 2.0), np.full(60, 1.5),
                                 rng.uniform(-np.pi, np.pi, 60)])[keep]
        sequence.append((boxes, classes[keep], rng.uniform(0.3, 1.0, keep.sum()), k * DT))
    outputs = []
    for association in ('hungarian', 'hungarian', 'greedy', 'greedy'):
        tracker = Tracker(TrackerConfig(association=association))
        outputs.append([tracker.update(*step) for step in sequence])
    for a, b in ((outputs[0], outputs[1]), (outputs[2], outputs[3])):
        for x, y in zip(a, b):
            for name in ('boxes', 'classes', 'scores', 'track_ids', 'velocities', 'coasting', 'detection_index'):
                np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    for tracks in outputs[0]:
        assert np.all(np.diff(tracks.track_ids) > 0)
    all_ids = np.unique(np.concatenate([t.track_ids for t in outputs[0]]))
    np.testing.assert_array_equal(all_ids, np.arange(1, len(all_ids) + 1))


def test_bad_inputs_raise_clear_errors_and_non_finite_rows_are_ignored():
    tracker = Tracker()
    with pytest.raises(ValueError, match=r'boxes \(N, 7\)'):
        tracker.update(np.zeros((2, 5)), [0, 0], [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match='integer class ids'):
        tracker.update(np.zeros((1, 7)), [0.5], [0.5], 0.0)
    with pytest.raises(ValueError, match='ego_motion'):
        tracker.update(np.zeros((0, 7)), [], [], 0.0, ego_motion=np.eye(3))
    with pytest.raises(ValueError, match='association'):
        TrackerConfig(association='nearest')
    with pytest.raises(ValueError, match='gates'):
        TrackerConfig(gates_m={0: -1.0})
    with pytest.raises(ValueError, match='confirm_score'):
        TrackerConfig(confirm_score=float('nan'))
    tracker = Tracker(TrackerConfig(birth_hits=1))
    tracks = frame(tracker, [box(np.nan, 0), box(10, 0)], [CAR, CAR], 0.0)
    assert tracks.track_ids.tolist() == [1] and tracker.num_tracks == 1
    assert tracks.detection_track_ids(2).tolist() == [-1, 1]      # indices of the input, NaN row included
    tracks = frame(tracker, [box(np.nan, 0), box(np.inf, 0), box(10, 0)], [CAR, CAR, CAR], 0.1)
    assert tracks.detection_track_ids(3).tolist() == [-1, -1, 1]


def test_gated_assignment_takes_the_most_pairs_first_and_the_gate_edge_as_asked():
    from mtl_perception_ros.core.matching import gated_assignment
    # The closest pair (0, 0) would leave row 1 unmatched: two pairs at 1.9 + 1.9 win.
    cost = np.array([[0.1, 1.9], [1.9, 5.0]])
    rows, cols = gated_assignment(cost, 2.0)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    edge = np.array([[2.0, 7.0]])
    assert gated_assignment(edge, 2.0)[1].tolist() == [0]                      # tracker: distance <= gate
    assert gated_assignment(edge, 2.0, inclusive=False)[1].tolist() == []      # metrics: strictly within
    assert gated_assignment(np.zeros((0, 3)), 2.0)[0].tolist() == []
