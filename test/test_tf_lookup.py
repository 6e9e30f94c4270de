"""ros.tf_lookup.TfLookup over real DDS: /tf_static (transient local: a late listener gets it) and
/tf as tf2_ros's broadcasters publish them, looked up with the core buffer (pip environment) and,
where it is installed, with tf2_ros; the same answers from both."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ros_test_utils import require_ros

require_ros('tf2_msgs.msg')
from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mtl_perception_ros.core.transform_buffer import (EXTRAPOLATION_FUTURE, LOOKUP,  # noqa: E402
                                                      TransformUnavailable)
from mtl_perception_ros.ros import tf_lookup  # noqa: E402
from mtl_perception_ros.ros.tf_lookup import TfLookup  # noqa: E402

pytestmark = pytest.mark.ros
BACKENDS = ['buffer'] + (['tf2_ros'] if tf_lookup.tf2_ros is not None else [])
STATIC_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
LIDAR_IN_BASE = (1.2, 0.0, 1.9)
OPTICAL_ROTATION = Rotation.from_euler('ZYX', [-90, 0, -90], degrees=True)


def transform(parent, child, stamp_s, translation, rotation=Rotation.identity()):
    message = TransformStamped(child_frame_id=child)
    message.header.frame_id = parent
    message.header.stamp.sec = int(stamp_s)
    message.header.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))
    message.transform.translation.x, message.transform.translation.y, message.transform.translation.z = translation
    q = rotation.as_quat()
    message.transform.rotation.x, message.transform.rotation.y = float(q[0]), float(q[1])
    message.transform.rotation.z, message.transform.rotation.w = float(q[2]), float(q[3])
    return message


@pytest.mark.parametrize('backend', BACKENDS)
def test_static_and_moving_transforms_are_looked_up_and_a_late_sample_is_waited_for(rclpy_context, backend):
    broadcaster = rclpy_context.create_node(f'broadcaster_{backend}')
    pub_static = broadcaster.create_publisher(TFMessage, '/tf_static', STATIC_QOS)
    pub_tf = broadcaster.create_publisher(TFMessage, '/tf', 100)
    # The static tree before the listener exists: transient local delivers it late.
    pub_static.publish(TFMessage(transforms=[
        transform('base_link', 'lidar_top', 0, LIDAR_IN_BASE),
        transform('base_link', 'cam_front_optical', 0, (1.6, 0.0, 1.4), OPTICAL_ROTATION)]))
    listener = rclpy_context.create_node(f'listener_{backend}')
    tf = TfLookup(listener, backend=backend)
    assert tf.backend == backend and tf.available

    def lookup(target, source, stamp_s, timeout_s=0.0):
        return tf.lookup(target, source, int(round(stamp_s * 1e9)), timeout_s=timeout_s)

    rclpy_context.spin_until(lambda: _answers(lookup, 'cam_front_optical', 'lidar_top', 5.0), 10.0, '/tf_static')
    optical_from_lidar = lookup('cam_front_optical', 'lidar_top', 5.0)
    point_in_lidar = np.array([20.0, 0.0, -0.5, 1.0])
    in_base = point_in_lidar[:3] + LIDAR_IN_BASE
    expected = OPTICAL_ROTATION.inv().apply(in_base - (1.6, 0.0, 1.4))
    np.testing.assert_allclose((optical_from_lidar @ point_in_lidar)[:3], expected, atol=1e-6)

    # A moving frame: odom -> base_link at 1 s and 2 s; 1.5 s interpolates.
    pub_tf.publish(TFMessage(transforms=[transform('odom', 'base_link', 1.0, (10.0, 0.0, 0.0))]))
    pub_tf.publish(TFMessage(transforms=[transform('odom', 'base_link', 2.0, (12.0, 0.0, 0.0))]))
    rclpy_context.spin_until(lambda: _answers(lookup, 'odom', 'lidar_top', 2.0), 10.0, '/tf')
    np.testing.assert_allclose(lookup('odom', 'lidar_top', 1.5)[:3, 3], (11.0 + 1.2, 0.0, 1.9), atol=1e-9)

    # 2.5 s is not there yet: without a timeout at once an extrapolation error...
    with pytest.raises(TransformUnavailable) as error:
        lookup('odom', 'lidar_top', 2.5)
    assert error.value.kind == EXTRAPOLATION_FUTURE
    # ... with one, the sample published meanwhile answers (the worker waits, the executor feeds TF).
    answer = {}
    waiter = threading.Thread(target=lambda: answer.update(m=lookup('odom', 'lidar_top', 2.5, timeout_s=5.0)))
    waiter.start()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        rclpy_context.spin_once(0.01)
    pub_tf.publish(TFMessage(transforms=[transform('odom', 'base_link', 3.0, (14.0, 0.0, 0.0))]))
    while waiter.is_alive():
        rclpy_context.spin_once(0.01)
    np.testing.assert_allclose(answer['m'][:3, 3], (13.0 + 1.2, 0.0, 1.9), atol=1e-9)

    # An unknown frame does not wait for the timeout.
    start = time.monotonic()
    with pytest.raises(TransformUnavailable) as error:
        lookup('cam_left_optical', 'lidar_top', 2.0, timeout_s=5.0)
    assert error.value.kind == LOOKUP and time.monotonic() - start < 1.0

    # The clock went back: moving frames are gone, the static tree stays.
    tf.clear()
    assert _answers(lookup, 'cam_front_optical', 'lidar_top', 100.0)
    assert not _answers(lookup, 'odom', 'lidar_top', 2.0)


def test_a_bad_transform_on_tf_is_counted_and_the_others_still_apply(rclpy_context):
    broadcaster = rclpy_context.create_node('bad_broadcaster')
    pub_tf = broadcaster.create_publisher(TFMessage, '/tf', 100)
    listener = rclpy_context.create_node('bad_listener')
    tf = TfLookup(listener, backend='buffer')
    nan = transform('base_link', 'lidar_top', 1.0, (float('nan'), 0.0, 0.0))
    good = transform('base_link', 'cam', 1.0, (1.0, 0.0, 0.0))
    rclpy_context.spin_until(lambda: pub_tf.publish(TFMessage(transforms=[nan, good])) or tf.counts['tf.rejected'],
                             10.0, 'a refused transform')
    assert 'non-finite' in tf.take_rejected_reason() and tf.take_rejected_reason() == ''
    np.testing.assert_allclose(tf.lookup('base_link', 'cam', 1_000_000_000)[:3, 3], (1.0, 0.0, 0.0))
    assert not _answers(lambda *a: tf.lookup(a[0], a[1], int(a[2] * 1e9)), 'base_link', 'lidar_top', 1.0)


def _answers(lookup, target, source, stamp_s) -> bool:
    try:
        lookup(target, source, stamp_s)
    except TransformUnavailable:
        return False
    return True
