"""A camera's image message, raw or compressed, -> RGB (duck-typed: rclpy or rosbags messages).

The node subscribes each camera either to sensor_msgs/Image (`<camera>/image_raw`) or to
sensor_msgs/CompressedImage (`<camera>/image_raw/compressed`, `<camera>.image_transport:
compressed`); both arrive here. A CompressedImage has `format` and no `encoding`.
"""
from __future__ import annotations

import numpy as np

from mtl_perception_ros.messages.compressed_image import compressed_image_to_rgb
from mtl_perception_ros.messages.image import image_to_rgb

__all__ = ['camera_image_to_rgb', 'is_compressed_image']


def is_compressed_image(msg) -> bool:
    """sensor_msgs/CompressedImage (format + data) rather than sensor_msgs/Image (encoding, ...)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def camera_image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (messages.image.image_to_rgb) or CompressedImage (JPEG/PNG,
    messages.compressed_image) -> (H, W, 3) uint8 RGB. Raises ConversionError for what neither reads."""
    if is_compressed_image(msg):
        return compressed_image_to_rgb(msg)
    return image_to_rgb(msg)
