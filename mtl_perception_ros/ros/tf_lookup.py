"""Transforms from TF for the node: tf2_ros where it is installed, else the core's TransformBuffer.

`TfLookup(node)` listens to /tf and /tf_static and answers `lookup(target, source, stamp_ns)` with
the 4x4 matrix that maps points in `source` into `target` at that stamp, or raises
core.transform_buffer.TransformUnavailable with tf2's reason. On a ROS install the listening and
the lookups are tf2_ros's (Buffer + TransformListener); in the pip environment, where tf2_ros is
missing but tf2_msgs is built into the venv, the subscriptions are this module's (tf2_ros's QoS:
depth 100, reliable; /tf_static transient local) and the buffer is core.transform_buffer's, with
the same lookups (test_transform_buffer compares the two where tf2_ros exists). Without tf2_msgs
there is no TF at all: `available` is False and every lookup says so.

A lookup waits up to `timeout_s` (wall clock, polling) only while the answer is an extrapolation
into the future (the /tf sample for the stamp is still on its way); unknown frames fail at once,
so a rig without TF loses no time per frame.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np

from mtl_perception_ros.core.transform_buffer import (EXTRAPOLATION_FUTURE, EXTRAPOLATION_PAST, LOOKUP,
                                                      CONNECTIVITY, INVALID, TransformBuffer, TransformError,
                                                      TransformUnavailable)
from mtl_perception_ros.bags.topics import TF_STATIC_TOPIC
from mtl_perception_ros.messages.stamps import stamp_to_ns
from mtl_perception_ros.messages.transforms import transform_to_matrix

TF_TOPIC = '/tf'
POLL_S = 0.002

try:
    from tf2_msgs.msg import TFMessage
except ImportError:          # no tf2_msgs: no TF (the set-up builds it; a ROS install has it)
    TFMessage = None
try:
    import tf2_ros
except ImportError:          # the pip environment: the core buffer
    tf2_ros = None


def listener_qos(static: bool):
    """tf2_ros's TransformListener QoS: depth 100, reliable; /tf_static transient local."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE)


class TfLookup:
    """TF for one node (module doc). `backend`: 'tf2_ros', 'buffer' (the core's) or 'none'."""

    def __init__(self, node, backend: str | None = None):
        if backend is None:
            backend = 'none' if TFMessage is None else 'tf2_ros' if tf2_ros is not None else 'buffer'
        if backend == 'tf2_ros' and tf2_ros is None or backend != 'none' and TFMessage is None:
            raise ValueError(f'TF backend {backend!r} is not installed here')
        self.backend = backend
        self.counts = Counter()              # tf.received / tf.rejected (the core buffer's input)
        self._rejected_reason = ''
        if backend == 'tf2_ros':
            self._tf2_buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._tf2_buffer, node)
        elif backend == 'buffer':
            self._buffer = TransformBuffer()
            node.create_subscription(TFMessage, TF_TOPIC, lambda msg: self._on_tf(msg, False), listener_qos(False))
            node.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda msg: self._on_tf(msg, True),
                                     listener_qos(True))

    @property
    def available(self) -> bool:
        return self.backend != 'none'

    def _on_tf(self, msg, static: bool):
        for item in msg.transforms:
            self.counts['tf.received'] += 1
            t, q = item.transform.translation, item.transform.rotation
            try:
                self._buffer.set_transform(item.header.frame_id, item.child_frame_id, stamp_to_ns(item.header.stamp),
                                           (t.x, t.y, t.z), (q.x, q.y, q.z, q.w), static=static)
            except TransformError as error:
                self.counts['tf.rejected'] += 1
                self._rejected_reason = str(error)

    def take_rejected_reason(self) -> str:
        """The latest reason an incoming transform was refused ('' when none since the last call)."""
        reason, self._rejected_reason = self._rejected_reason, ''
        return reason

    def clear(self) -> None:
        """The clock went back: drop the dynamic transforms (static ones stay)."""
        if self.backend == 'tf2_ros':
            self._tf2_buffer.clear()       # tf2's clear keeps the static transforms
        elif self.backend == 'buffer':
            self._buffer.clear()

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
        """4x4 target_from_source at `stamp_ns` (module doc); TransformUnavailable otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._lookup_once(target, source, stamp_ns)
            except TransformUnavailable as error:
                if error.kind != EXTRAPOLATION_FUTURE or time.monotonic() >= deadline:
                    raise
            time.sleep(POLL_S)

    def _lookup_once(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        if self.backend == 'buffer':
            return self._buffer.lookup(target, source, stamp_ns)
        if self.backend == 'none':
            raise TransformUnavailable(LOOKUP, 'no TF here: tf2_msgs is not installed (the set-up builds it)')
        from rclpy.time import Time
        try:
            stamped = self._tf2_buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
        except tf2_ros.ExtrapolationException as error:
            kind = EXTRAPOLATION_FUTURE if 'future' in str(error) else EXTRAPOLATION_PAST
            raise TransformUnavailable(kind, str(error)) from None
        except tf2_ros.ConnectivityException as error:
            raise TransformUnavailable(CONNECTIVITY, str(error)) from None
        except tf2_ros.LookupException as error:
            raise TransformUnavailable(LOOKUP, str(error)) from None
        except (tf2_ros.InvalidArgumentException, tf2_ros.TransformException) as error:
            raise TransformUnavailable(INVALID, str(error)) from None
        return transform_to_matrix(stamped.transform)
