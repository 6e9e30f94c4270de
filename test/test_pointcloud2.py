"""PointCloud2 <-> numpy: layouts a real driver may publish, read back to the values put in.

Clouds are built byte by byte with struct.pack (independent of the code under test) wherever the
layout is the point of the test; round trips use array_to_pointcloud2.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from ros_test_utils import require_modules

require_modules('sensor_msgs.msg', 'std_msgs.msg')    # the messages only: no rclpy needed
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header

from mtl_perception_ros.messages.pointcloud2 import ConversionError, array_to_pointcloud2, pointcloud2_to_array


def cloud_from_bytes(rows: list[bytes], fields: list[tuple[str, int, int]], point_step: int, width: int,
                     is_bigendian: bool = False, row_step: int | None = None) -> PointCloud2:
    """A PointCloud2 whose data is the given rows (each row = width points + any row padding)."""
    msg = PointCloud2()
    msg.height, msg.width = len(rows), width
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields]
    msg.is_bigendian = is_bigendian
    msg.point_step = point_step
    msg.row_step = len(rows[0]) if row_step is None else row_step
    msg.data = b''.join(rows)
    return msg


# A driver-like layout, fields not in x, y, z order and of mixed types, with 2 padding bytes:
# intensity uint8 @0, (3 pad), z float64 @4, x float32 @12, y int16 @16, (2 pad) -> point_step 20.
SHUFFLED_FIELDS = [('intensity', 0, PointField.UINT8), ('z', 4, PointField.FLOAT64),
                   ('x', 12, PointField.FLOAT32), ('y', 16, PointField.INT16)]
SHUFFLED_POINTS = [(1.5, -3, 0.25, 200), (-2.0, 7, -1.75, 0), (100.0, -32768, 1e3, 255)]  # x, y, z, intensity


def pack_shuffled(order: str, points) -> list[bytes]:
    return [b''.join(struct.pack(order + 'B3xdfh2x', i, z, x, y) for x, y, z, i in points)]


@pytest.mark.parametrize('order, is_bigendian', [('<', False), ('>', True)])
def test_shuffled_fields_explicit_offsets_padding_and_endianness(order, is_bigendian):
    msg = cloud_from_bytes(pack_shuffled(order, SHUFFLED_POINTS), SHUFFLED_FIELDS, point_step=20, width=3,
                           is_bigendian=is_bigendian)
    points, dropped = pointcloud2_to_array(msg)
    assert points.dtype == np.float32 and points.shape == (3, 4) and dropped == 0
    np.testing.assert_array_equal(points, np.array(SHUFFLED_POINTS, dtype=np.float32))
    # columns follow the requested order, whatever the message order
    points, _ = pointcloud2_to_array(msg, field_names=('intensity', 'y'))
    np.testing.assert_array_equal(points, [[200, -3], [0, 7], [255, -32768]])


def test_float32_runs_with_gaps_and_reversed_order():
    # x, y float32 adjacent, then a 4-byte gap, then z: raw-copy runs [x, y] and [z]
    points = [(1.0, 2.0, 3.0), (-4.0, 5.5, 6.25)]
    rows = [b''.join(struct.pack('<ff4xf', *p) for p in points)]
    msg = cloud_from_bytes(rows, [('x', 0, 7), ('y', 4, 7), ('z', 12, 7)], point_step=16, width=2)
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('x', 'y', 'z'))[0], points)
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('z', 'y', 'x'))[0], np.array(points)[:, ::-1])
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('y',))[0], [[2.0], [5.5]])


def test_organized_cloud_with_row_padding_is_flattened_row_major():
    # 2 rows x 3 points of (x, y, z) float32; each row padded with 5 bytes of 0xFF (NaN if misread)
    values = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    rows = [values[r].tobytes() + b'\xff' * 5 for r in range(2)]
    msg = cloud_from_bytes(rows, [('x', 0, 7), ('y', 4, 7), ('z', 8, 7)], point_step=12, width=3)
    assert msg.row_step == 41
    points, dropped = pointcloud2_to_array(msg, ('x', 'y', 'z'))
    np.testing.assert_array_equal(points, values.reshape(6, 3))
    assert dropped == 0


def test_organized_round_trip_keeps_height_and_width():
    values = np.random.default_rng(1).normal(size=(4, 5, 4)).astype(np.float32)
    msg = array_to_pointcloud2(values)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 5, 16, 80)
    np.testing.assert_array_equal(pointcloud2_to_array(msg)[0], values.reshape(20, 4))


@pytest.mark.parametrize('dtype, values', [
    (np.int8, [-128, -1, 0, 127]), (np.uint8, [0, 1, 200, 255]),
    (np.int16, [-32768, -5, 9, 32767]), (np.uint16, [0, 7, 1000, 65535]),
    (np.int32, [-2 ** 31, -3, 65536, 2 ** 24]), (np.uint32, [0, 5, 2 ** 24, 2 ** 32 - 256]),
    (np.float32, [-1.5, 0.0, 3.25, 1e30]), (np.float64, [-2.5, 1e-3, 7.0, 123.5])])
@pytest.mark.parametrize('is_bigendian', [False, True])
def test_round_trip_each_point_field_datatype(dtype, values, is_bigendian):
    expected_datatype = {np.int8: 1, np.uint8: 2, np.int16: 3, np.uint16: 4, np.int32: 5, np.uint32: 6,
                         np.float32: 7, np.float64: 8}[dtype]
    points = np.zeros((4, 4))
    points[:, 0] = [1, 2, 3, 4]
    points[:, 3] = values
    msg = array_to_pointcloud2(points, dtypes={'intensity': dtype}, is_bigendian=is_bigendian)
    assert msg.fields[3].datatype == expected_datatype
    assert msg.point_step == 12 + np.dtype(dtype).itemsize
    # the value lands at offset 12 in the requested byte order (checked with struct, not numpy)
    code = {1: 'b', 2: 'B', 3: 'h', 4: 'H', 5: 'i', 6: 'I', 7: 'f', 8: 'd'}[expected_datatype]
    first = struct.unpack_from(('>' if is_bigendian else '<') + code, bytes(msg.data), 12)[0]
    assert first == pytest.approx(values[0], rel=1e-6)
    read, _ = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(read, points.astype(np.float32))


def test_writer_layout_matches_explicit_offsets_and_point_step():
    points = np.array([[1.0, 2.0, 3.0, 0.5, 17, 0.125]])
    names = ('x', 'y', 'z', 'intensity', 'ring', 'time')
    msg = array_to_pointcloud2(points, names, dtypes={'ring': np.uint16}, offsets=[0, 4, 8, 12, 16, 20],
                               point_step=32, header=Header(frame_id='lidar'))
    assert msg.header.frame_id == 'lidar' and msg.point_step == 32 and len(msg.data) == 32
    data = bytes(msg.data)
    assert struct.unpack('<ffffH2xf8x', data) == (1.0, 2.0, 3.0, 0.5, 17, 0.125)  # padding is zero
    assert data[18:20] == b'\0\0' and data[24:] == b'\0' * 8


def test_nonfinite_points_are_dropped_and_counted():
    points = np.array([[0, 0, 0, 1], [np.nan, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, np.inf], [4, -np.inf, 4, 4]],
                      dtype=np.float32)
    msg = array_to_pointcloud2(points)
    assert msg.is_dense is False
    kept, dropped = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(kept, [[0, 0, 0, 1], [2, 2, 2, 2]])
    assert dropped == 3
    all_points, dropped = pointcloud2_to_array(msg, drop_nonfinite=False)
    assert all_points.shape == (5, 4) and dropped == 0 and np.isnan(all_points[1, 0])
    # only the requested fields decide: y -inf (point 4) and intensity inf (point 3) are not read here
    kept, dropped = pointcloud2_to_array(msg, ('x', 'z'))
    assert dropped == 1 and kept[:, 0].tolist() == [0, 2, 3, 4]


def test_scales_apply_per_field():
    points = np.array([[1, 2, 3, 255], [4, 5, 6, 51]], dtype=np.float64)
    msg = array_to_pointcloud2(points, dtypes={'intensity': np.uint8})
    read, _ = pointcloud2_to_array(msg, scales={'intensity': 1 / 255})
    np.testing.assert_allclose(read, [[1, 2, 3, 1.0], [4, 5, 6, 0.2]], rtol=1e-6)
    read, _ = pointcloud2_to_array(msg, ('intensity', 'x'), scales=[0.5, None])
    np.testing.assert_array_equal(read, [[127.5, 1], [25.5, 4]])
    with pytest.raises(ValueError, match='intensty'):
        pointcloud2_to_array(msg, scales={'intensty': 2.0})


def test_empty_cloud_gives_zero_rows():
    msg = array_to_pointcloud2(np.zeros((0, 4)))
    points, dropped = pointcloud2_to_array(msg)
    assert points.shape == (0, 4) and points.dtype == np.float32 and dropped == 0


def test_missing_field_names_what_exists():
    msg = cloud_from_bytes([struct.pack('<ffff', 1, 2, 3, 4)], [('x', 0, 7), ('y', 4, 7), ('z', 8, 7),
                                                                 ('reflectance', 12, 7)], 16, 1)
    with pytest.raises(ConversionError, match=r"no field 'intensity'.*reflectance"):
        pointcloud2_to_array(msg)
    assert pointcloud2_to_array(msg, ('x', 'y', 'z', 'reflectance'))[0].tolist() == [[1, 2, 3, 4]]


def test_truncated_and_inconsistent_sizes_are_rejected():
    msg = array_to_pointcloud2(np.ones((10, 4), dtype=np.float32))
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ConversionError, match=r'159 bytes, expected row_step 160 \* height 1 = 160'):
        pointcloud2_to_array(msg)
    msg.data = bytes(160 + 1)  # trailing bytes are as wrong as missing ones
    with pytest.raises(ConversionError, match=r'161 bytes, expected row_step 160'):
        pointcloud2_to_array(msg)
    msg = array_to_pointcloud2(np.ones((10, 4), dtype=np.float32))
    msg.row_step = 150
    with pytest.raises(ConversionError, match='row_step 150 is smaller than width 10'):
        pointcloud2_to_array(msg)
    msg = array_to_pointcloud2(np.ones((10, 4), dtype=np.float32))
    msg.height = 2
    with pytest.raises(ConversionError, match='expected row_step 160 \\* height 2 = 320'):
        pointcloud2_to_array(msg)


@pytest.mark.parametrize('field, message', [
    (PointField(name='intensity', offset=14, datatype=7, count=1), 'offset 14 \\+ 4 bytes \\(FLOAT32\\) does not fit'),
    (PointField(name='intensity', offset=12, datatype=9, count=1), 'datatype 9 is not a PointField type'),
    (PointField(name='intensity', offset=12, datatype=7, count=3), 'count 3, expected 1')])
def test_bad_field_descriptions_are_rejected(field, message):
    msg = array_to_pointcloud2(np.ones((2, 4), dtype=np.float32))
    msg.fields = list(msg.fields[:3]) + [field]
    with pytest.raises(ConversionError, match=message):
        pointcloud2_to_array(msg)


def test_writer_rejects_bad_input():
    with pytest.raises(ConversionError, match=r'expected \(N, 4\)'):
        array_to_pointcloud2(np.zeros((3, 3)))
    with pytest.raises(ConversionError, match="field 'ring'.*uint8 range"):
        array_to_pointcloud2(np.array([[0, 0, 0, 256.0]]), ('x', 'y', 'z', 'ring'), dtypes={'ring': np.uint8})
    with pytest.raises(ConversionError, match='no PointField datatype'):
        array_to_pointcloud2(np.zeros((1, 4)), dtypes={'x': np.int64})
    with pytest.raises(ConversionError, match='overlap'):
        array_to_pointcloud2(np.zeros((1, 4)), offsets=[0, 2, 8, 12])


def test_reads_rosbags_deserialized_message():
    """Offline replay reads messages through rosbags, whose `data` is a numpy array."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore

    points = np.array([[1, 2, 3, 0.5], [math.nan, 0, 0, 0], [-1, -2, -3, 0.25]], dtype=np.float32)
    raw = serialize_message(array_to_pointcloud2(points, header=Header(frame_id='lidar')))
    bag_msg = get_typestore(Stores.ROS2_HUMBLE).deserialize_cdr(raw, 'sensor_msgs/msg/PointCloud2')
    assert isinstance(bag_msg.data, np.ndarray)
    read, dropped = pointcloud2_to_array(bag_msg)
    np.testing.assert_array_equal(read, points[[0, 2]])
    assert dropped == 1


def test_requested_fields_that_share_bytes_are_rejected():
    # every field a UINT8 at offset 0 of a 1-byte point: each byte of the buffer would become a point
    all_at_zero = [(name, 0, PointField.UINT8) for name in ('x', 'y', 'z', 'intensity')]
    msg = cloud_from_bytes([bytes(200_000)], all_at_zero, point_step=1, width=200_000)
    with pytest.raises(ConversionError, match=r"fields 'x' \(UINT8 at offset 0, 1 bytes\) and 'y' "
                                              r'\(UINT8 at offset 0\) overlap; requested fields must not share bytes'):
        pointcloud2_to_array(msg)
    # a float32 intensity starting inside z
    msg = cloud_from_bytes([bytes(16)], [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 10, 7)], 16, 1)
    with pytest.raises(ConversionError, match=r"'z' \(FLOAT32 at offset 8, 4 bytes\) and 'intensity' "
                                              r'\(FLOAT32 at offset 10\) overlap'):
        pointcloud2_to_array(msg)
    # fields not requested may overlap (they are not read), and a field asked for twice is one field
    msg = cloud_from_bytes([struct.pack('<ffff', 1, 2, 3, 4)], [('x', 0, 7), ('y', 4, 7), ('z', 8, 7),
                                                                 ('intensity', 12, 7), ('rgb', 12, 7)], 16, 1)
    assert pointcloud2_to_array(msg)[0].tolist() == [[1, 2, 3, 4]]
    assert pointcloud2_to_array(msg, ('x', 'x'))[0].tolist() == [[1, 1]]


def test_a_field_past_point_step_is_rejected_before_reading_bytes_as_points():
    msg = cloud_from_bytes([bytes(200_000)], [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7)],
                           point_step=1, width=200_000)
    with pytest.raises(ConversionError, match=r"field 'x': offset 0 \+ 4 bytes \(FLOAT32\) does not fit in "
                                              'point_step 1'):
        pointcloud2_to_array(msg)


def test_negative_sizes_of_a_hand_made_message_are_named():
    """rosbags / duck-typed messages do not enforce uint32: a negative size is a clear error, not a numpy one."""
    from types import SimpleNamespace
    fields = [SimpleNamespace(name=n, offset=o, datatype=7, count=1) for n, o in (('x', 0), ('y', 4), ('z', 8))]
    msg = SimpleNamespace(height=-1, width=-1, point_step=12, row_step=0, is_bigendian=False, data=b'', fields=fields)
    with pytest.raises(ConversionError, match='PointCloud2: height -1, width -1, expected >= 0'):
        pointcloud2_to_array(msg, ('x', 'y', 'z'))


def test_a_value_that_the_scale_takes_past_float32_is_dropped_as_non_finite():
    msg = array_to_pointcloud2(np.array([[1, 2, 3, 3e38], [4, 5, 6, 100]], dtype=np.float32))
    read, dropped = pointcloud2_to_array(msg, scales={'intensity': 10.0})
    assert dropped == 1 and read.tolist() == [[4, 5, 6, 1000]]
    msg = array_to_pointcloud2(np.array([[1, 2, 3, 200]]), dtypes={'intensity': np.uint8})   # integer field
    assert pointcloud2_to_array(msg, scales={'intensity': 3e37})[1] == 1
