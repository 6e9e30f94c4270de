"""sensor_msgs/Image <-> numpy: each encoding a camera driver may publish, read back as RGB."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from ros_test_utils import require_modules

require_modules('sensor_msgs.msg', 'std_msgs.msg')    # the messages only: no rclpy needed
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header

from mtl_perception_ros.messages.image import (ConversionError, image_to_mono8, image_to_rgb, mono8_to_image,
                                               rgb_to_image)

# 2 x 3 RGB image worked out by hand
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [40, 50, 60], [70, 80, 90]]], dtype=np.uint8)


def image_message(pixel_rows: np.ndarray, encoding: str, row_padding: int = 0, is_bigendian: bool = False,
                  as_bytes: bool = False) -> Image:
    """Image with the given (H, W, bytes per pixel) uint8 pixel bytes and `row_padding` 0xEE bytes per row."""
    height, width = pixel_rows.shape[:2]
    rows = pixel_rows.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, row_padding), 0xEE, dtype=np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=padded.shape[1])
    msg.data = padded.tobytes() if as_bytes else list(padded.reshape(-1).tolist())
    return msg


ALPHA = np.full(RGB.shape[:2] + (1,), 99, dtype=np.uint8)
SOURCES = {
    'rgb8': RGB,
    'bgr8': RGB[..., ::-1],
    'rgba8': np.concatenate([RGB, ALPHA], axis=2),
    'bgra8': np.concatenate([RGB[..., ::-1], ALPHA], axis=2),
}


@pytest.mark.parametrize('row_padding', [0, 5])
@pytest.mark.parametrize('encoding', sorted(SOURCES))
def test_colour_encodings_give_rgb(encoding, row_padding):
    rgb = image_to_rgb(image_message(SOURCES[encoding], encoding, row_padding))
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, RGB)


@pytest.mark.parametrize('row_padding', [0, 3])
def test_mono8_is_repeated_into_three_channels(row_padding):
    grey = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    rgb = image_to_rgb(image_message(grey[..., None], 'mono8', row_padding, as_bytes=True))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize('row_padding', [0, 1])
@pytest.mark.parametrize('order, is_bigendian', [('<', False), ('>', True)])
def test_mono16_keeps_the_top_byte_in_the_message_byte_order(order, is_bigendian, row_padding):
    values = [[0x1234, 0xFF00, 0x00FF], [0xABCD, 0x0100, 0xFFFF]]
    expected = [[0x12, 0xFF, 0x00], [0xAB, 0x01, 0xFF]]
    pixel_bytes = np.frombuffer(struct.pack(order + '6H', *sum(values, [])), dtype=np.uint8).reshape(2, 3, 2)
    rgb = image_to_rgb(image_message(pixel_bytes, 'mono16', row_padding, is_bigendian=is_bigendian))
    np.testing.assert_array_equal(rgb, np.repeat(np.array(expected, dtype=np.uint8)[..., None], 3, axis=2))


def test_unpadded_rgb8_is_a_zero_copy_view_and_padded_is_copied():
    msg = image_message(RGB, 'rgb8')
    rgb = image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, dtype=np.uint8))
    padded = image_message(RGB, 'rgb8', row_padding=2)
    assert not np.shares_memory(image_to_rgb(padded), np.frombuffer(padded.data, dtype=np.uint8))


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1', 'bayer_rggb12', ''])
def test_unsupported_encoding_is_named(encoding):
    msg = image_message(RGB, 'rgb8')
    msg.encoding = encoding
    with pytest.raises(ConversionError, match=f"encoding '{encoding}' is not supported.*'bgr8'"):
        image_to_rgb(msg)


def test_step_and_size_mismatches_are_rejected():
    msg = image_message(RGB, 'bgr8')
    msg.step = 8
    with pytest.raises(ConversionError, match=r'bgr8, 3x2\): step 8 is smaller than width 3 \* 3 bytes per pixel = 9'):
        image_to_rgb(msg)
    msg = image_message(RGB, 'bgr8')
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ConversionError, match=r'data has 17 bytes, expected step 9 \* height 2 = 18'):
        image_to_rgb(msg)
    msg = image_message(RGB, 'rgb8')
    msg.height = 3
    with pytest.raises(ConversionError, match=r'expected step 9 \* height 3 = 27'):
        image_to_rgb(msg)


@pytest.mark.parametrize('row_padding', [0, 4])
def test_mono8_class_map(row_padding):
    class_map = np.array([[0, 1, 2], [12, 255, 3]], dtype=np.uint8)
    msg = image_message(class_map[..., None], 'mono8', row_padding)
    read = image_to_mono8(msg)
    assert read.shape == (2, 3) and read.flags.c_contiguous
    np.testing.assert_array_equal(read, class_map)
    with pytest.raises(ConversionError, match="encoding 'rgb8' is not supported here; expected one of \\['mono8'\\]"):
        image_to_mono8(image_message(RGB, 'rgb8'))


def test_rgb_and_mono8_images_are_built_and_read_back():
    header = Header(frame_id='camera_front')
    msg = rgb_to_image(RGB, header)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ('rgb8', 2, 3, 9, 0)
    assert msg.header.frame_id == 'camera_front'
    assert bytes(msg.data) == RGB.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    # a non-contiguous input (a crop) is laid out row by row
    crop = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)[1:3, 1:4]
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(crop)), crop)

    class_map = np.array([[3, 4, 5], [6, 7, 8]], dtype=np.uint8)
    msg = mono8_to_image(class_map)
    assert (msg.encoding, msg.step, bytes(msg.data)) == ('mono8', 3, bytes([3, 4, 5, 6, 7, 8]))
    np.testing.assert_array_equal(image_to_mono8(msg), class_map)


def test_builders_reject_wrong_shapes_and_types():
    with pytest.raises(ConversionError, match=r'expected \(H, W, 3\) uint8'):
        rgb_to_image(RGB.astype(np.float32))
    with pytest.raises(ConversionError, match=r'expected \(H, W, 3\) uint8'):
        rgb_to_image(RGB[..., :2])
    with pytest.raises(ConversionError, match=r'expected \(H, W\) uint8'):
        mono8_to_image(RGB)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'mono16'])
@pytest.mark.parametrize('width, height', [(3, 0), (0, 2), (0, 0)])
def test_an_image_of_zero_width_or_height_is_a_conversion_error(encoding, width, height):
    msg = Image(height=height, width=width, encoding=encoding, step=width * (2 if encoding == 'mono16' else 3))
    message = rf'Image \({encoding}\): width {width}, height {height}, expected both > 0'
    with pytest.raises(ConversionError, match=message):
        image_to_rgb(msg)
    if encoding == 'mono8':
        with pytest.raises(ConversionError, match=message):
            image_to_mono8(msg)
