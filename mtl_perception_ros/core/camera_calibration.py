"""The node's camera calibration: LiDAR->camera transform, camera matrix, distortion.

Given as parameters, or taken from a sensor_msgs/CameraInfo (K, D, width, height). Incoming
images are undistorted when a distortion is set (the model was trained on undistorted images)
and the camera matrix is scaled when an image arrives at another resolution of the same aspect.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mtl_perception_ros.core.camera import scale_camera_matrix


class CalibrationError(ValueError):
    """A calibration value or an image that does not fit the calibration."""


@dataclass(frozen=True)
class CameraCalibration:
    lidar_to_camera: np.ndarray           # 4x4, point cloud frame -> camera optical frame
    camera_matrix: np.ndarray             # 3x3 of image_size_wh
    distortion: np.ndarray                # (5,) OpenCV plumb-bob; zeros = undistorted input
    image_size_wh: tuple[int, int]
    _maps: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_parameters(cls, lidar_to_camera, camera_matrix, distortion, image_size_wh) -> 'CameraCalibration':
        transform = np.asarray(lidar_to_camera, dtype=np.float64)
        if transform.size != 16:
            raise CalibrationError(f'lidar_to_camera needs 16 numbers (4x4 row-major), got {transform.size}')
        transform = transform.reshape(4, 4)
        rotation = transform[:3, :3]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0.99 \
                or not np.allclose(transform[3], [0, 0, 0, 1]):
            raise CalibrationError('lidar_to_camera is not a rigid transform (rotation must be orthonormal, '
                                   'det +1, last row 0 0 0 1)')
        k = np.asarray(camera_matrix, dtype=np.float64)
        if k.size != 9:
            raise CalibrationError(f'camera_matrix needs 9 numbers (3x3 row-major), got {k.size}')
        k = k.reshape(3, 3)
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
            raise CalibrationError(f'camera_matrix must have fx, fy > 0 and last row 0 0 1, got {k.tolist()}')
        d = np.zeros(5)
        given = np.asarray(distortion, dtype=np.float64).ravel()
        d[:min(5, given.size)] = given[:5]
        size = tuple(int(v) for v in image_size_wh)
        if len(size) != 2 or min(size) <= 0:
            raise CalibrationError(f'calibration_image_size must be [width, height], got {list(image_size_wh)}')
        return cls(transform, k, d, size)

    def with_camera_info(self, msg) -> 'CameraCalibration':
        """This calibration with K, D and the size of a CameraInfo message (same transform)."""
        if msg.width == 0 or msg.height == 0:
            raise CalibrationError('camera_info has width or height 0')
        if msg.distortion_model not in ('', 'plumb_bob', 'rational_polynomial') and any(msg.d):
            raise CalibrationError(f'camera_info distortion model {msg.distortion_model!r} is not supported')
        updated = CameraCalibration.from_parameters(self.lidar_to_camera, list(msg.k), list(msg.d)[:5],
                                                    (msg.width, msg.height))
        if (np.array_equal(updated.camera_matrix, self.camera_matrix)
                and np.array_equal(updated.distortion, self.distortion)
                and updated.image_size_wh == self.image_size_wh):
            return self
        return updated

    def prepare_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(undistorted image, camera matrix of that image) for an incoming RGB image."""
        height, width = image.shape[:2]
        cal_w, cal_h = self.image_size_wh
        if (width, height) == (cal_w, cal_h):
            k = self.camera_matrix
        elif abs(width / height - cal_w / cal_h) < 0.01:
            k = scale_camera_matrix(self.camera_matrix, (cal_h, cal_w), (height, width))
        else:
            raise CalibrationError(f'image is {width}x{height} but the calibration is for {cal_w}x{cal_h} '
                                   '(another aspect ratio): set calibration_image_size / camera_matrix')
        if not np.any(self.distortion):
            return image, k
        key = (width, height)
        if key not in self._maps:
            self._maps[key] = cv2.initUndistortRectifyMap(k, self.distortion, None, k, (width, height), cv2.CV_16SC2)
        map1, map2 = self._maps[key]
        return cv2.remap(image, map1, map2, cv2.INTER_LINEAR), k

