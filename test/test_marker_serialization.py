"""BoxMarkerSerializer: the bytes of serialize_message(box_markers(...)), written straight from numpy.

rmw leaves CDR padding bytes uninitialised, so rclpy's bytes differ from run to run in the
padding. Two comparisons pin the serializer's bytes down anyway: equal to rclpy's wherever ours
is not 0, with the same message deserialized (cdr_mismatch), and equal, every byte, to rosbags'
re-serialization of rclpy's bytes (an independent CDR writer that zero-fills padding).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ros_test_utils import require_modules, require_ros

require_ros('visualization_msgs.msg')
require_modules('rosbags')
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from rosbags.typesys.base import Nodetype  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from mtl_perception_ros.bags.typestore import bag_message, bag_typestore  # noqa: E402
from mtl_perception_ros.messages import marker_serialization  # noqa: E402
from mtl_perception_ros.messages.conversion_errors import ConversionError  # noqa: E402
from mtl_perception_ros.messages.marker_serialization import (  # noqa: E402
    MARKER_ARRAY_TYPE, MARKER_TYPE, BoxMarkerSerializer, MarkerLayoutError, cdr_mismatch, rosidl_fields)
from mtl_perception_ros.messages.outputs import box_markers  # noqa: E402

CLASS_NAMES = ['car', 'truck', 'pedestrian', 'cyclist']
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
BOXES = np.array([[10.0, 2.0, -0.5, 4.0, 2.0, 1.5, math.pi / 2],
                  [-3.0, -1.0, 0.0, 0.8, 0.6, 1.8, math.pi]])


def lidar_header(frame_id: str = 'lidar_top', sec: int = 1_700_000_000, nanosec: int = 999_999_999) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def random_boxes(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 64, count), rng.uniform(-32, 32, count), rng.normal(size=count),
                            rng.uniform(0.5, 5, (count, 3)), rng.uniform(-3, 3, count)])


def scene(count: int, seed: int = 0, **options) -> dict:
    """box_markers keyword arguments for `count` random boxes (options override)."""
    rng = np.random.default_rng(seed)
    args = dict(boxes=random_boxes(count, seed), class_names=CLASS_NAMES, classes=rng.integers(0, 4, count),
                scores=rng.random(count), header=lidar_header(), colors=COLORS)
    return {**args, **options}


@pytest.fixture(scope='module')
def serializer() -> BoxMarkerSerializer:
    return BoxMarkerSerializer.for_installed_messages()


# ----------------------------------------------------------------------------- rosbags as a second CDR writer
ROSBAGS_BASIC = {'bool': '?', 'byte': 'B', 'char': 'B', 'int8': 'b', 'uint8': 'B', 'int16': 'h', 'uint16': 'H',
                 'int32': 'i', 'uint32': 'I', 'int64': 'q', 'uint64': 'Q', 'float32': 'f', 'float64': 'd'}


def rosbags_type(kind, detail) -> tuple:
    if kind == Nodetype.NAME:
        return ('message', detail)
    if kind == Nodetype.BASE:
        return ('string',) if detail[0] == 'string' else ('basic', ROSBAGS_BASIC[detail[0]])
    element = rosbags_type(*detail[0])
    return ('array', element, detail[1]) if kind == Nodetype.ARRAY else ('sequence', element)


def rosbags_fields(typestore):
    """The serializer's `fields_of` for a rosbags typestore (a distro other than the installed one)."""
    return lambda msgtype: [(name, rosbags_type(kind, detail)) for name, (kind, detail) in
                            typestore.fielddefs[msgtype][1]]


def installed_layout_store():
    """The rosbags typestore whose Marker has the installed Marker's fields."""
    installed = list(Marker.get_fields_and_field_types())
    for store in (Stores.ROS2_KILTED, Stores.ROS2_JAZZY, Stores.ROS2_HUMBLE, Stores.ROS2_FOXY):
        typestore = get_typestore(store)
        if [name for name, _ in typestore.fielddefs[MARKER_TYPE][1]] == installed:
            return typestore
    pytest.fail(f'no rosbags typestore has the installed Marker fields {installed}')


INSTALLED_STORE = installed_layout_store()


def zero_padded(reference: bytes) -> bytes:
    """rclpy's bytes, deserialized and serialized again by rosbags: the same CDR with zero padding."""
    message = INSTALLED_STORE.deserialize_cdr(reference, MARKER_ARRAY_TYPE)
    return bytes(INSTALLED_STORE.serialize_cdr(message, MARKER_ARRAY_TYPE))


def assert_same_bytes(ours: bytes, reference_msg: MarkerArray) -> None:
    reference = serialize_message(reference_msg)
    assert isinstance(ours, bytes)           # what Publisher.publish takes as serialized
    assert cdr_mismatch(ours, reference, MarkerArray) == ''
    assert ours == zero_padded(reference)


# ----------------------------------------------------------------------------- the same bytes as rclpy
BYTE_CASES = {
    'no boxes: only the DELETEALL': scene(0),
    'one box': scene(1),
    'two boxes, track ids 3 and None, lifetime, namespace': dict(
        scene(2), boxes=BOXES, classes=[0, 2], scores=[0.9, 0.45], track_ids=[3, None], namespace='objects',
        lifetime_s=0.25),
    'two boxes, one moving, one standing still': dict(scene(2), velocities=[[0.0, 5.0], [0.0, 0.0]]),
    '300 boxes, track ids, velocities': scene(300, track_ids=list(range(300)),
                                              velocities=np.random.default_rng(1).normal(size=(300, 2))),
    '300 boxes, no track ids, no velocities': scene(300, seed=2),
    'track ids: None, negative, numpy, str': scene(5, track_ids=[None, -1, np.int64(12), '7a', 123456789]),
    'slow and non-finite velocities draw no arrow': scene(
        6, velocities=[[0.049, 0.0], [0.05, 0.0], [math.nan, 1.0], [math.inf, 0.0], [0.0, -math.inf], [-3.0, 4.0]]),
    'lifetime 1.5 s, negative stamp': scene(3, lifetime_s=1.5, header=lidar_header(sec=-5, nanosec=1)),
    'long frame_id and namespace': scene(4, header=lidar_header('f' * 301), namespace='n' * 257,
                                         velocities=np.ones((4, 2))),
    'empty frame_id and namespace': scene(3, header=lidar_header(''), namespace=''),
    'non-ASCII class names, frame_id, namespace': scene(
        4, class_names=['Fußgänger', '自転車', '🚗', 'car'], classes=[0, 1, 2, 3], header=lidar_header('lidar_ü'),
        namespace='détections', track_ids=[1, 22, 333, 4444]),
    'a NUL in a class name ends the text, as in rosidl': scene(2, class_names=['car\0hidden'] * 4),
}


@pytest.mark.parametrize('args', BYTE_CASES.values(), ids=BYTE_CASES.keys())
def test_bytes_are_rclpy_serialization_of_box_markers(serializer, args):
    assert_same_bytes(serializer.serialize(**args), box_markers(**args))


def test_every_string_length_mod_8_keeps_the_alignment(serializer):
    # class names of 1..8 bytes give label texts of every length mod 8 (with 0..2 digit track
    # ids); frame_id and namespace of 0..8 bytes shift every later field by each amount
    names = ['a' * length for length in range(1, 9)]
    boxes = random_boxes(8, seed=3)
    velocities = np.array([[1.0, 0.0], [0.0, 0.0]] * 4)    # arrows after every other label
    for frame_length in range(9):
        for namespace_length in range(9):
            args = dict(boxes=boxes, class_names=names, classes=np.arange(8), scores=np.linspace(0, 1, 8),
                        header=lidar_header('f' * frame_length), colors=COLORS * 2,
                        track_ids=[None, 1, 22, -4, 5, 66, None, 7], velocities=velocities,
                        namespace='n' * namespace_length)
            assert_same_bytes(serializer.serialize(**args), box_markers(**args))


def test_the_markers_are_box_markers_ones(serializer):
    # a reader's view of the same bytes: deserialized, the markers box_markers makes
    args = BYTE_CASES['two boxes, track ids 3 and None, lifetime, namespace']
    msg = deserialize_message(serializer.serialize(**args), MarkerArray)
    clear, outline, label, *_ = msg.markers
    assert clear.action == Marker.DELETEALL and clear.ns == 'objects' and clear.pose.orientation.w == 1.0
    assert [m.id for m in msg.markers] == [0, 0, 1, 2, 3]
    assert outline.type == Marker.LINE_LIST and len(outline.points) == 24 and outline.color.r == 1.0
    assert label.text == 'car 0.90 [3]' and msg.markers[4].text == 'pedestrian 0.45'
    assert (label.lifetime.sec, label.lifetime.nanosec) == (0, 250_000_000)
    assert label.header.frame_id == 'lidar_top' and label.header.stamp.nanosec == 999_999_999


# ----------------------------------------------------------------------------- the same errors
BAD_INPUTS = {
    'boxes not (N, 7)': dict(boxes=BOXES[:, :5]),
    'fewer classes than boxes': dict(classes=[0]),
    'fewer scores than boxes': dict(scores=[0.5]),
    'class id outside the names': dict(classes=[0, 4]),
    'negative class id': dict(classes=[-1, 0]),
    'more track ids than boxes': dict(track_ids=[1, 2, 3]),
    'no colour for a class': dict(colors=COLORS[:2]),
    'velocities not (N, 2)': dict(velocities=np.zeros((2, 3))),
    'negative lifetime': dict(lifetime_s=-1.0),
    'NaN lifetime': dict(lifetime_s=math.nan),
}


@pytest.mark.parametrize('bad', BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_rejects_what_box_markers_rejects_with_the_same_message(serializer, bad):
    args = {**scene(2), 'boxes': BOXES, 'classes': [0, 2], 'scores': [0.9, 0.45], **bad}
    with pytest.raises(ConversionError) as expected:
        box_markers(**args)
    with pytest.raises(ConversionError) as raised:
        serializer.serialize(**args)
    assert str(raised.value) == str(expected.value)


# ----------------------------------------------------------------------------- layouts and the self-check
def test_installed_layout_is_read_from_the_rosidl_classes():
    # the rosidl type strings parse to what rosbags has for the same distro
    for msgtype in (MARKER_TYPE, MARKER_ARRAY_TYPE, 'std_msgs/msg/Header', 'geometry_msgs/msg/Pose'):
        assert rosidl_fields(msgtype) == rosbags_fields(INSTALLED_STORE)(msgtype)
    names = [name for name, _ in rosidl_fields(MARKER_TYPE)]
    assert names == list(Marker.get_fields_and_field_types())


@pytest.mark.parametrize('store', [Stores.ROS2_HUMBLE, Stores.ROS2_FOXY], ids=['humble layout', 'foxy layout'])
def test_other_distro_layouts_match_rosbags_serialization(store):
    # Foxy / Galactic Markers lack texture_resource, texture, uv_coordinates and mesh_file; the
    # serializer follows whichever definition it is given. rosbags messages (bag_message) are the
    # reference: box_markers with new=bag_message, copied into the distro's Marker.
    typestore = get_typestore(store)
    serializer = BoxMarkerSerializer(rosbags_fields(typestore), bag_message(MARKER_TYPE))
    marker_class = typestore.types[MARKER_TYPE]
    fields = [name for name, _ in typestore.fielddefs[MARKER_TYPE][1]]
    for args in (BYTE_CASES['two boxes, track ids 3 and None, lifetime, namespace'],
                 BYTE_CASES['non-ASCII class names, frame_id, namespace'],
                 BYTE_CASES['300 boxes, track ids, velocities']):
        header = args['header']
        args = dict(args, header=bag_message('std_msgs/msg/Header', frame_id=header.frame_id, stamp=bag_message(
            'builtin_interfaces/msg/Time', sec=header.stamp.sec, nanosec=header.stamp.nanosec)))
        markers = [marker_class(**{name: getattr(m, name) for name in fields})
                   for m in box_markers(**args, new=bag_message).markers]
        reference = bytes(typestore.serialize_cdr(typestore.types[MARKER_ARRAY_TYPE](markers=markers),
                                                  MARKER_ARRAY_TYPE))
        assert serializer.serialize(**args) == reference
    humble = BoxMarkerSerializer(rosbags_fields(bag_typestore()), bag_message(MARKER_TYPE))
    assert (len(serializer.serialize(**args)) < len(humble.serialize(**args))) == (store == Stores.ROS2_FOXY)


def test_self_check_passes_for_the_installed_messages(serializer):
    assert serializer.self_check() == ''


def test_self_check_catches_a_layout_that_is_not_the_installed_one(monkeypatch):
    def without_mesh_resource(msgtype):
        return [(name, kind) for name, kind in rosidl_fields(msgtype) if name != 'mesh_resource']

    wrong = BoxMarkerSerializer(without_mesh_resource, Marker())
    assert 'bytes' in wrong.self_check()
    monkeypatch.setattr(marker_serialization, 'rosidl_fields', without_mesh_resource)
    with pytest.raises(MarkerLayoutError, match='differs from rclpy serialize_message'):
        BoxMarkerSerializer.for_installed_messages()


@pytest.mark.parametrize('change, message', [
    (lambda fields: [f for f in fields if f[0] != 'pose'], r"no field \['pose'\]"),
    (lambda fields: [(n, ('basic', 'd') if n == 'id' else t) for n, t in fields], 'id has leaves'),
    (lambda fields: [(n, ('sequence', ('basic', 'd')) if n == 'points' else t) for n, t in fields], 'points is'),
    (lambda fields: sorted(fields, key=lambda f: f[0] != 'text'), 'comes after text'),
])
def test_layouts_it_cannot_write_are_refused(change, message):
    def fields_of(msgtype):
        fields = rosidl_fields(msgtype)
        return change(fields) if msgtype == MARKER_TYPE else fields

    with pytest.raises(MarkerLayoutError, match=message):
        BoxMarkerSerializer(fields_of, Marker())


def test_cdr_mismatch_sees_data_but_not_padding_differences(serializer):
    args = BYTE_CASES['two boxes, track ids 3 and None, lifetime, namespace']
    ours, reference = serializer.serialize(**args), serialize_message(box_markers(**args))
    assert cdr_mismatch(ours, reference, MarkerArray) == ''
    text_at = ours.index(b'car 0.90 [3]')
    changed = ours[:text_at] + b'b' + ours[text_at + 1:]
    assert 'differ, first at offset' in cdr_mismatch(changed, reference, MarkerArray)
    zeroed = ours[:text_at] + b'\0' + ours[text_at + 1:]     # a zero where rclpy has data: seen by deserializing
    assert 'deserialize to a different message' in cdr_mismatch(zeroed, reference, MarkerArray)
    assert 'bytes, expected' in cdr_mismatch(ours + b'\0', reference)


# ----------------------------------------------------------------------------- over DDS
@pytest.mark.ros
def test_published_bytes_arrive_as_the_box_markers_message(rclpy_context, serializer):
    node = rclpy_context.create_node('marker_bytes_test')
    received = {}
    publishers = {}
    for topic in ('markers_as_bytes', 'markers_as_objects'):
        node.create_subscription(MarkerArray, topic, lambda msg, topic=topic: received.setdefault(topic, msg), 10)
        publishers[topic] = node.create_publisher(MarkerArray, topic, 10)
    rclpy_context.spin_until(lambda: all(p.get_subscription_count() for p in publishers.values()), 20,
                             'the subscriptions to match')
    args = dict(BYTE_CASES['300 boxes, track ids, velocities'],
                class_names=['Fußgänger', 'truck', 'pedestrian', 'cyclist'])
    publishers['markers_as_bytes'].publish(serializer.serialize(**args))
    publishers['markers_as_objects'].publish(box_markers(**args))
    rclpy_context.spin_until(lambda: len(received) == 2, 20, 'both MarkerArrays')

    from_bytes = received['markers_as_bytes']
    assert from_bytes == received['markers_as_objects']
    assert len(from_bytes.markers) == len(box_markers(**args).markers) > 600
    label = next(m for m in from_bytes.markers if m.type == Marker.TEXT_VIEW_FACING and 'Fuß' in m.text)
    assert label.text.startswith('Fußgänger ') and label.ns == 'detections'
