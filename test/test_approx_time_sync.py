"""ApproximateTimeSync: hand-computed pairings, drop accounting, ordering, threads.

Stamps are written in milliseconds and fed as int nanoseconds (exact), unless a test is about
float seconds. Messages are strings naming their stream and stamp ('L30' = LiDAR at 30 ms), so an
expected set reads like the pairing worked out on paper.
"""
from __future__ import annotations

import itertools
import random
import threading

import pytest

from mtl_perception_ros.core.approx_time_sync import DROP_REASONS, ApproximateTimeSync, as_nanoseconds

MS = 1_000_000


def feed(sync, events):
    """events: (stream, stamp_ms, name) in arrival order -> list of emitted name tuples."""
    out = []
    for stream, stamp_ms, name in events:
        out.extend(sync.add(stream, int(round(stamp_ms * MS)), name))
    return out


def by_stamp(*streams):
    """Merge per-stream [(stamp_ms, name)] lists into one arrival order sorted by stamp."""
    events = [(j, t, name) for j, stream in enumerate(streams) for t, name in stream]
    return sorted(events, key=lambda e: (e[1], e[0]))


def named(prefix, stamps_ms):
    return [(t, f'{prefix}{t}') for t in stamps_ms]


def dropped(sync, reason):
    return sync.stats()['dropped'][reason]


def assert_conserved(sync):
    stats = sync.stats()
    for j in range(sync.num_streams):
        total = stats['emitted'][j] + stats['pending'][j] + sum(
            stats['dropped'][reason][j] for reason in DROP_REASONS)
        assert total == stats['received'][j], (j, stats)


LIDAR_10HZ = named('L', [30, 130, 230, 330])
CAMERA_30HZ = named('C', [0, 33, 67, 100, 133, 167, 200, 233, 267, 300, 333, 367])


# ----------------------------------------------------------------------- mismatched rates
def test_each_lidar_scan_gets_the_nearest_camera_image():
    # Nearest camera to L30 is C33 (3 ms; C0 is 30 ms away), and so on every 100 ms.
    sync = ApproximateTimeSync(2, slop_s=0.05, queue_size=10)
    out = feed(sync, by_stamp(LIDAR_10HZ, CAMERA_30HZ))
    assert out == [('L30', 'C33'), ('L130', 'C133'), ('L230', 'C233'), ('L330', 'C333')]
    # Camera: C0, C100, C200, C300 passed over by a nearer image; C67, C167, C267 are more than
    # 50 ms from every scan; C367 waits for the next scan.
    assert dropped(sync, 'superseded') == [0, 4]
    assert dropped(sync, 'unmatched') == [0, 3]
    assert sync.stats()['pending'] == [0, 1]
    assert_conserved(sync)


@pytest.mark.parametrize('lidar_delay_ms, camera_delay_ms', [(0, 40), (60, 0), (0, 95), (95, 10)])
def test_pairing_does_not_depend_on_transport_latency(lidar_delay_ms, camera_delay_ms):
    # Each message arrives `delay` after its stamp: the arrival order changes, the sets do not.
    events = [(0, t, n) for t, n in LIDAR_10HZ] + [(1, t, n) for t, n in CAMERA_30HZ]
    delay = (lidar_delay_ms, camera_delay_ms)
    events.sort(key=lambda e: (e[1] + delay[e[0]], e[0]))
    sync = ApproximateTimeSync(2, slop_s=0.05, queue_size=10)
    assert feed(sync, events) == [('L30', 'C33'), ('L130', 'C133'), ('L230', 'C233'), ('L330', 'C333')]


def test_a_set_is_emitted_by_the_arrival_that_makes_it_certain():
    sync = ApproximateTimeSync(2, slop_s=0.05)
    assert feed(sync, [(1, 0, 'C0'), (0, 30, 'L30')]) == []   # C0 is 30 ms off; a nearer may come
    assert sync.add(1, 33 * MS, 'C33') == [('L30', 'C33')]     # any later image is >= 3 ms off


def test_min_interval_promise_shortens_the_wait():
    # Pivot C45 (the newest oldest message); its partner L0 is 45 ms off. Without a promise the
    # next scan may be stamped anywhere after 0 and must be seen first.
    events = [(0, 0, 'L0'), (1, 45, 'C45')]
    plain = ApproximateTimeSync(2, slop_s=0.05)
    assert feed(plain, events) == []
    assert plain.add(0, 100 * MS, 'L100') == [('L0', 'C45')]
    # A 10 Hz LiDAR promising >= 90 ms between scans: a later scan is >= 90 ms, i.e. >= 45 ms
    # from C45, so (L0, C45) is already certain.
    promised = ApproximateTimeSync(2, slop_s=0.05, min_interval_s=[0.09, 0.0])
    assert feed(promised, events) == [('L0', 'C45')]


# ----------------------------------------------------------------------- offsets
def test_camera_stamped_25ms_late_is_matched_on_corrected_time():
    # Camera images show instants 0, 33, 67, ... ms but are stamped 25 ms later.
    camera = [(t + 25, f'C{t + 25}') for t in [0, 33, 67, 100, 133, 167, 200, 233, 267]]
    lidar = named('L', [100, 200])
    raw = ApproximateTimeSync(2, slop_s=0.02)
    # On raw stamps C92 (8 ms off) beats C125 (25 ms off): the image from 67 ms, the wrong one.
    assert feed(raw, by_stamp(lidar, camera)) == [('L100', 'C92'), ('L200', 'C192')]
    corrected = ApproximateTimeSync(2, slop_s=0.02, offsets_s=[0.0, -0.025])
    # Corrected time = stamp - 25 ms: C125 shows 100 ms, exactly the scan's instant.
    assert feed(corrected, by_stamp(lidar, camera)) == [('L100', 'C125'), ('L200', 'C225')]


def test_offset_applies_to_the_slop_check():
    # Stamps 30 ms apart: outside a 20 ms slop raw, 5 ms apart after a -25 ms offset.
    events = [(0, 100, 'L100'), (1, 130, 'C130'), (0, 200, 'L200')]
    raw = ApproximateTimeSync(2, slop_s=0.02)
    assert feed(raw, events) == []
    assert dropped(raw, 'unmatched') == [1, 1]
    # Corrected C130 -> 105 ms is the pivot; L200 proves no later scan is nearer than L100.
    sync = ApproximateTimeSync(2, slop_s=0.02, offsets_s=[0.0, -0.025])
    assert feed(sync, events) == [('L100', 'C130')]


# ----------------------------------------------------------------------- drops
def test_stamps_beyond_slop_never_match_and_are_counted():
    # Alternating streams 100 ms apart with a 50 ms slop: every head is dropped in turn.
    sync = ApproximateTimeSync(2, slop_s=0.05)
    out = feed(sync, by_stamp(named('A', [0, 200, 400]), named('B', [100, 300, 500])))
    assert out == []
    assert dropped(sync, 'unmatched') == [3, 2]
    assert sync.stats()['pending'] == [0, 1]
    assert sync.stats()['emitted_sets'] == 0
    assert_conserved(sync)


def test_a_missing_camera_frame_drops_only_its_scan():
    lidar = named('L', [0, 100, 200, 300, 400, 500])
    camera = named('C', [3, 103, 303, 403, 503])   # the frame at ~203 ms was lost
    sync = ApproximateTimeSync(2, slop_s=0.02)
    out = feed(sync, by_stamp(lidar, camera))
    assert out == [('L0', 'C3'), ('L100', 'C103'), ('L300', 'C303'), ('L400', 'C403')]
    assert dropped(sync, 'unmatched') == [1, 0]
    # (L500, C503) waits: only the next scan proves no scan is nearer to C503 than L500.
    assert sync.stats()['pending'] == [1, 1]
    assert_conserved(sync)


def test_a_missing_lidar_scan_drops_the_images_around_it():
    lidar = named('L', [0, 200, 300, 400])         # the scan at 100 ms was lost
    camera = named('C', [2, 52, 102, 152, 202, 252, 302, 352])
    sync = ApproximateTimeSync(2, slop_s=0.02)
    out = feed(sync, by_stamp(lidar, camera))
    assert out == [('L0', 'C2'), ('L200', 'C202'), ('L300', 'C302')]
    # C52, C102, C152 (no scan within 20 ms), C252 and C352 are unmatched; L400 waits.
    assert dropped(sync, 'unmatched') == [0, 5]
    assert sync.stats()['pending'] == [1, 0]
    assert_conserved(sync)


def test_flood_on_one_stream_keeps_memory_bounded():
    sync = ApproximateTimeSync(2, slop_s=0.02, queue_size=5)
    for k in range(1000):                       # camera at 1 kHz, no LiDAR yet
        assert sync.add(1, k * MS, f'C{k}') == []
        assert sync.stats()['pending'][1] <= 5
    assert dropped(sync, 'queue_overflow') == [0, 995]
    # The kept images are C995..C999; a scan at 997 ms takes the exact one, and the next image
    # (1000 ms, 3 ms off) makes that certain.
    assert sync.add(0, 997 * MS, 'L997') == [('L997', 'C997')]
    assert dropped(sync, 'superseded') == [0, 2]
    assert_conserved(sync)


def test_queue_size_may_differ_per_stream():
    sync = ApproximateTimeSync(2, slop_s=0.01, queue_size=[2, 4])
    feed(sync, [(0, t, f'A{t}') for t in range(10)] + [(1, t, f'B{t}') for t in range(100, 110)])
    # B is 100 ms after every A: all A's are unmatched once B arrives; overflow trimmed before.
    stats = sync.stats()
    assert stats['pending'][1] <= 4 and stats['pending'][0] <= 2
    assert dropped(sync, 'queue_overflow') == [8, 6]
    assert_conserved(sync)


# ----------------------------------------------------------------------- out-of-order arrival
OUT_OF_ORDER = [(0, 100, 'A100'), (1, 101, 'B101'), (0, 50, 'A50'), (1, 52, 'B52'),
                (0, 160, 'A160'), (1, 158, 'B158'), (0, 210, 'A210'), (1, 212, 'B212')]


def test_reorder_tolerance_restores_stamp_order():
    sync = ApproximateTimeSync(2, slop_s=0.01, reorder_tolerance_s=0.06)
    emitted_by = {}
    for stream, t, name in OUT_OF_ORDER:
        for msgs in sync.add(stream, t * MS, name):
            emitted_by[msgs] = name
    # A50/B52 are held until messages 60 ms newer arrive; both late ones are used.
    assert emitted_by == {('A50', 'B52'): 'B158', ('A100', 'B101'): 'B212'}
    assert dropped(sync, 'out_of_order_late') == [0, 0]
    assert_conserved(sync)


def test_without_tolerance_late_messages_are_dropped_and_counted():
    sync = ApproximateTimeSync(2, slop_s=0.01)
    out = feed(sync, OUT_OF_ORDER)
    assert out == [('A100', 'B101'), ('A160', 'B158')]
    assert dropped(sync, 'out_of_order_late') == [1, 1]   # A50 and B52
    assert_conserved(sync)


def test_a_message_not_newer_than_the_last_emitted_one_is_late():
    sync = ApproximateTimeSync(2, slop_s=0.01, reorder_tolerance_s=1.0)
    feed(sync, [(0, 10, 'A10'), (1, 11, 'B11'), (0, 2000, 'A2000'), (1, 2000, 'B2000')])
    assert sync.stats()['emitted_sets'] == 1
    assert sync.add(0, 10 * MS, 'A10-again') == []
    assert dropped(sync, 'out_of_order_late') == [1, 0]


# ----------------------------------------------------------------------- three streams
def test_three_streams_lidar_camera_radar():
    lidar = named('L', [30, 130, 230, 330])                      # 10 Hz
    radar = named('R', [20, 70, 120, 170, 220, 270, 320, 370])   # 20 Hz
    sync = ApproximateTimeSync(3, slop_s=0.03, stream_names=['lidar', 'camera', 'radar'])
    out = feed(sync, by_stamp(lidar, CAMERA_30HZ, radar))
    # Pivot L30: {L30, C33, R20} spans 13 ms, {L30, C0, R20} 30 ms -> the first; likewise later.
    assert out == [('L30', 'C33', 'R20'), ('L130', 'C133', 'R120'),
                   ('L230', 'C233', 'R220'), ('L330', 'C333', 'R320')]
    stats = sync.stats()
    assert stats['stream_names'] == ['lidar', 'camera', 'radar']
    assert stats['dropped']['superseded'] == [0, 4, 0]      # C0, C100, C200, C300
    assert stats['dropped']['unmatched'] == [0, 3, 3]       # C67.., R70, R170, R270
    assert stats['pending'] == [0, 1, 1]                    # C367, R370
    assert_conserved(sync)


# ----------------------------------------------------------------------- jitter
def test_jittered_streams_pair_message_by_message():
    rng = random.Random(7)
    a = [(100 * k + rng.randint(-5, 5), f'A{k}') for k in range(20)]
    b = [(100 * k + 30 + rng.randint(-5, 5), f'B{k}') for k in range(20)]
    sync = ApproximateTimeSync(2, slop_s=0.04, offsets_s=[0.0, -0.03])
    out = feed(sync, by_stamp(a, b))
    # Jitter (<= 10 ms between partners after the offset) is far below half the 100 ms period.
    assert out[:19] == [(f'A{k}', f'B{k}') for k in range(19)]
    assert len(out) in (19, 20)


# ----------------------------------------------------------------------- guarantees vs. a reference
def reference_sets(streams, slop_ms):
    """Offline restatement of the rule, by brute force: all messages known in advance."""
    pending = [list(s) for s in streams]
    n = len(pending)
    out = []
    while all(pending):
        latest = max(p[0][0] for p in pending)
        stale = [j for j in range(n) if latest > pending[j][0][0] + slop_ms]
        if stale:
            for j in stale:
                pending[j].pop(0)
            continue
        heads = [p[0][0] for p in pending]
        pivot = max(range(n), key=lambda j: (heads[j], -j))
        best = None
        ranges = [[0] if j == pivot else range(len(pending[j])) for j in range(n)]
        for combo in itertools.product(*ranges):
            times = [pending[j][k][0] for j, k in enumerate(combo)]
            key = (max(times) - min(times), min(times), combo)
            if key[0] <= slop_ms and (best is None or key < best):
                best = key
        combo = best[2]
        out.append(tuple(pending[j][k][1] for j, k in enumerate(combo)))
        for j, k in enumerate(combo):
            t_j = pending[j][k][0]
            pending[j] = [e for e in pending[j] if e[0] > t_j]
    return out


def random_streams(rng, n, length, span_ms, distinct):
    streams = []
    for j in range(n):
        if distinct:
            stamps = sorted(rng.sample(range(span_ms), length))
        else:
            stamps = sorted(rng.randrange(span_ms) for _ in range(length))
        streams.append([(t, f'{j}:{k}@{t}') for k, t in enumerate(stamps)])
    return streams


def add_sentinels(streams, slop_ms, span_ms, tolerance_ms=0):
    """Far-future messages, never within slop of each other, that settle every real decision."""
    gap = 3 * slop_ms + 1
    n = len(streams)
    for j, stream in enumerate(streams):
        base = span_ms + 10 * slop_ms + j * gap
        stream.append((base, f'end{j}'))
        stream.append((base + n * gap + tolerance_ms, f'end{j}b'))
    return streams


def random_interleaving(rng, streams):
    cursors = [0] * len(streams)
    events = []
    while True:
        live = [j for j in range(len(streams)) if cursors[j] < len(streams[j])]
        if not live:
            return events
        j = rng.choice(live)
        t, name = streams[j][cursors[j]]
        cursors[j] += 1
        events.append((j, t, name))


def check_invariants(out, streams, slop_ms, sync):
    stamp = {name: t for stream in streams for t, name in stream}
    names = [name for msgs in out for name in msgs]
    assert len(names) == len(set(names)), 'a message was emitted twice'
    for msgs in out:
        times = [stamp[name] for name in msgs]
        assert max(times) - min(times) <= slop_ms
    for j in range(len(streams)):
        per_stream = [stamp[msgs[j]] for msgs in out]
        assert all(a < b for a, b in zip(per_stream, per_stream[1:])), 'sets out of time order'
        assert all(msgs[j] in {name for _, name in streams[j]} for msgs in out)
    assert_conserved(sync)


@pytest.mark.parametrize('n', [2, 3])
def test_online_sets_equal_the_offline_rule_for_any_interleaving(n):
    rng = random.Random(1000 + n)
    for trial in range(150):
        slop_ms = rng.choice([0, 3, 10, 25])
        span_ms = 120
        streams = random_streams(rng, n, rng.randint(1, 8), span_ms, distinct=trial % 2 == 0)
        add_sentinels(streams, slop_ms, span_ms)
        expected = reference_sets(streams, slop_ms)
        sync = ApproximateTimeSync(n, slop_s=slop_ms / 1000, queue_size=100)
        out = feed(sync, random_interleaving(rng, streams))
        assert out == expected, (trial, slop_ms, streams)
        check_invariants(out, streams, slop_ms, sync)


def test_arrivals_within_reorder_tolerance_give_the_in_order_result():
    rng = random.Random(5)
    tolerance_ms = 20
    for trial in range(150):
        n = rng.choice([2, 3])
        slop_ms = rng.choice([3, 10, 25])
        streams = random_streams(rng, n, rng.randint(1, 8), 150, distinct=True)
        add_sentinels(streams, slop_ms, 150, tolerance_ms)
        expected = reference_sets(streams, slop_ms)
        # Each message is delayed by less than the tolerance: later in the stream may overtake it.
        events = [(j, t, name, t + rng.randrange(tolerance_ms))
                  for j, stream in enumerate(streams) for t, name in stream]
        rng.shuffle(events)
        events.sort(key=lambda e: e[3])
        sync = ApproximateTimeSync(n, slop_s=slop_ms / 1000, queue_size=100,
                                   reorder_tolerance_s=tolerance_ms / 1000)
        out = feed(sync, [e[:3] for e in events])
        assert out == expected, (trial, streams)
        assert sum(dropped(sync, 'out_of_order_late')) == 0
        check_invariants(out, streams, slop_ms, sync)


def test_invariants_hold_under_small_queues_and_arbitrary_disorder():
    rng = random.Random(11)
    for trial in range(200):
        n = rng.choice([2, 3, 4])
        slop_ms = rng.choice([0, 5, 20])
        streams = random_streams(rng, n, rng.randint(1, 12), 100, distinct=False)
        events = [(j, t, name) for j, stream in enumerate(streams) for t, name in stream]
        rng.shuffle(events)
        sync = ApproximateTimeSync(n, slop_s=slop_ms / 1000, queue_size=rng.randint(1, 4),
                                   reorder_tolerance_s=rng.choice([0.0, 0.01]))
        out = feed(sync, events)
        check_invariants(out, streams, slop_ms, sync)
        assert max(sync.stats()['pending']) <= 4


# ----------------------------------------------------------------------- threads and callback
def test_concurrent_add_from_one_thread_per_stream():
    rng = random.Random(3)
    streams = [named('L', range(30, 2000, 100)), named('C', range(0, 2000, 33)),
               named('R', range(20, 2000, 50))]
    add_sentinels(streams, 30, 2000)
    expected = reference_sets(streams, 30)
    received = []
    sync = ApproximateTimeSync(3, slop_s=0.03, queue_size=1000,
                               callback=lambda *msgs: received.append(msgs))
    returned = []
    barrier = threading.Barrier(3)

    def producer(j):
        barrier.wait()
        for t, name in streams[j]:
            returned.extend(sync.add(j, t * MS, name))
            if rng.random() < 0.05:
                threading.Event().wait(0.0005)

    threads = [threading.Thread(target=producer, args=(j,)) for j in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert received == expected            # the callback sees every set, in order
    assert sorted(returned) == sorted(expected)
    assert len(expected) >= 15
    assert_conserved(sync)


def test_callback_gets_each_set_as_arguments_and_may_not_reenter():
    calls = []
    sync = ApproximateTimeSync(2, slop_s=0.01, callback=lambda a, b: calls.append((a, b)))
    assert feed(sync, [(0, 0, 'A0'), (1, 1, 'B1'), (0, 100, 'A100')]) == [('A0', 'B1')]
    assert calls == [('A0', 'B1')]

    def reenter(*msgs):
        sync2.add(0, 500 * MS, 'again')

    sync2 = ApproximateTimeSync(2, slop_s=0.01, callback=reenter)
    feed(sync2, [(0, 0, 'A0'), (1, 1, 'B1')])
    with pytest.raises(RuntimeError, match='callback'):
        sync2.add(0, 100 * MS, 'A100')


# ----------------------------------------------------------------------- API details
def test_float_seconds_and_int_nanoseconds_are_the_same_stamp():
    assert as_nanoseconds(0.03) == 30 * MS
    assert as_nanoseconds(30 * MS) == 30 * MS
    sync = ApproximateTimeSync(2, slop_s=0.0)
    assert sync.add(0, 0.03, 'A') == []
    assert sync.add(1, 30 * MS, 'B') == [('A', 'B')]   # exactly equal: spread 0


def test_reset_forgets_pending_messages_and_history():
    sync = ApproximateTimeSync(2, slop_s=0.01)
    feed(sync, [(0, 1000, 'A1000'), (1, 1001, 'B1001'), (0, 1100, 'A1100')])
    assert sync.stats()['pending'] == [1, 0]
    sync.reset()   # e.g. a bag restarted: time jumped back
    assert dropped(sync, 'reset') == [1, 0]
    assert feed(sync, [(0, 0, 'A0'), (1, 1, 'B1'), (0, 100, 'A100')]) == [('A0', 'B1')]
    assert_conserved(sync)


def test_flush_emits_the_sets_still_waiting_for_a_later_message_then_starts_afresh():
    """Before a jump of the stamps: A1000 + B999 wait for a later B that could be nearer; no later
    message of that time base will come, so flush emits them, and a lone pending A is unmatched."""
    sync = ApproximateTimeSync(2, slop_s=0.01, reorder_tolerance_s=[0.0, 0.005])
    assert feed(sync, [(1, 999, 'B999'), (0, 1000, 'A1000'), (0, 1100, 'A1100')]) == []
    assert sync.flush() == [('A1000', 'B999')]
    assert dropped(sync, 'unmatched') == [1, 0] and dropped(sync, 'reset') == [0, 0]
    assert sync.stats()['pending'] == [0, 0]
    # the history is gone too: older stamps (the next recording) pair as after reset()
    assert feed(sync, [(0, 0, 'A0'), (1, 1, 'B1'), (0, 100, 'A100'), (1, 10, 'B10')]) == [('A0', 'B1')]
    assert sync.flush() == [] and dropped(sync, 'unmatched') == [2, 1]     # B10 was still buffered
    assert_conserved(sync)


@pytest.mark.parametrize('kwargs, error', [
    (dict(num_streams=1, slop_s=0.1), ValueError),
    (dict(num_streams=2, slop_s=-0.1), ValueError),
    (dict(num_streams=2, slop_s=0.1, queue_size=0), ValueError),
    (dict(num_streams=2, slop_s=0.1, offsets_s=[0.0]), ValueError),
    (dict(num_streams=2, slop_s=0.1, stream_names=['a']), ValueError),
    (dict(num_streams=2, slop_s=0.1, reorder_tolerance_s=-1.0), ValueError),
    (dict(num_streams=2, slop_s=float('nan')), ValueError),
])
def test_bad_configuration_is_rejected(kwargs, error):
    with pytest.raises(error):
        ApproximateTimeSync(**kwargs)


def test_bad_inputs_are_rejected():
    sync = ApproximateTimeSync(2, slop_s=0.1)
    with pytest.raises(IndexError):
        sync.add(2, 0, 'x')
    with pytest.raises(TypeError):
        sync.add(0, '12', 'x')
    with pytest.raises(ValueError):
        sync.add(0, float('inf'), 'x')
    assert sync.stats()['received'] == [0, 0]
