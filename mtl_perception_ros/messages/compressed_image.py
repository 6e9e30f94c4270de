"""sensor_msgs/CompressedImage (JPEG or PNG) <-> numpy RGB, decoded and encoded with OpenCV.

Reading accepts the `format` strings image_transport's compressed plugin writes ('jpeg', 'png',
'rgb8; jpeg compressed bgr8', 'bgr8; png compressed bgr8', 'mono8; jpeg compressed mono8', ...)
and sniffs the data's magic bytes, so an empty or odd format string still decodes a JPEG or PNG.
compressedDepth (depth images) is refused. Grey images come back as RGB; 16-bit PNGs keep their
top 8 bits. Duck-typed: rclpy or rosbags messages, no rclpy import.
"""
from __future__ import annotations

import cv2
import numpy as np

from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message
from mtl_perception_ros.messages.pointcloud2 import buffer_as_uint8

__all__ = ['compressed_image_to_rgb', 'rgb_to_compressed_image']

_MAGIC = {b'\xff\xd8\xff': 'jpeg', b'\x89PNG\r\n\x1a\n': 'png'}


def _container(fmt: str, data: np.ndarray) -> str | None:
    for magic, name in _MAGIC.items():
        if data[:len(magic)].tobytes() == magic:
            return name
    lowered = fmt.lower()
    return 'jpeg' if ('jpeg' in lowered or 'jpg' in lowered) else 'png' if 'png' in lowered else None


def compressed_image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB.

    Raises:
        ConversionError: compressedDepth, empty data, neither JPEG nor PNG, or data OpenCV cannot decode.
    """
    fmt = str(msg.format)
    if 'compresseddepth' in fmt.lower().replace(' ', ''):
        raise ConversionError(f"CompressedImage format {fmt!r}: compressedDepth (depth images) is not a camera image")
    data = buffer_as_uint8(msg.data)
    if data.size == 0:
        raise ConversionError(f'CompressedImage (format {fmt!r}): no data')
    if _container(fmt, data) is None:
        raise ConversionError(f'CompressedImage format {fmt!r}: neither JPEG nor PNG data (first bytes '
                              f'{data[:8].tobytes()!r})')
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ConversionError(f'CompressedImage (format {fmt!r}, {data.size} bytes): OpenCV cannot decode it '
                              '(truncated or damaged)')
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise ConversionError(f'CompressedImage (format {fmt!r}): pixels of type {decoded.dtype} are not supported')
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    code = cv2.COLOR_BGRA2RGB if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(decoded, code)


def rgb_to_compressed_image(rgb: np.ndarray, header=None, *, format: str = 'jpeg', quality: int = 90,  # noqa: A002
                            new: MessageFactory = ros_message):
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage, JPEG (`quality` 1..100) or PNG, with the
    format string image_transport writes ('rgb8; jpeg compressed bgr8')."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f'rgb_to_compressed_image: got shape {rgb.shape} {rgb.dtype}, expected (H, W, 3) uint8')
    if format not in ('jpeg', 'png'):
        raise ConversionError(f"rgb_to_compressed_image: format {format!r}, expected 'jpeg' or 'png'")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if format == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if format == 'jpeg' else '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ConversionError(f'rgb_to_compressed_image: OpenCV could not encode {rgb.shape} as {format}')
    return new('sensor_msgs/msg/CompressedImage', header=header if header is not None else new('std_msgs/msg/Header'),
               format=f'rgb8; {format} compressed bgr8', data=encoded.reshape(-1))
