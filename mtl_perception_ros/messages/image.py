"""sensor_msgs/Image <-> numpy, strict about encoding, step and data size.

Reading views `msg.data` in place through numpy strides (step = bytes per row, may include
padding). rgb8 without row padding (and mono8 in `image_to_mono8`) comes back as a zero-copy view
that shares memory with `msg.data`; every other case returns a new C-contiguous array. Colour
reordering uses OpenCV (a declared runtime dependency), about 10x faster than numpy fancy copies.

Writing builds the message with a message factory (`new`, messages.message_factory: rclpy
messages by default, rosbags ones with bags.typestore.bag_message) and hands it the pixels as one
flat uint8 array (rclpy: one array.array('B') copy, never per byte).
"""
from __future__ import annotations

import array
import math

import cv2
import numpy as np

from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message
from mtl_perception_ros.messages.pointcloud2 import buffer_as_uint8

__all__ = ['ConversionError', 'RGB_SOURCE_ENCODINGS', 'image_to_rgb', 'image_to_mono8', 'rgb_to_image',
           'mono8_to_image', 'ImageBuffer']

# Bayer mosaics (ROS names the 2x2 pattern from the top-left pixel; OpenCV's codes name it from the
# second row's second and third pixels, so ROS rggb is OpenCV's BG, as in cv_bridge), demosaiced by
# OpenCV's bilinear method.
_BAYER = {'rggb': cv2.COLOR_BayerBG2RGB, 'bggr': cv2.COLOR_BayerRG2RGB, 'gbrg': cv2.COLOR_BayerGR2RGB,
          'grbg': cv2.COLOR_BayerGB2RGB}
# encoding -> (channels, bytes per channel); yuv422 (UYVY) and yuv422_yuy2 (YUYV): 2 bytes per pixel
_LAYOUTS = {'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1), 'mono8': (1, 1), 'mono16': (1, 2),
            'yuv422': (2, 1), 'yuv422_yuy2': (2, 1),
            **{f'bayer_{pattern}8': (1, 1) for pattern in _BAYER}, **{f'bayer_{pattern}16': (1, 2) for pattern in _BAYER}}
NV12 = 'nv12'      # Y plane (height rows) then interleaved U V at half resolution (height / 2 rows)
RGB_SOURCE_ENCODINGS = tuple(_LAYOUTS) + (NV12,)
_TO_RGB = {'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
           'mono8': cv2.COLOR_GRAY2RGB, 'mono16': cv2.COLOR_GRAY2RGB,
           # BT.601 limited range, as cv_bridge converts them
           'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2,
           **{f'bayer_{pattern}{bits}': code for pattern, code in _BAYER.items() for bits in (8, 16)}}


def _pixels(msg, supported: tuple[str, ...]) -> np.ndarray:
    """(H, W, C) strided view of the image data (uint8, or uint16 in the message's byte order)."""
    encoding = msg.encoding
    if encoding not in supported:
        raise ConversionError(f'Image encoding {encoding!r} is not supported here; expected one of {list(supported)}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:  # nothing to see: a clear error (the node runs that frame LiDAR-only)
        raise ConversionError(f'Image ({encoding}): width {width}, height {height}, expected both > 0')
    if encoding in ('yuv422', 'yuv422_yuy2', NV12) and width % 2:
        raise ConversionError(f'Image ({encoding}): width {width} is odd; 4:2:2 and 4:2:0 chroma need an even width')
    layout = encoding
    if encoding == NV12:
        if height % 2:
            raise ConversionError(f'Image (nv12): height {height} is odd; 4:2:0 chroma needs an even height')
        height = height * 3 // 2   # the chroma rows follow the luma rows, same step
        layout = 'mono8'
    channels, channel_bytes = _LAYOUTS[layout]
    pixel_bytes = channels * channel_bytes
    if step < width * pixel_bytes:
        raise ConversionError(f'Image ({encoding}, {width}x{height}): step {step} is smaller than width {width} * '
                              f'{pixel_bytes} bytes per pixel = {width * pixel_bytes}')
    buffer = buffer_as_uint8(msg.data)
    if buffer.size != step * height:
        raise ConversionError(f'Image ({encoding}, {width}x{height}): data has {buffer.size} bytes, expected '
                              f'step {step} * height {height} = {step * height}')
    dtype = np.dtype(np.uint8) if channel_bytes == 1 else np.dtype('>u2' if msg.is_bigendian else '<u2')
    return np.ndarray((height, width, channels), dtype=dtype, buffer=buffer,
                      strides=(step, pixel_bytes, channel_bytes))


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB.

    Encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (grey repeated), mono16 (top
    8 bits, i.e. value >> 8, honouring is_bigendian); bayer_rggb8 / bggr8 / gbrg8 / grbg8 and their
    16-bit forms (top 8 bits, then OpenCV's bilinear demosaicing); yuv422 (UYVY), yuv422_yuy2
    (YUYV) and nv12 (BT.601, OpenCV's conversions; even width, nv12 also an even height). rgb8
    without row padding is a zero-copy view of `msg.data` (writing to it changes the message); the
    rest are new arrays.

    Raises:
        ConversionError: unsupported encoding, width or height 0, step < width * bytes per pixel, or
            data size != step * height.
    """
    pixels = _pixels(msg, RGB_SOURCE_ENCODINGS)
    encoding = msg.encoding
    if encoding == 'rgb8':
        return pixels if pixels.flags.c_contiguous else np.ascontiguousarray(pixels)
    if encoding == NV12:
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., 0]), cv2.COLOR_YUV2RGB_NV12)
    if pixels.dtype != np.uint8:      # 16-bit (mono16, bayer_*16): the top 8 bits
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if encoding.startswith('bayer_'):
        pixels = np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels, _TO_RGB[encoding])


def image_to_mono8(msg) -> np.ndarray:
    """sensor_msgs/Image mono8 (e.g. a class-id map) -> (H, W) uint8; a zero-copy view without row padding.

    Raises:
        ConversionError: encoding other than mono8, width or height 0, step < width, or data size != step * height.
    """
    pixels = _pixels(msg, ('mono8',))[..., 0]
    return pixels if pixels.flags.c_contiguous else np.ascontiguousarray(pixels)


def _image_message(pixels: np.ndarray, encoding: str, header, new: MessageFactory, data=None):
    """The Image of `pixels`; `data`: their bytes as the message should hold them (ImageBuffer's
    array.array), default the pixels themselves (the factory copies them once)."""
    pixels = np.ascontiguousarray(pixels)
    return new('sensor_msgs/msg/Image', header=header if header is not None else new('std_msgs/msg/Header'),
               height=int(pixels.shape[0]), width=int(pixels.shape[1]), encoding=encoding, is_bigendian=0,
               step=int(pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1)),
               data=pixels.reshape(-1) if data is None else data)


def rgb_to_image(rgb: np.ndarray, header=None, *, new: MessageFactory = ros_message):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8 (no row padding)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f'rgb_to_image: got shape {rgb.shape} {rgb.dtype}, expected (H, W, 3) uint8')
    return _image_message(rgb, 'rgb8', header, new)


def mono8_to_image(mono: np.ndarray, header=None, *, new: MessageFactory = ros_message):
    """(H, W) uint8 (e.g. class ids) -> sensor_msgs/Image mono8 (no row padding)."""
    mono = np.asarray(mono)
    if mono.ndim != 2 or mono.dtype != np.uint8:
        raise ConversionError(f'mono8_to_image: got shape {mono.shape} {mono.dtype}, expected (H, W) uint8')
    return _image_message(mono, 'mono8', header, new)


class ImageBuffer:
    """Pixels of an outgoing rclpy sensor_msgs/Image, kept across frames: publishing without a copy.

    The producer writes the pixels straight into `pixels(shape)` (a numpy view of the array.array
    the message's `data` is; e.g. cv2.resize(..., dst=view)), and `message(encoding, header)` wraps
    that array without copying it. rclpy copies `data` during publish(), so the buffer may be
    written again once publish() has returned: one buffer per publisher, used by one thread, the
    message published before the next `pixels` call. Saves a copy of the image and an allocation
    per frame (benchmarks/bench_image_publish.py)."""

    def __init__(self):
        self._data = array.array('B')
        self._pixels = np.frombuffer(self._data, dtype=np.uint8).reshape(0, 0)

    def pixels(self, shape) -> np.ndarray:
        """A writable uint8 view of `shape` ((H, W) mono or (H, W, C)) over the message buffer."""
        shape = tuple(int(v) for v in shape)
        size = math.prod(shape)
        if len(self._data) != size:        # a new array: the old one may still be viewed by numpy
            self._data = array.array('B', bytes(size))
        self._pixels = np.frombuffer(self._data, dtype=np.uint8).reshape(shape)
        return self._pixels

    def message(self, encoding: str, header=None):
        """The rclpy Image of the buffer's pixels (`encoding` must match the shape's channels)."""
        return _image_message(self._pixels, encoding, header, ros_message, data=self._data)
