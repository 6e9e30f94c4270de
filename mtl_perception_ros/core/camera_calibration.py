"""The node's camera calibration: LiDAR->camera transform, camera matrix, distortion.

Given as parameters (`from_parameters`), or with K, D, distortion model and size read from a
sensor_msgs/CameraInfo by mtl_perception_ros.messages.camera_info (`with_intrinsics`). Incoming
images are undistorted when a distortion is set (the model was trained on undistorted images)
and the camera matrix is scaled when an image arrives at another resolution of the same aspect.

Distortion (OpenCV's coefficient order, as in CameraInfo.D):
- 'plumb_bob': 5 coefficients k1 k2 p1 p2 k3;
- 'rational_polynomial': 8 coefficients k1 k2 p1 p2 k3 k4 k5 k6;
- 'equidistant' (fisheye, OpenCV's cv2.fisheye model): 4 coefficients k1 k2 k3 k4. The image is
  undistorted to a pinhole image with the same K, like the others, so what a wide lens sees
  beyond K's pinhole view falls outside the image;
- all-zero (or empty) D, under any model name: no distortion, images are used as they come.
Other models are refused: rectify such images upstream (e.g. image_proc) and give the rectified
camera's K with a zero D. Parameters have no model name: a list of 0, 5 or 8 numbers, the length
says which model (fisheye comes only from a CameraInfo).

Every value is checked where it enters (parameters, each CameraInfo, each image) and refused with
a CalibrationError naming the value and what is allowed: K 9 finite numbers with fx, fy > 0 and
last row 0 0 1; D finite with the model's count; image width and height > 0. A NaN would
otherwise leave the camera silently unused or the undistorted image black.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtl_perception_ros.core.camera import scale_camera_matrix
from mtl_perception_ros.core.model_input import FISHEYE, ModelInputMap

# CameraInfo distortion model -> number of coefficients in D
DISTORTION_MODELS = {'plumb_bob': 5, 'rational_polynomial': 8, FISHEYE: 4}
_PARAMETER_LENGTHS = '0, 5 (plumb_bob: k1 k2 p1 p2 k3) or 8 (rational_polynomial: k1 k2 p1 p2 k3 k4 k5 k6)'


class CalibrationError(ValueError):
    """A calibration value or an image that does not fit the calibration."""


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise CalibrationError(f'{name} must be finite numbers, got {values.tolist()}')
    return values


def distortion_from_parameter(distortion) -> np.ndarray:
    """The `distortion` parameter (0, 5 or 8 numbers) -> coefficients; zeros(5) for none."""
    d = _finite(np.asarray(distortion, dtype=np.float64).ravel(), 'distortion')
    if d.size not in (0, 5, 8):
        raise CalibrationError(f'distortion needs {_PARAMETER_LENGTHS} numbers, got {d.size}')
    return d if d.size else np.zeros(5)


def distortion_for_model(distortion, distortion_model: str) -> np.ndarray:
    """CameraInfo's D and distortion_model -> coefficients; zeros(5) for an all-zero D."""
    d = _finite(np.asarray(distortion, dtype=np.float64).ravel(), 'distortion (D)')
    if not d.any():
        return np.zeros(5)
    if distortion_model not in DISTORTION_MODELS:
        raise CalibrationError(f'distortion model {distortion_model!r} with a non-zero D is not supported '
                               f'(supported: {", ".join(DISTORTION_MODELS)}, or an all-zero D)')
    expected = DISTORTION_MODELS[distortion_model]
    if d.size != expected:
        raise CalibrationError(f'distortion model {distortion_model} needs {expected} coefficients, got {d.size}: '
                               f'D = {d.tolist()}')
    return d


def _camera_matrix(camera_matrix, name: str = 'camera_matrix') -> np.ndarray:
    k = np.asarray(camera_matrix, dtype=np.float64)
    if k.size != 9:
        raise CalibrationError(f'{name} needs 9 numbers (3x3 row-major), got {k.size}')
    k = _finite(k.reshape(3, 3), name)
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise CalibrationError(f'{name} must have fx, fy > 0, got fx = {k[0, 0]:g}, fy = {k[1, 1]:g} '
                               f'in {k.tolist()}')
    if not np.allclose(k[2], [0, 0, 1]):
        raise CalibrationError(f'{name} must have last row 0 0 1, got {k[2].tolist()} in {k.tolist()}')
    return k


def _image_size(image_size_wh, name: str) -> tuple[int, int]:
    size = tuple(int(v) for v in image_size_wh)
    if len(size) != 2 or min(size) <= 0:
        raise CalibrationError(f'{name} must be [width, height] > 0, got {list(image_size_wh)}')
    return size


def rigid_transform(lidar_to_camera, name: str = 'lidar_to_camera') -> np.ndarray:
    """16 numbers (4x4 row-major) of a rigid transform -> 4x4 float64, or a CalibrationError."""
    transform = np.asarray(lidar_to_camera, dtype=np.float64)
    if transform.size != 16:
        raise CalibrationError(f'{name} needs 16 numbers (4x4 row-major), got {transform.size}')
    transform = _finite(transform.reshape(4, 4), name)
    rotation = transform[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0.99 \
            or not np.allclose(transform[3], [0, 0, 0, 1]):
        raise CalibrationError(f'{name} is not a rigid transform (rotation must be orthonormal, det +1, last row '
                               '0 0 0 1)')
    return transform


@dataclass(frozen=True)
class CameraCalibration:
    """A camera's calibration as far as it is known: the extrinsics (lidar_to_camera) and the
    intrinsics (camera_matrix, distortion, image_size_wh) may each be None until they arrive (TF,
    CameraInfo); `CameraCalibration()` knows nothing yet."""

    lidar_to_camera: np.ndarray | None = None    # 4x4, point cloud frame -> camera optical frame
    camera_matrix: np.ndarray | None = None      # 3x3 of image_size_wh
    distortion: np.ndarray | None = None         # (5,) plumb_bob, (8,) rational_polynomial, (4,) equidistant; zeros: none
    image_size_wh: tuple[int, int] | None = None
    distortion_model: str = 'plumb_bob'   # a key of DISTORTION_MODELS, matching the length of `distortion`
    _maps: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_intrinsics(self) -> bool:
        return self.camera_matrix is not None

    @classmethod
    def from_parameters(cls, lidar_to_camera=None, camera_matrix=None, distortion=None,
                        image_size_wh=None) -> 'CameraCalibration':
        """From parameter values; None for a part that is not given (camera_matrix and image_size_wh
        come together; distortion None = none)."""
        transform = None if lidar_to_camera is None else rigid_transform(lidar_to_camera)
        if camera_matrix is None and image_size_wh is None:
            if distortion is not None:
                raise CalibrationError('distortion needs camera_matrix and calibration_image_size')
            return cls(transform)
        if camera_matrix is None or image_size_wh is None:
            raise CalibrationError('camera_matrix and calibration_image_size come together (K belongs to an image '
                                   'size)')
        d = distortion_from_parameter([] if distortion is None else distortion)
        return cls(transform, _camera_matrix(camera_matrix), d, _image_size(image_size_wh, 'calibration_image_size'),
                   'rational_polynomial' if d.size == 8 else 'plumb_bob')

    def with_intrinsics(self, camera_matrix, distortion, distortion_model: str,
                        image_size_wh) -> 'CameraCalibration':
        """This calibration with another K, D (of `distortion_model`, CameraInfo's names) and image
        size, the same transform; `self` when nothing changed (its remap tables are kept).

        Raises CalibrationError for a value that cannot be a calibration (module docstring); the
        caller keeps the previous calibration."""
        size = _image_size(image_size_wh, 'image size (width, height)')
        k = _camera_matrix(camera_matrix, 'K (camera matrix)')
        d = distortion_for_model(distortion, distortion_model)
        model = distortion_model if d.any() else 'plumb_bob'
        if (self.has_intrinsics and np.array_equal(k, self.camera_matrix) and np.array_equal(d, self.distortion)
                and size == self.image_size_wh and model == self.distortion_model):
            return self
        return CameraCalibration(self.lidar_to_camera, k, d, size, model)

    def prepare_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(undistorted image, camera matrix of that image) for an incoming RGB image, at its size.

        Raises CalibrationError for an empty image, one of another aspect ratio, or no intrinsics yet."""
        k = self._camera_matrix_for(image)
        if not np.any(self.distortion):
            return image, k
        return self._map(image, image.shape[:2])(image), k

    def model_input(self, image: np.ndarray, target_hw) -> tuple[np.ndarray, np.ndarray]:
        """(model input, its camera matrix): the incoming RGB image undistorted and resized to
        `target_hw` in one remap (core.model_input), its tables made once per image size.

        Raises CalibrationError as prepare_image."""
        self._camera_matrix_for(image)
        resize = self._map(image, tuple(int(v) for v in target_hw))
        return resize(image), resize.camera_matrix

    def _map(self, image: np.ndarray, target_hw: tuple[int, int]) -> ModelInputMap:
        key = (image.shape[:2], target_hw)
        if key not in self._maps:
            # D holds for every resolution (it acts on normalised coordinates); only K is scaled
            self._maps[key] = ModelInputMap(image.shape[:2], self._camera_matrix_for(image), target_hw,
                                            self.distortion, self.distortion_model)
        return self._maps[key]

    def _camera_matrix_for(self, image: np.ndarray) -> np.ndarray:
        """K of an image of this size (the calibration's, scaled for another resolution of the same
        aspect ratio); CalibrationError as prepare_image."""
        if not self.has_intrinsics:
            raise CalibrationError('no intrinsics yet: waiting for a valid camera_info (or set the camera\'s '
                                   'camera_matrix and calibration_image_size)')
        height, width = image.shape[:2]
        if height <= 0 or width <= 0:
            raise CalibrationError(f'image is {width}x{height}: width and height must be > 0')
        cal_w, cal_h = self.image_size_wh
        if (width, height) == (cal_w, cal_h):
            return self.camera_matrix
        if abs(width / height - cal_w / cal_h) < 0.01:
            return scale_camera_matrix(self.camera_matrix, (cal_h, cal_w), (height, width))
        raise CalibrationError(f'image is {width}x{height} but the calibration is for {cal_w}x{cal_h} '
                               '(another aspect ratio): set calibration_image_size / camera_matrix')
