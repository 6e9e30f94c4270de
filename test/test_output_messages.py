"""Detection messages follow the metric BEV convention of mtl_perception_ros.messages.outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ros_test_utils import require_ros

require_ros('vision_msgs.msg', 'visualization_msgs.msg')   # rclpy too: its serialization is tested
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import Marker, MarkerArray

from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.messages.outputs import (box_markers, detection2d_array, detection3d_array,
                                                 label_info)

CLASS_NAMES = ['car', 'truck', 'pedestrian', 'cyclist']
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
# a car 10 m ahead heading left (yaw 90 deg), a pedestrian behind-right facing backwards
BOXES = np.array([[10.0, 2.0, -0.5, 4.0, 2.0, 1.5, math.pi / 2],
                  [-3.0, -1.0, 0.0, 0.8, 0.6, 1.8, math.pi]])
CLASSES = np.array([0, 2])
SCORES = np.array([0.9, 0.45])


def lidar_header() -> Header:
    header = Header(frame_id='lidar_top')
    header.stamp.sec, header.stamp.nanosec = 12, 500
    return header


def test_detection2d_is_a_metric_bev_box():
    msg = detection2d_array(BOXES, CLASS_NAMES, CLASSES, SCORES, lidar_header(), track_ids=[7, -1])
    assert msg.header.frame_id == 'lidar_top' and msg.header.stamp.sec == 12
    car, pedestrian = msg.detections
    assert car.header.frame_id == 'lidar_top'
    assert (car.bbox.center.position.x, car.bbox.center.position.y) == (10.0, 2.0)
    assert car.bbox.center.theta == pytest.approx(math.pi / 2)
    assert (car.bbox.size_x, car.bbox.size_y) == (4.0, 2.0)  # length along heading, then width
    assert car.results[0].hypothesis.class_id == 'car' and car.results[0].hypothesis.score == pytest.approx(0.9)
    assert car.id == '7' and pedestrian.id == ''  # negative id = not tracked
    assert pedestrian.results[0].hypothesis.class_id == 'pedestrian'
    # what goes over the wire comes back the same
    back = deserialize_message(serialize_message(msg), Detection2DArray)
    assert back.detections[1].bbox.size_x == pytest.approx(0.8)


def test_detection3d_carries_yaw_as_a_quaternion_about_z():
    msg = detection3d_array(BOXES, CLASS_NAMES, CLASSES, SCORES, lidar_header())
    car, pedestrian = msg.detections
    position, orientation = car.bbox.center.position, car.bbox.center.orientation
    assert (position.x, position.y, position.z) == (10.0, 2.0, -0.5)
    # yaw 90 deg -> (0, 0, sin 45, cos 45)
    assert (orientation.x, orientation.y) == (0.0, 0.0)
    assert orientation.z == pytest.approx(math.sqrt(0.5)) and orientation.w == pytest.approx(math.sqrt(0.5))
    assert (car.bbox.size.x, car.bbox.size.y, car.bbox.size.z) == (4.0, 2.0, 1.5)
    # yaw 180 deg -> (0, 0, 1, 0)
    assert pedestrian.bbox.center.orientation.z == pytest.approx(1.0)
    assert pedestrian.bbox.center.orientation.w == pytest.approx(0.0, abs=1e-12)
    result = car.results[0]
    assert result.hypothesis.class_id == 'car' and result.hypothesis.score == pytest.approx(0.9)
    assert result.pose.pose == car.bbox.center and result.pose.pose is not car.bbox.center
    assert car.id == '' and pedestrian.id == ''
    back = deserialize_message(serialize_message(msg), Detection3DArray)
    assert back.detections[0].results[0].pose.pose.orientation.z == pytest.approx(math.sqrt(0.5))


def test_empty_detections():
    header = lidar_header()
    assert detection2d_array(np.zeros((0, 7)), CLASS_NAMES, [], [], header).detections == []
    assert detection3d_array(np.zeros((0, 7)), CLASS_NAMES, [], [], header).detections == []
    markers = box_markers(np.zeros((0, 7)), CLASS_NAMES, [], [], header, COLORS).markers
    assert len(markers) == 1 and markers[0].action == Marker.DELETEALL


def test_markers_start_with_deleteall_then_outline_label_per_box():
    msg = box_markers(BOXES, CLASS_NAMES, CLASSES, SCORES, lidar_header(), COLORS, track_ids=[3, None],
                      namespace='objects', lifetime_s=0.25)
    clear, *drawn = msg.markers
    assert clear.action == Marker.DELETEALL and clear.ns == 'objects'
    assert [m.type for m in drawn] == [Marker.LINE_LIST, Marker.TEXT_VIEW_FACING] * 2
    assert [m.id for m in drawn] == [0, 1, 2, 3] and {m.ns for m in drawn} == {'objects'}
    assert all(m.action == Marker.ADD and m.header.frame_id == 'lidar_top' for m in drawn)
    assert (drawn[0].lifetime.sec, drawn[0].lifetime.nanosec) == (0, 250_000_000)

    outline, label = drawn[0], drawn[1]
    assert (outline.color.r, outline.color.g, outline.color.b, outline.color.a) == (1.0, 0.0, 0.0, 1.0)
    points = np.array([[p.x, p.y, p.z] for p in outline.points])
    assert points.shape == (24, 3)
    # the car (yaw 90 deg) spans x 10 +- 1 (width), y 2 +- 2 (length), z -0.5 +- 0.75
    np.testing.assert_allclose(points.min(axis=0), [9.0, 0.0, -1.25], atol=1e-9)
    np.testing.assert_allclose(points.max(axis=0), [11.0, 4.0, 0.25], atol=1e-9)
    # 12 distinct edges, each joining two corners that differ along exactly one box axis
    edges = {tuple(sorted(map(tuple, np.round(points[i:i + 2], 9)))) for i in range(0, 24, 2)}
    assert len(edges) == 12
    lengths = sorted(np.linalg.norm(points[0::2] - points[1::2], axis=1).round(9))
    assert lengths == [1.5] * 4 + [2.0] * 4 + [4.0] * 4

    assert label.text == 'car 0.90 [3]' and drawn[3].text == 'pedestrian 0.45'
    assert (label.pose.position.x, label.pose.position.y) == (10.0, 2.0)
    assert label.pose.position.z == pytest.approx(-0.5 + 0.75 + 0.5)


def test_velocity_arrows_from_centre_to_position_in_one_second():
    velocities = np.array([[0.0, 5.0], [0.0, 0.0]])  # the pedestrian stands still: no arrow
    msg = box_markers(BOXES, CLASS_NAMES, CLASSES, SCORES, lidar_header(), COLORS, velocities=velocities)
    types = [m.type for m in msg.markers[1:]]
    assert types == [Marker.LINE_LIST, Marker.TEXT_VIEW_FACING, Marker.ARROW,
                     Marker.LINE_LIST, Marker.TEXT_VIEW_FACING]
    arrow = msg.markers[3]
    start, end = arrow.points
    assert (start.x, start.y, start.z) == (10.0, 2.0, -0.5)
    assert (end.x, end.y, end.z) == (10.0, 7.0, -0.5)
    assert len({m.id for m in msg.markers[1:]}) == 5
    back = deserialize_message(serialize_message(msg), MarkerArray)
    assert back.markers[3].points[1].y == pytest.approx(7.0)


def test_builders_reject_inconsistent_input():
    header = lidar_header()
    with pytest.raises(ConversionError, match=r'expected \(N, 7\)'):
        detection2d_array(BOXES[:, :5], CLASS_NAMES, CLASSES, SCORES, header)
    with pytest.raises(ConversionError, match='2 boxes but 1 classes'):
        detection3d_array(BOXES, CLASS_NAMES, CLASSES[:1], SCORES, header)
    with pytest.raises(ConversionError, match=r'class ids \[0, 4\] outside 0..3'):
        detection3d_array(BOXES, CLASS_NAMES, [0, 4], SCORES, header)
    with pytest.raises(ConversionError, match='2 boxes but 3 track ids'):
        detection2d_array(BOXES, CLASS_NAMES, CLASSES, SCORES, header, track_ids=[1, 2, 3])
    with pytest.raises(ConversionError, match='class id 2 has no colour'):
        box_markers(BOXES, CLASS_NAMES, CLASSES, SCORES, header, COLORS[:2])
    with pytest.raises(ConversionError, match=r'expected \(2, 2\)'):
        box_markers(BOXES, CLASS_NAMES, CLASSES, SCORES, header, COLORS, velocities=np.zeros((2, 3)))


def test_label_info_lists_class_ids_and_names():
    labels = LabelSet(names=('road', 'car', 'sky'), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3)), name='sem')
    msg = label_info(labels, Header(frame_id='camera'), threshold=0.3)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, 'road'), (1, 'car'), (2, 'sky')]
    assert msg.threshold == pytest.approx(0.3) and msg.header.frame_id == 'camera'
    assert deserialize_message(serialize_message(msg), LabelInfo).class_map[2].class_name == 'sky'
