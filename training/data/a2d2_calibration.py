"""A2D2 calibration (`cams_lidars.json`): views, the front-center camera, undistortion.

Facts from the format notes (docs/a2d2_format.md):
- a *view* is {origin, x-axis, y-axis} relative to the vehicle frame; view->vehicle is the 4x4
  with columns [x̂ ŷ ẑ origin] where ŷ is y made orthogonal to x̂ and ẑ = x̂ × ŷ;
- LiDAR points, boxes and `3d_points` are stored in the front-center camera's view frame
  (x forward, y left, z up);
- images and label PNGs on disk are distorted; `CamMatrix` is the matrix of the undistorted
  image, `CamMatrixOriginal` + `Distortion` describe the distorted one.
This module turns that into the project's conventions (mtl_perception_ros.core.camera): a
vehicle->optical-frame transform and the camera matrix of the undistorted image.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, invert_rigid
from training.paths import A2D2_CONFIG_DIR

DEFAULT_CALIBRATION_PATH = A2D2_CONFIG_DIR / 'cams_lidars.json'


def view_to_vehicle(view: dict) -> np.ndarray:
    """4x4 transform of an A2D2 view {origin, x-axis, y-axis} into the vehicle frame."""
    try:
        origin = np.asarray(view['origin'], dtype=np.float64)
        x_axis = np.asarray(view['x-axis'], dtype=np.float64)
        y_axis = np.asarray(view['y-axis'], dtype=np.float64)
    except KeyError as error:
        raise ValueError(f'A2D2 view needs origin, x-axis and y-axis; missing {error}') from None
    x_hat = x_axis / np.linalg.norm(x_axis)
    y_hat = y_axis - x_hat * (x_hat @ y_axis)
    y_hat /= np.linalg.norm(y_hat)
    z_hat = np.cross(x_hat, y_hat)
    transform = np.eye(4)
    transform[:3, 0], transform[:3, 1], transform[:3, 2], transform[:3, 3] = x_hat, y_hat, z_hat, origin
    return transform


@dataclass(frozen=True)
class A2D2Camera:
    """One A2D2 camera in the project's conventions."""

    name: str
    view_to_vehicle: np.ndarray          # 4x4, camera view frame (x fwd, y left, z up) -> vehicle
    camera_matrix: np.ndarray            # 3x3, undistorted image (CamMatrix)
    camera_matrix_original: np.ndarray   # 3x3, distorted image on disk (CamMatrixOriginal)
    distortion: np.ndarray               # (5,) OpenCV k1 k2 p1 p2 k3
    image_size_hw: tuple[int, int]       # (rows, cols) = (1208, 1920)
    tstamp_delay_us: int                 # camera timestamp delay given by A2D2
    _maps: dict = field(default_factory=dict, repr=False, compare=False)  # remap tables, built once

    @property
    def vehicle_to_view(self) -> np.ndarray:
        return invert_rigid(self.view_to_vehicle)

    @property
    def vehicle_to_camera(self) -> np.ndarray:
        """4x4 vehicle -> optical frame (x right, y down, z forward) of this camera."""
        return OPTICAL_FROM_FORWARD_LEFT_UP @ self.vehicle_to_view

    def undistort_image(self, image: np.ndarray) -> np.ndarray:
        """Undistort an image from disk into the `camera_matrix` image (bilinear)."""
        return self._remap(image, cv2.INTER_LINEAR)

    def undistort_label(self, label: np.ndarray) -> np.ndarray:
        """Undistort a label image with nearest-neighbour sampling so colours stay exact."""
        return self._remap(label, cv2.INTER_NEAREST)

    def distort_image(self, undistorted: np.ndarray, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
        """Inverse of `undistort_image`: render the distorted on-disk image from an undistorted one."""
        map_x, map_y = self._distort_maps()
        return cv2.remap(undistorted, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)

    def _remap(self, image: np.ndarray, interpolation) -> np.ndarray:
        map_x, map_y = self._undistort_maps()
        return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)

    def _undistort_maps(self):
        if 'undistort' not in self._maps:
            height, width = self.image_size_hw
            self._maps['undistort'] = cv2.initUndistortRectifyMap(
                self.camera_matrix_original, self.distortion, None, self.camera_matrix,
                (width, height), cv2.CV_32FC1)
        return self._maps['undistort']

    def _distort_maps(self):
        """For each distorted pixel, where it lies in the undistorted image (for rendering)."""
        if 'distort' not in self._maps:
            height, width = self.image_size_hw
            cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
            pixels = np.stack([cols.ravel(), rows.ravel()], axis=1).reshape(-1, 1, 2)
            normalized = cv2.undistortPoints(pixels, self.camera_matrix_original, self.distortion)
            normalized = normalized.reshape(-1, 2)
            k = self.camera_matrix
            map_x = (k[0, 0] * normalized[:, 0] + k[0, 2]).reshape(height, width).astype(np.float32)
            map_y = (k[1, 1] * normalized[:, 1] + k[1, 2]).reshape(height, width).astype(np.float32)
            self._maps['distort'] = (map_x, map_y)
        return self._maps['distort']


def load_calibration(path=DEFAULT_CALIBRATION_PATH) -> dict:
    """Parse cams_lidars.json; errors name the file."""
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as stream:
            return json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f'{path}: cannot read A2D2 calibration ({error})') from None


def front_center_camera(calibration: dict, source: str = 'cams_lidars.json') -> A2D2Camera:
    """The front-center camera of a parsed cams_lidars.json."""
    try:
        cam = calibration['cameras']['front_center']
        width, height = cam['Resolution']
        return A2D2Camera(
            name='front_center',
            view_to_vehicle=view_to_vehicle(cam['view']),
            camera_matrix=np.asarray(cam['CamMatrix'], dtype=np.float64),
            camera_matrix_original=np.asarray(cam['CamMatrixOriginal'], dtype=np.float64),
            distortion=np.asarray(cam['Distortion'], dtype=np.float64).reshape(-1),
            image_size_hw=(int(height), int(width)),
            tstamp_delay_us=int(cam.get('tstamp_delay', 0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f'{source}: cameras.front_center is incomplete ({error!r})') from None
