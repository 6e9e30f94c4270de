"""The one map from a camera image to the model's input: undistortion and resize in one remap.

Used by the training samples (training.data.dataset, undistorted images: a pure resize) and by
the node for every camera (its calibration's distortion, if any), so the network sees the same
pixels in training and on the vehicle.

A `ModelInputMap` is computed once per calibration and image size (cv2.initUndistortRectifyMap,
or cv2.fisheye's for 'equidistant'): for each pixel of the model input it holds the point of the
received image it comes from. Applying it is one cv2.remap straight from the received image:
no full-size undistorted copy is made. A downscale by more than 3x (a 1920x1208 camera to a
512x320 input is 3.75x) would alias with bilinear sampling, so the map then samples at
`supersample` times the input size and a box filter of that integer factor (cv2 INTER_AREA,
its fast integer path) averages down: close to the area average of the covered pixels (a third
of plain bilinear sampling's aliasing, test/test_model_input.py), at 2.1 ms instead of 5.5 ms
for an INTER_AREA resize of the full image and 7 ms more for a separate undistortion (1920x1208
to 512x320 on the 2-core development CPU).

Pixel convention: pixel centres at integers, an image edge at -0.5 (OpenCV's resize and
mtl_perception_ros.core.camera.scale_camera_matrix); the input's camera matrix is the received
one scaled by that rule. Outside the received image: its edge pixel repeated (no distortion), or
black (undistortion: what no sensor pixel saw, as cv2.undistort gives it).
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from mtl_perception_ros.core.camera import scale_camera_matrix

FISHEYE = 'equidistant'     # CameraInfo's name of OpenCV's fisheye model
# downscales above this use a supersampled map and an integer box filter (module docstring)
SUPERSAMPLE_ABOVE = 3.0


def supersample_factor(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    """Integer factor the map samples at before the box filter: 1 up to a SUPERSAMPLE_ABOVE-fold
    downscale, else the rounded half of the downscale (2 for 3.75x)."""
    scale = min(source_hw[0] / target_hw[0], source_hw[1] / target_hw[1])
    return 1 if scale <= SUPERSAMPLE_ABOVE else max(1, int(round(scale / 2)))


class ModelInputMap:
    """Received image (source_hw, its camera_matrix and distortion) -> model input (target_hw).

    distortion: OpenCV coefficients (5 or 8 for plumb_bob / rational_polynomial, 4 for
    'equidistant'); None or all zeros: the image is undistorted already. `camera_matrix` is then
    the model input's K (3x3 float64)."""

    def __init__(self, source_hw, camera_matrix, target_hw, distortion=None, distortion_model: str = 'plumb_bob'):
        self.source_hw = tuple(int(v) for v in source_hw)
        self.target_hw = tuple(int(v) for v in target_hw)
        if min(self.source_hw + self.target_hw) <= 0:
            raise ValueError(f'image sizes must be > 0, got source {self.source_hw}, target {self.target_hw}')
        k = np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
        d = None if distortion is None else np.asarray(distortion, dtype=np.float64).ravel()
        self.distorted = d is not None and bool(np.any(d))
        self.camera_matrix = scale_camera_matrix(k, self.source_hw, self.target_hw)
        self.supersample = supersample_factor(self.source_hw, self.target_hw)
        self.identity = not self.distorted and self.source_hw == self.target_hw
        if self.identity:
            self._maps = None
            return
        map_h, map_w = self.target_hw[0] * self.supersample, self.target_hw[1] * self.supersample
        if self.distorted:
            k_map = scale_camera_matrix(k, self.source_hw, (map_h, map_w))
            if distortion_model == FISHEYE:
                self._maps = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), k_map, (map_w, map_h), cv2.CV_16SC2)
            else:
                self._maps = cv2.initUndistortRectifyMap(k, d, None, k_map, (map_w, map_h), cv2.CV_16SC2)
        else:
            self._maps = _scale_maps(self.source_hw, (map_h, map_w))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, C]) image of source_hw -> the model input (target_hw[, C]), same dtype. The input
        itself when the map is the identity."""
        if image.shape[:2] != self.source_hw:
            raise ValueError(f'image is {image.shape[1]}x{image.shape[0]}, the map is for '
                             f'{self.source_hw[1]}x{self.source_hw[0]}')
        if self.identity:
            return image
        border = cv2.BORDER_CONSTANT if self.distorted else cv2.BORDER_REPLICATE
        mapped = cv2.remap(np.ascontiguousarray(image), *self._maps, cv2.INTER_LINEAR, borderMode=border)
        if self.supersample > 1:
            mapped = cv2.resize(mapped, (self.target_hw[1], self.target_hw[0]), interpolation=cv2.INTER_AREA)
        return mapped


def _scale_maps(source_hw, map_hw):
    """Fixed-point remap tables of a pure resize (pixel-edge convention)."""
    ys = (np.arange(map_hw[0], dtype=np.float64) + 0.5) * source_hw[0] / map_hw[0] - 0.5
    xs = (np.arange(map_hw[1], dtype=np.float64) + 0.5) * source_hw[1] / map_hw[1] - 0.5
    map_x, map_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


_resize_maps: dict = {}
_resize_maps_lock = threading.Lock()


def model_input(image: np.ndarray, camera_matrix: np.ndarray, target_hw) -> tuple[np.ndarray, np.ndarray]:
    """(model input, its K) for an undistorted image: the resize of ModelInputMap, its tables kept
    per (image size, target size) (they do not depend on K)."""
    key = (tuple(image.shape[:2]), tuple(int(v) for v in target_hw))
    with _resize_maps_lock:
        resize = _resize_maps.get(key)
        if resize is None:
            resize = _resize_maps[key] = ModelInputMap(key[0], np.eye(3), key[1])
    return resize(image), scale_camera_matrix(camera_matrix, key[0], key[1])
