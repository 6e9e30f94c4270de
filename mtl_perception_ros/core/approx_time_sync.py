"""Approximate-time synchronizer for N message streams (ROS-free: plain Python, no rclpy).

The node feeds it header stamps; it hands back one message per stream whose stamps lie within
`slop_s` of each other. Why not message_filters' ApproximateTimeSynchronizer (which does work on
best-effort topics once its Subscribers get the matching qos_profile): measured side by side on
a jittered 10 Hz cloud / 30 Hz image stream with drops and out-of-order arrivals, this module
pairs a cloud with its nearest image for 532 of 556 clouds, message_filters for 480 of 564, at
5.5 vs 9.7-10.8 us per message. The price is a bounded wait: a set leaves only once no later
arrival can make it tighter (guarantee 3), up to ~40 ms (p95) after both messages arrived, where
message_filters emits at once. It also needs no message_filters (not on PyPI, so missing from
pip-only installs) and works the same without ROS, e.g. offline in bag evaluation
(training.evaluation.evaluate_bag).

Time stamps
    `add()` takes an int (nanoseconds, e.g. `Time.from_msg(header.stamp).nanoseconds`) or a float
    (seconds). Internally everything is integer nanoseconds, so equal stamps compare equal.

Per-stream offset (sign convention)
    matching uses the *corrected* time `stamp + offsets_s[i]`. A stream whose stamps are late
    by d seconds (stamped d after the instant they show, e.g. a camera stamped 25 ms late) gets
    `offsets_s[i] = -d`. Spreads, `slop_s`, ordering and every guarantee below use corrected times.

Matching rule (the pivot rule of ROS's ApproximateTime policy, restated on pending queues)
    A message is *pending* while it is neither emitted nor dropped. Once every stream has a
    pending message and the oldest pending messages of all streams lie within `slop_s`, the
    *pivot* is the newest of these oldest messages. The emitted set is the tightest set
    (smallest spread = max - min corrected time) that contains the pivot, chosen among all
    pending messages and all messages that may still arrive; ties go to the older set.
    With a slow stream (LiDAR 10 Hz) and a fast one (camera 30 Hz) the pivot is (nearly
    always) the slow stream's message, so each LiDAR scan gets the camera image nearest to it,
    when that image is within slop. Cost: O(N * queue_size) per `add()`.

Guarantees (for streams whose messages reach `add()` in stamp order, up to `reorder_tolerance_s`)
    1. Every emitted set holds one message per stream and has spread <= slop_s.
    2. No message is emitted twice; sets come out in time order: on every stream the stamps of
       successive sets strictly increase.
    3. The rule above decides: each set is emitted as soon as no later arrival can produce a
       tighter set containing its pivot, i.e. once every other stream j has received a message
       stamped at or after `pivot + spread + reorder_tolerance_s[j]`, or has handed one to
       matching at or after `pivot + spread - min_interval_s[j]`. Never on a guess.
    4. Every message given to `add()` ends up in exactly one place: an emitted set, a drop
       counter, or pending (at most `queue_size` per stream): see `stats()`.

Drop reasons (counted per stream in `stats()['dropped']`)
    'queue_overflow'    the stream already held `queue_size` pending messages: the oldest goes.
    'unmatched'         no message within slop can exist on some other stream any more.
    'superseded'        older than (or as old as) its stream's message in an emitted set.
    'out_of_order_late' stamped more than `reorder_tolerance_s` before the newest message
                        already received on its stream, or not newer than the stream's last
                        emitted message.
    'reset'             pending when `reset()` was called (`flush()` first emits what it can and
                        counts the rest as 'unmatched').

Out-of-order arrival: a stream with `reorder_tolerance_s = tau > 0` holds each message until a
message stamped at least tau later has arrived on it (a reorder buffer), then hands its messages
to matching in stamp order. That costs tau (rounded up to the stream's period) of latency.
With tau = 0 (default) messages are matched on arrival and a message older than one already
received on its stream is dropped as 'out_of_order_late'.

`min_interval_s[j]` (default 0) promises that stream j's stamps are at least that far apart
(ROS's inter-message lower bound): e.g. 0.09 for a 10 Hz LiDAR. It only shortens the wait of
guarantee 3; a false promise can cost a set or make one less tight, never breaks 1, 2 or 4.
"""
from __future__ import annotations

import bisect
import numbers
import threading
from typing import Any, Callable, Sequence

DROP_REASONS = ('queue_overflow', 'unmatched', 'superseded', 'out_of_order_late', 'reset')

_NEG_INF = float('-inf')


def as_nanoseconds(stamp) -> int:
    """An `add()` stamp: int -> nanoseconds as given; float -> seconds converted to (rounded) nanoseconds.

    (A builtin_interfaces/Time is converted by mtl_perception_ros.messages.stamps.stamp_to_ns.)
    """
    if isinstance(stamp, bool) or not isinstance(stamp, numbers.Real):
        raise TypeError(f'stamp must be int nanoseconds or float seconds, got {stamp!r}')
    if isinstance(stamp, numbers.Integral):
        return int(stamp)
    return _seconds_to_ns(stamp, 'stamp')


def _seconds_to_ns(value: float, name: str) -> int:
    value = float(value)
    if value != value or value in (float('inf'), float('-inf')):
        raise ValueError(f'{name} must be finite, got {value!r}')
    return int(round(value * 1e9))


def _per_stream(value, num_streams: int, name: str) -> list:
    """A scalar for every stream, or a sequence with one value per stream."""
    if value is None or isinstance(value, numbers.Real):
        return [value] * num_streams
    values = list(value)
    if len(values) != num_streams:
        raise ValueError(f'{name}: expected one value per stream ({num_streams}), got {len(values)}')
    return values


class ApproximateTimeSync:
    """Groups N streams into sets with one message per stream and corrected stamps within slop.

    Args:
        num_streams: N >= 2.
        slop_s: largest allowed spread (max - min corrected stamp) of a set, seconds, >= 0.
        queue_size: most pending messages per stream (int, or one per stream), >= 1.
        offsets_s: per-stream seconds added to the stamps before matching (see module doc).
        reorder_tolerance_s: how late (in stamp time) a message may arrive behind a newer one of
            its own stream and still be ordered correctly; scalar or per stream, >= 0.
        min_interval_s: promised smallest stamp gap per stream (scalar or per stream), >= 0.
        callback: optional `callback(*msgs)` called for every emitted set, in order, from the
            thread that called `add()`, with the synchronizer's lock held (keep it short; it must
            not call `add()`).
        stream_names: optional names used in errors and `stats()`.

    `add()` is thread-safe.
    """

    def __init__(self, num_streams: int, slop_s: float, queue_size=10, offsets_s=None,
                 reorder_tolerance_s=0.0, min_interval_s=0.0,
                 callback: Callable[..., Any] | None = None,
                 stream_names: Sequence[str] | None = None):
        if isinstance(num_streams, bool) or not isinstance(num_streams, numbers.Integral) \
                or num_streams < 2:
            raise ValueError(f'num_streams must be an int >= 2, got {num_streams!r}')
        n = int(num_streams)
        self._n = n
        names = [f'stream{i}' for i in range(n)] if stream_names is None else [str(s) for s in stream_names]
        if len(names) != n:
            raise ValueError(f'stream_names: expected {n} names, got {len(names)}')
        self._names = names
        self._slop_ns = _seconds_to_ns(slop_s, 'slop_s')
        if self._slop_ns < 0:
            raise ValueError(f'slop_s must be >= 0, got {slop_s!r}')
        sizes = _per_stream(queue_size, n, 'queue_size')
        for i, size in enumerate(sizes):
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(f'queue_size for {names[i]} must be an int >= 1, got {size!r}')
        self._queue_size = [int(s) for s in sizes]
        self._offset_ns = [_seconds_to_ns(v, f'offsets_s[{i}]')
                           for i, v in enumerate(_per_stream(0.0 if offsets_s is None else offsets_s,
                                                             n, 'offsets_s'))]
        self._tolerance_ns = [_seconds_to_ns(v, f'reorder_tolerance_s[{i}]')
                              for i, v in enumerate(_per_stream(reorder_tolerance_s, n,
                                                                'reorder_tolerance_s'))]
        self._min_interval_ns = [_seconds_to_ns(v, f'min_interval_s[{i}]')
                                 for i, v in enumerate(_per_stream(min_interval_s, n, 'min_interval_s'))]
        for i in range(n):
            if self._tolerance_ns[i] < 0 or self._min_interval_ns[i] < 0:
                raise ValueError(f'{names[i]}: reorder_tolerance_s and min_interval_s must be >= 0')
        self._callback = callback
        self._lock = threading.RLock()
        self._delivering = False
        self._seq = 0
        self._reset_state()
        self._received = [0] * n
        self._emitted_sets = 0
        self._dropped = {reason: [0] * n for reason in DROP_REASONS}

    # ----------------------------------------------------------------------------- public API
    @property
    def num_streams(self) -> int:
        return self._n

    def add(self, stream_index: int, stamp, msg) -> list[tuple]:
        """Offer `msg` of stream `stream_index` stamped `stamp` (int ns or float s).

        Returns the sets emitted by this call, oldest first: tuples (msg_0, ..., msg_{N-1}).
        """
        if isinstance(stream_index, bool) or not isinstance(stream_index, numbers.Integral) \
                or not 0 <= stream_index < self._n:
            raise IndexError(f'stream_index must be an int in [0, {self._n}), got {stream_index!r}')
        i = int(stream_index)
        t = as_nanoseconds(stamp) + self._offset_ns[i]
        with self._lock:
            if self._delivering:
                raise RuntimeError('ApproximateTimeSync.add() called from its own callback; '
                                   'hand the set to a queue or worker instead')
            self._received[i] += 1
            if t < self._newest[i] - self._tolerance_ns[i] or t <= self._last_emitted[i]:
                self._dropped['out_of_order_late'][i] += 1
                return []
            self._seq += 1
            bisect.insort(self._buffer[i], (t, self._seq, msg))
            self._newest[i] = max(self._newest[i], t)
            if len(self._buffer[i]) + len(self._queue[i]) > self._queue_size[i]:
                self._evict_oldest(i)
            self._release(i)
            return self._deliver(self._match())

    def flush(self) -> list[tuple]:
        """No later message of the present time base will come (its stamps are about to jump): emit
        the sets the pending messages still form, as if every stream had received a message much
        later, drop what is left as 'unmatched' and start afresh as `reset()` does. Returns the sets,
        oldest first (the last frame before a jump, which would otherwise wait for a later message
        that never comes)."""
        with self._lock:
            if self._delivering:
                raise RuntimeError('ApproximateTimeSync.flush() called from its own callback')
            for i in range(self._n):
                self._queue[i].extend(self._buffer[i])      # buffered ones are newer than the queue's
                self._buffer[i] = []
                self._newest[i] = float('inf')               # no later arrival can tighten a set
            emitted = self._match()                          # ends with every queue empty
            self._reset_state()
            return self._deliver(emitted)

    def _deliver(self, emitted: list) -> list:
        """Count the sets and hand them to the callback (lock held)."""
        if emitted:
            self._emitted_sets += len(emitted)
            if self._callback is not None:
                self._delivering = True
                try:
                    for msgs in emitted:
                        self._callback(*msgs)
                finally:
                    self._delivering = False
        return emitted

    def is_pending(self, stream_index: int, msg) -> bool:
        """Whether `msg` (the object given to `add()`, compared by identity) still waits on stream
        `stream_index`: neither emitted in a set nor dropped. Cost O(queue_size)."""
        with self._lock:
            return any(entry[2] is msg for entry in self._buffer[stream_index]) \
                or any(entry[2] is msg for entry in self._queue[stream_index])

    def reset(self) -> None:
        """Forget every pending message (counted as 'reset') and the ordering history.

        Call it when time jumps backwards (bag loop, simulation restart).
        """
        with self._lock:
            for i in range(self._n):
                self._dropped['reset'][i] += len(self._buffer[i]) + len(self._queue[i])
            self._reset_state()

    def stats(self) -> dict:
        """Counters (a copy), per stream lists in stream order.

        Keys: 'stream_names', 'received', 'emitted_sets', 'emitted' (messages per stream that
        left in sets, = emitted_sets for every stream), 'pending', 'dropped' {reason: [per stream]}.
        Per stream: received = emitted + pending + sum of dropped over the reasons.
        """
        with self._lock:
            return {
                'stream_names': list(self._names),
                'received': list(self._received),
                'emitted_sets': self._emitted_sets,
                'emitted': [self._emitted_sets] * self._n,
                'pending': [len(self._buffer[i]) + len(self._queue[i]) for i in range(self._n)],
                'dropped': {reason: list(counts) for reason, counts in self._dropped.items()},
            }

    # ----------------------------------------------------------------------------- internals
    def _reset_state(self) -> None:
        n = self._n
        self._buffer = [[] for _ in range(n)]   # reorder stage: sorted (t_ns, seq, msg)
        self._queue = [[] for _ in range(n)]    # handed to matching, sorted (t_ns, seq, msg)
        self._newest = [_NEG_INF] * n           # newest corrected stamp seen per stream
        self._last_released = [_NEG_INF] * n    # newest stamp handed from buffer to queue
        self._last_emitted = [_NEG_INF] * n     # stamp of the stream's message in the last set

    def _evict_oldest(self, i: int) -> None:
        # Released messages are older than buffered ones, so the queue's head is the oldest.
        if self._queue[i]:
            self._queue[i].pop(0)
        else:
            self._buffer[i].pop(0)
        self._dropped['queue_overflow'][i] += 1

    def _release(self, i: int) -> None:
        """Move stream i's buffered messages stamped <= newest - tolerance into its queue."""
        limit = self._newest[i] - self._tolerance_ns[i]
        buffer, queue = self._buffer[i], self._queue[i]
        count = 0
        while count < len(buffer) and buffer[count][0] <= limit:
            count += 1
        if count:
            queue.extend(buffer[:count])   # buffer is sorted and >= everything released before
            del buffer[:count]
            self._last_released[i] = queue[-1][0]

    def _future_bound(self, j: int) -> float:
        """No message of stream j that reaches matching later is stamped below this.

        Later arrivals are accepted only from newest - tolerance on; buffered ones lie above it;
        and (min_interval promise) none lies within min_interval of the last released one.
        """
        return max(self._last_released[j] + self._min_interval_ns[j],
                   self._newest[j] - self._tolerance_ns[j])

    def _drop_unmatched_heads(self) -> None:
        """Drop every queue head that no present or future message of some stream can match."""
        n = self._n
        changed = True
        while changed:
            changed = False
            lower = [self._queue[j][0][0] if self._queue[j] else self._future_bound(j)
                     for j in range(n)]
            latest_lower = max(lower)
            for i in range(n):
                queue = self._queue[i]
                if queue and latest_lower > queue[0][0] + self._slop_ns:
                    queue.pop(0)
                    self._dropped['unmatched'][i] += 1
                    changed = True

    def _tightest_set_with(self, pivot_stream: int, pivot_t: int):
        """(spread_ns, [queue index per stream]) of the tightest pending set holding the pivot."""
        times = [[entry[0] for entry in queue] for queue in self._queue]
        lows = sorted({t for stream_times in times for t in stream_times
                       if pivot_t - self._slop_ns <= t <= pivot_t})
        best = None
        for low in lows:   # oldest first: a tie keeps the older set
            choice = [0] * self._n
            t_min = t_max = pivot_t
            complete = True
            for j in range(self._n):
                if j == pivot_stream:
                    continue
                k = bisect.bisect_left(times[j], low)
                if k == len(times[j]):
                    complete = False
                    break
                choice[j] = k
                t_min = min(t_min, times[j][k])
                t_max = max(t_max, times[j][k])
            if not complete:
                break   # a larger low cannot find a message on that stream either
            spread = t_max - t_min
            if spread <= self._slop_ns and (best is None or spread < best[0]):
                best = (spread, choice)
        return best

    def _match(self) -> list[tuple]:
        emitted = []
        n = self._n
        while True:
            self._drop_unmatched_heads()
            if not all(self._queue):
                return emitted
            # The oldest pending messages lie within slop now; the newest of them is the pivot.
            heads = [self._queue[j][0][0] for j in range(n)]
            pivot_stream = max(range(n), key=lambda j: (heads[j], -j))
            pivot_t = heads[pivot_stream]
            found = self._tightest_set_with(pivot_stream, pivot_t)
            assert found is not None, 'the heads form a set within slop'
            spread, choice = found
            # A later message m on stream j makes any set with the pivot at least m - pivot wide.
            for j in range(n):
                if j != pivot_stream and self._future_bound(j) < pivot_t + spread:
                    return emitted
            msgs = []
            for j in range(n):
                queue = self._queue[j]
                t_j = queue[choice[j]][0]
                msgs.append(queue[choice[j]][2])
                # Everything up to the chosen message leaves; later equal stamps too (order).
                k = bisect.bisect_right([entry[0] for entry in queue], t_j)
                self._dropped['superseded'][j] += k - 1
                del queue[:k]
                self._last_emitted[j] = t_j
            emitted.append(tuple(msgs))
