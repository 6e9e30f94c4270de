"""sensor_msgs/CameraInfo <-> numpy (duck-typed: rclpy or rosbags messages, no rclpy import).

Reads K, D, size and distortion model; whether they make a usable calibration (finite K with
fx, fy > 0, the model's number of finite coefficients, size > 0) is decided by
mtl_perception_ros.core.camera_calibration. R and P are not used (images are undistorted to K)
but must be 9 and 12 finite numbers: a NaN there means a broken calibration message.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message

__all__ = ['CameraInfoData', 'camera_info_data', 'undistorted_camera_info']


@dataclass
class CameraInfoData:
    """camera_matrix (3, 3) float64 (K), distortion (n,) float64 (D, as sent), image_hw (rows, cols),
    distortion_model (e.g. 'plumb_bob', 'rational_polynomial'; '' when unset)."""

    camera_matrix: np.ndarray
    distortion: np.ndarray
    image_hw: tuple
    distortion_model: str

    @property
    def image_size_wh(self) -> tuple[int, int]:
        return self.image_hw[1], self.image_hw[0]


def camera_info_data(msg) -> CameraInfoData:
    """sensor_msgs/CameraInfo -> CameraInfoData (copies; the message is not kept).

    Raises:
        ConversionError: K or R not 9 numbers, P not 12, or R or P not finite.
    """
    k = np.asarray(msg.k, dtype=np.float64).ravel()
    if k.size != 9:
        raise ConversionError(f'CameraInfo.k has {k.size} numbers, expected 9 (3x3 row-major)')
    for name, size, layout in (('r', 9, '3x3 row-major'), ('p', 12, '3x4 row-major; all zeros when unset')):
        values = np.asarray(getattr(msg, name), dtype=np.float64).ravel()
        if values.size != size or not np.isfinite(values).all():
            raise ConversionError(f'CameraInfo.{name} must be {size} finite numbers ({layout}), '
                                  f'got {values.tolist()}')
    return CameraInfoData(k.reshape(3, 3).copy(), np.asarray(msg.d, dtype=np.float64).ravel().copy(),
                          (int(msg.height), int(msg.width)), str(msg.distortion_model))


def undistorted_camera_info(camera_matrix, image_hw, header, *, new: MessageFactory = ros_message):
    """K (3, 3) of an undistorted image of image_hw (rows, cols) -> sensor_msgs/CameraInfo
    (plumb_bob, D = 5 zeros, R = I, P = [K 0]); `new`: message factory (messages.message_factory)."""
    k = np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return new('sensor_msgs/msg/CameraInfo', header=header, height=int(image_hw[0]), width=int(image_hw[1]),
               distortion_model='plumb_bob', d=np.zeros(5), k=k.reshape(-1).copy(), r=np.eye(3).reshape(-1),
               p=projection.reshape(-1))
