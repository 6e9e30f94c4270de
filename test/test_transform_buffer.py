"""core.transform_buffer: tf2's lookup semantics, checked against independent numpy/scipy
compositions and, where tf2_ros is installed (a ROS install), against tf2's own BufferCore."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from mtl_perception_ros.core.transform_buffer import (CONNECTIVITY, EXTRAPOLATION_FUTURE, EXTRAPOLATION_PAST,
                                                      INVALID, LOOKUP, TransformBuffer, TransformError,
                                                      TransformUnavailable, slerp)

S = 1_000_000_000       # ns per s


def pose(translation, rotvec) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    matrix[:3, 3] = translation
    return matrix


# A vehicle rig: base_link -> lidar_top, base_link -> cam_front -> cam_front_optical (static),
# odom -> base_link (moving).
LIDAR = pose([1.2, 0.0, 1.9], [0.0, 0.0, 0.02])
CAMERA = pose([1.6, 0.1, 1.4], [0.0, 0.05, -0.01])
OPTICAL = pose([0.0, 0.0, 0.0], Rotation.from_euler('ZYX', [-90, 0, -90], degrees=True).as_rotvec())
ODOM_1 = pose([10.0, 2.0, 0.0], [0.0, 0.0, 0.3])
ODOM_2 = pose([12.0, 3.0, 0.0], [0.0, 0.0, 0.7])


def rig(buffer: TransformBuffer) -> TransformBuffer:
    buffer.set_matrix('base_link', 'lidar_top', 0, LIDAR, static=True)
    buffer.set_matrix('base_link', 'cam_front', 0, CAMERA, static=True)
    buffer.set_matrix('cam_front', 'cam_front_optical', 0, OPTICAL, static=True)
    buffer.set_matrix('odom', 'base_link', 1 * S, ODOM_1)
    buffer.set_matrix('odom', 'base_link', 2 * S, ODOM_2)
    return buffer


def test_static_chain_through_the_common_parent_maps_lidar_points_into_the_optical_frame():
    buffer = rig(TransformBuffer())
    expected = np.linalg.inv(CAMERA @ OPTICAL) @ LIDAR       # optical_from_lidar
    for stamp in (0, 1 * S, 123 * S):                        # static: every time
        np.testing.assert_allclose(buffer.lookup('cam_front_optical', 'lidar_top', stamp), expected, atol=1e-12)
    point = np.array([20.0, -1.0, 0.5, 1.0])                 # 20 m ahead of the LiDAR
    in_camera = buffer.lookup('cam_front_optical', 'lidar_top') @ point
    assert in_camera[2] > 15                                 # optical z forward
    np.testing.assert_allclose(buffer.lookup('lidar_top', 'cam_front_optical'), np.linalg.inv(expected),
                               atol=1e-12)
    np.testing.assert_array_equal(buffer.lookup('lidar_top', 'lidar_top'), np.eye(4))


def test_dynamic_links_interpolate_like_scipys_slerp_and_latest_common_time():
    buffer = rig(TransformBuffer())
    rotations = Rotation.from_matrix(np.stack([ODOM_1[:3, :3], ODOM_2[:3, :3]]))
    for ratio in (0.0, 0.25, 0.5, 0.9, 1.0):
        stamp = int(1 * S + ratio * S)
        expected = np.eye(4)
        expected[:3, :3] = Slerp([0.0, 1.0], rotations)([ratio]).as_matrix()[0]
        expected[:3, 3] = (1 - ratio) * ODOM_1[:3, 3] + ratio * ODOM_2[:3, 3]
        np.testing.assert_allclose(buffer.lookup('odom', 'base_link', stamp), expected, atol=1e-9)
        np.testing.assert_allclose(buffer.lookup('odom', 'lidar_top', stamp), expected @ LIDAR, atol=1e-9)
    # stamp 0: the latest time every dynamic link of the chain has data (here 2 s)
    np.testing.assert_allclose(buffer.lookup('odom', 'lidar_top', 0), ODOM_2 @ LIDAR, atol=1e-9)


def test_slerp_takes_the_short_arc_of_q_and_minus_q():
    q0 = Rotation.from_rotvec([0, 0, 0.1]).as_quat()
    q1 = -Rotation.from_rotvec([0, 0, 0.5]).as_quat()                 # the same rotation, other sign
    np.testing.assert_allclose(Rotation.from_quat(slerp(q0, q1, 0.5)).as_rotvec(), [0, 0, 0.3], atol=1e-12)


@pytest.mark.parametrize('stamp, kind', [(3 * S, EXTRAPOLATION_FUTURE), (S // 2, EXTRAPOLATION_PAST)])
def test_stamps_outside_the_samples_are_extrapolation_errors(stamp, kind):
    buffer = rig(TransformBuffer())
    with pytest.raises(TransformUnavailable) as error:
        buffer.lookup('odom', 'lidar_top', stamp)
    assert error.value.kind == kind and 'extrapolation' in str(error.value)
    assert buffer.can_transform('cam_front_optical', 'lidar_top', stamp)        # static chain: any time


def test_unknown_and_unconnected_frames_and_empty_ids_say_why():
    buffer = rig(TransformBuffer())
    buffer.set_matrix('map', 'gps', 0, np.eye(4), static=True)
    cases = [(('camera_left', 'lidar_top'), LOOKUP, 'camera_left'), (('gps', 'lidar_top'), CONNECTIVITY, 'tree'),
             (('', 'lidar_top'), INVALID, 'frame ids')]
    for (target, source), kind, text in cases:
        with pytest.raises(TransformUnavailable) as error:
            buffer.lookup(target, source)
        assert error.value.kind == kind and text in str(error.value)
    with pytest.raises(TransformUnavailable, match='no transforms received'):
        TransformBuffer().lookup('a', 'b')


def test_a_loop_of_parents_is_a_connectivity_error_not_a_hang():
    buffer = TransformBuffer()
    buffer.set_matrix('a', 'b', 0, np.eye(4), static=True)
    buffer.set_matrix('b', 'a', 0, np.eye(4), static=True)
    with pytest.raises(TransformUnavailable, match='loop'):
        buffer.lookup('a', 'b')


@pytest.mark.parametrize('parent, child, translation, rotation, text', [
    ('base_link', '', [0, 0, 0], [0, 0, 0, 1], 'empty child'),
    ('', 'lidar', [0, 0, 0], [0, 0, 0, 1], 'empty parent'),
    ('lidar', 'lidar', [0, 0, 0], [0, 0, 0, 1], 'own parent'),
    ('base_link', 'lidar', [np.nan, 0, 0], [0, 0, 0, 1], 'non-finite'),
    ('base_link', 'lidar', [0, 0, 0], [0, 0, 0, np.inf], 'non-finite'),
    ('base_link', 'lidar', [0, 0, 0], [0, 0, 0, 2.0], 'unit quaternion'),
    ('base_link', 'lidar', [0, 0, 0], [0, 0, 0, 0], 'unit quaternion'),
])
def test_bad_transforms_are_refused_and_change_nothing(parent, child, translation, rotation, text):
    buffer = TransformBuffer()
    buffer.set_transform('base_link', 'lidar', 0, [1, 2, 3], [0, 0, 0, 1], static=True)
    with pytest.raises(TransformError, match=text):
        buffer.set_transform(parent, child, 5, translation, rotation)
    np.testing.assert_allclose(buffer.lookup('base_link', 'lidar')[:3, 3], [1, 2, 3])


def test_a_nearly_unit_quaternion_is_normalised_and_a_leading_slash_dropped():
    buffer = TransformBuffer()
    buffer.set_transform('/base_link', 'lidar', 0, [0, 0, 0], [0, 0, 0.0, 1.004], static=True)
    np.testing.assert_allclose(buffer.lookup('base_link', '/lidar'), np.eye(4), atol=1e-12)


def test_the_cache_keeps_cache_time_behind_the_newest_and_a_jump_back_restarts_the_link():
    buffer = TransformBuffer(cache_time_s=2.0)
    for second in range(10):
        buffer.set_matrix('odom', 'base_link', second * S, pose([second, 0, 0], [0, 0, 0]))
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', int(7.5 * S))[0, 3], 7.5)
    with pytest.raises(TransformUnavailable) as error:        # older than 9 s - 2 s: pruned
        buffer.lookup('odom', 'base_link', 6 * S)
    assert error.value.kind == EXTRAPOLATION_PAST
    # A replayed bag: stamps from 0 again. The link restarts instead of refusing them for 9 s.
    buffer.set_matrix('odom', 'base_link', 0, pose([100, 0, 0], [0, 0, 0]))
    buffer.set_matrix('odom', 'base_link', S, pose([101, 0, 0], [0, 0, 0]))
    assert buffer.restarted_links == 1
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', S // 2)[0, 3], 100.5)
    # Out-of-order within the cache is inserted in order; the same stamp again replaces.
    buffer.set_matrix('odom', 'base_link', S // 4, pose([50, 0, 0], [0, 0, 0]))
    buffer.set_matrix('odom', 'base_link', S, pose([102, 0, 0], [0, 0, 0]))
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', S // 4)[0, 3], 50.0)
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', S)[0, 3], 102.0)


def test_clear_drops_the_moving_frames_and_keeps_the_static_ones():
    buffer = rig(TransformBuffer())
    buffer.clear()
    assert buffer.can_transform('cam_front_optical', 'lidar_top')
    with pytest.raises(TransformUnavailable):
        buffer.lookup('odom', 'lidar_top', S)


def test_a_new_static_transform_replaces_the_old_one_at_every_time():
    buffer = rig(TransformBuffer())
    moved = pose([1.6, -0.1, 1.4], [0.0, 0.0, 0.0])
    buffer.set_matrix('base_link', 'cam_front', 5 * S, moved, static=True)
    np.testing.assert_allclose(buffer.lookup('base_link', 'cam_front', 1 * S), moved, atol=1e-12)


# ----------------------------------------------------------------------------- against tf2
def _tf2_core():
    tf2 = pytest.importorskip('tf2_py', reason='tf2 is part of a ROS install, not of the pip environment')
    geometry = pytest.importorskip('geometry_msgs.msg')
    core = tf2.BufferCore()

    def put(parent, child, stamp_ns, matrix, static=False):
        message = geometry.TransformStamped(child_frame_id=child)
        message.header.frame_id = parent
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, S)
        translation, rotation = message.transform.translation, message.transform.rotation
        translation.x, translation.y, translation.z = matrix[:3, 3].tolist()
        rotation.x, rotation.y, rotation.z, rotation.w = Rotation.from_matrix(matrix[:3, :3]).as_quat().tolist()
        (core.set_transform_static if static else core.set_transform)(message, 'test')
    return tf2, core, put


def test_lookups_agree_with_tf2s_buffer_core():
    tf2, core, put = _tf2_core()
    from rclpy.time import Time
    from mtl_perception_ros.messages.transforms import transform_to_matrix
    ours = rig(TransformBuffer())
    put('base_link', 'lidar_top', 0, LIDAR, static=True)
    put('base_link', 'cam_front', 0, CAMERA, static=True)
    put('cam_front', 'cam_front_optical', 0, OPTICAL, static=True)
    put('odom', 'base_link', 1 * S, ODOM_1)
    put('odom', 'base_link', 2 * S, ODOM_2)
    for target, source in [('cam_front_optical', 'lidar_top'), ('odom', 'lidar_top'), ('lidar_top', 'odom'),
                           ('odom', 'cam_front_optical')]:
        for stamp in (0, 1 * S, int(1.3 * S), 2 * S):
            theirs = core.lookup_transform_core(target, source, Time(nanoseconds=stamp).to_msg())
            np.testing.assert_allclose(ours.lookup(target, source, stamp), transform_to_matrix(theirs.transform),
                                       atol=1e-9)
        for stamp in (S // 2, 3 * S):
            if target == 'cam_front_optical':
                continue
            with pytest.raises(tf2.ExtrapolationException):
                core.lookup_transform_core(target, source, Time(nanoseconds=stamp).to_msg())
            with pytest.raises(TransformUnavailable):
                ours.lookup(target, source, stamp)
