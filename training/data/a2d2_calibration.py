"""A2D2 calibration (`cams_lidars.json`): views, the six cameras, undistortion.

Facts from the format notes (docs/a2d2_format.md):
- a *view* is {origin, x-axis, y-axis} relative to the vehicle frame; view->vehicle is the 4x4
  with columns [x̂ ŷ ẑ origin] where ŷ is y made orthogonal to x̂ and ẑ = x̂ × ŷ;
- LiDAR points, boxes and `3d_points` are stored in the front-center camera's view frame
  (x forward, y left, z up);
- images and label PNGs on disk are distorted; `CamMatrix` is the matrix of the undistorted
  image, `CamMatrixOriginal` + `Distortion` describe the distorted one. front_center is a
  pinhole lens (`Lens: "Telecam"`, OpenCV's k1..k3 model); the other five are `Lens: "Fisheye"`
  with 4 coefficients, OpenCV's fisheye (equidistant) model k1..k4.
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
# A2D2's camera names (cams_lidars.json `cameras`) in rig order, and their folder / file tokens:
# camera/cam_front_left/<stamp>_camera_frontleft_<ID9>.png
CAMERA_NAMES = ('front_center', 'front_left', 'front_right', 'side_left', 'side_right', 'rear_center')
FISHEYE_LENS = 'Fisheye'


def camera_folder(name: str) -> str:
    """`cam_front_left` for `front_left`."""
    return f'cam_{name}'


def camera_file_token(name: str) -> str:
    """`frontleft` for `front_left` (the camera part of A2D2 file names)."""
    return name.replace('_', '')


def in_rig_order(names) -> list[str]:
    """Camera names sorted in A2D2's rig order (CAMERA_NAMES), any other name after them, alphabetically."""
    return sorted(names, key=lambda name: (CAMERA_NAMES.index(name), '') if name in CAMERA_NAMES
                  else (len(CAMERA_NAMES), name))


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
    distortion: np.ndarray               # pinhole: OpenCV k1 k2 p1 p2 k3; fisheye: k1 k2 k3 k4
    image_size_hw: tuple[int, int]       # (rows, cols) = (1208, 1920)
    tstamp_delay_us: int                 # camera timestamp delay given by A2D2
    fisheye: bool = False                # Lens "Fisheye": OpenCV's fisheye model
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

    def distorted_pixels(self, points_view: np.ndarray) -> np.ndarray:
        """(N, 2) pixels (col, row) in the distorted on-disk image of (N, 3) view-frame points
        (x forward, y left, z up; x > 0), through the lens model (OpenCV's own projection)."""
        optical = np.ascontiguousarray(np.stack([-points_view[:, 1], -points_view[:, 2], points_view[:, 0]],
                                                axis=1), dtype=np.float64).reshape(-1, 1, 3)
        if self.fisheye:
            pixels, _ = cv2.fisheye.projectPoints(optical, np.zeros(3), np.zeros(3), self.camera_matrix_original,
                                                  self.distortion)
        else:
            pixels, _ = cv2.projectPoints(optical, np.zeros(3), np.zeros(3), self.camera_matrix_original,
                                          self.distortion)
        return pixels.reshape(-1, 2)

    def normalized_from_distorted(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) undistorted normalised image coordinates."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if self.fisheye:
            normalized = cv2.fisheye.undistortPoints(pixels, self.camera_matrix_original, self.distortion)
        else:
            normalized = cv2.undistortPoints(pixels, self.camera_matrix_original, self.distortion)
        return normalized.reshape(-1, 2)

    def _undistort_maps(self):
        if 'undistort' not in self._maps:
            height, width = self.image_size_hw
            init = cv2.fisheye.initUndistortRectifyMap if self.fisheye else cv2.initUndistortRectifyMap
            self._maps['undistort'] = init(self.camera_matrix_original, self.distortion, np.eye(3),
                                           self.camera_matrix, (width, height), cv2.CV_32FC1)
        return self._maps['undistort']

    def _distort_maps(self):
        """For each distorted pixel, where it lies in the undistorted image (for rendering)."""
        if 'distort' not in self._maps:
            height, width = self.image_size_hw
            cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
            normalized = self.normalized_from_distorted(np.stack([cols.ravel(), rows.ravel()], axis=1))
            k = self.camera_matrix
            map_x = (k[0, 0] * normalized[:, 0] + k[0, 2]).reshape(height, width).astype(np.float32)
            map_y = (k[1, 1] * normalized[:, 1] + k[1, 2]).reshape(height, width).astype(np.float32)
            self._maps['distort'] = (map_x, map_y)
        return self._maps['distort']

    def distortion_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 maps: for each distorted (on-disk) pixel, its position in the CamMatrix image."""
        return self._distort_maps()


def load_calibration(path=DEFAULT_CALIBRATION_PATH) -> dict:
    """Parse cams_lidars.json; errors name the file."""
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as stream:
            return json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f'{path}: cannot read A2D2 calibration ({error})') from None


def a2d2_camera(calibration: dict, name: str, source: str = 'cams_lidars.json') -> A2D2Camera:
    """Camera `name` (e.g. 'front_left') of a parsed cams_lidars.json."""
    try:
        cam = calibration['cameras'][name]
        width, height = cam['Resolution']
        fisheye = str(cam.get('Lens', '')) == FISHEYE_LENS
        distortion = np.asarray(cam['Distortion'], dtype=np.float64).reshape(-1)
        if fisheye and distortion.size != 4:
            raise ValueError(f'a fisheye lens needs 4 distortion coefficients, got {distortion.size}')
        return A2D2Camera(
            name=name,
            view_to_vehicle=view_to_vehicle(cam['view']),
            camera_matrix=np.asarray(cam['CamMatrix'], dtype=np.float64).reshape(3, 3),
            camera_matrix_original=np.asarray(cam['CamMatrixOriginal'], dtype=np.float64).reshape(3, 3),
            distortion=distortion,
            image_size_hw=(int(height), int(width)),
            tstamp_delay_us=int(cam.get('tstamp_delay', 0)),
            fisheye=fisheye,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f'{source}: cameras.{name} is missing or incomplete ({error!r})') from None


def front_center_camera(calibration: dict, source: str = 'cams_lidars.json') -> A2D2Camera:
    """The front-center camera of a parsed cams_lidars.json."""
    return a2d2_camera(calibration, 'front_center', source)
