"""Training augmentations that keep LiDAR, image, class map, boxes and calibration consistent.

Every geometric change moves the calibration with the data, so a LiDAR point still projects onto
the same pixel content after augmentation:
- horizontal flip: the scene mirrored in y (points, boxes), the image and class map mirrored
  left-right, K and the extrinsics mirrored with them (mtl_perception_ros.core.camera);
- global rotation about +z / uniform scaling of the scene: points and boxes move, and
  `vehicle_to_camera` absorbs the inverse motion (the image itself does not change).
Photometric changes touch the image only; point dropout touches the points only. A frame with
several cameras gets the same scene motion for all of them (each view's calibration follows)
and photometric jitter drawn per camera (real cameras differ in exposure).
All randomness comes from the numpy Generator passed in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.core.boxes import wrap_angle
from mtl_perception_ros.core.camera import flip_camera_matrix_horizontally, mirror_extrinsics_y
from training.data.frame import CameraView, Frame

# ITU-R BT.601 luma weights for RGB.
LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; a value of 0 (or a (1, 1) range) switches that part off.

    brightness / contrast / saturation: factors drawn uniformly in [1 - v, 1 + v];
    noise_std_max: Gaussian pixel noise std drawn in [0, v] (0..255 units);
    point_dropout_max: fraction of points dropped, drawn in [0, v];
    rotation_max_rad: global yaw of the scene drawn in [-v, v]; scale_range: uniform scaling.
    """

    flip_probability: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    noise_std_max: float = 4.0
    point_dropout_max: float = 0.1
    rotation_max_rad: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)


def _flip_view(view: CameraView) -> CameraView:
    """A camera of the mirrored scene: image and class map mirrored left-right, K and extrinsics with them."""
    width = view.image.shape[1]
    class_map = None if view.class_map is None else np.ascontiguousarray(view.class_map[:, ::-1])
    return dataclasses.replace(view, image=np.ascontiguousarray(view.image[:, ::-1]), class_map=class_map,
                               camera_matrix=flip_camera_matrix_horizontally(view.camera_matrix, width),
                               vehicle_to_camera=mirror_extrinsics_y(view.vehicle_to_camera))


def flip_frame_horizontally(frame: Frame) -> Frame:
    """Mirror the whole frame in the vehicle y axis (left <-> right), every camera's calibration included."""
    points = frame.points.copy()
    points[:, 1] = -points[:, 1]
    boxes = np.array(frame.boxes, dtype=np.float32, copy=True).reshape(-1, 7)
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = wrap_angle(-boxes[:, 6])
    return dataclasses.replace(frame, points=points, boxes=boxes).with_views(
        [_flip_view(view) for view in frame.views])


def rotate_scale_frame(frame: Frame, yaw_rad: float, scale: float) -> Frame:
    """Rotate the scene by `yaw_rad` about the vehicle +z axis and scale it by `scale`.

    Points and boxes move (p' = s R p; box sizes scale, yaw += angle); the new
    `vehicle_to_camera` = [R_c R^T | s t_c] sees every moved point on its old pixel, so the image
    and class map stay as they are.
    """
    if scale <= 0:
        raise ValueError(f'rotate_scale_frame: scale must be > 0, got {scale}')
    cos, sin = np.cos(yaw_rad), np.sin(yaw_rad)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    points = frame.points.copy()
    points[:, :3] = (scale * (frame.points[:, :3].astype(np.float64) @ rotation.T)).astype(points.dtype)
    boxes = np.array(frame.boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    boxes[:, :3] = scale * (boxes[:, :3] @ rotation.T)
    boxes[:, 3:6] *= scale
    boxes[:, 6] = wrap_angle(boxes[:, 6] + yaw_rad)
    views = []
    for view in frame.views:
        vehicle_to_camera = np.array(view.vehicle_to_camera, dtype=np.float64, copy=True)
        vehicle_to_camera[:3, :3] = vehicle_to_camera[:3, :3] @ rotation.T
        vehicle_to_camera[:3, 3] *= scale
        views.append(dataclasses.replace(view, vehicle_to_camera=vehicle_to_camera))
    return dataclasses.replace(frame, points=points, boxes=boxes.astype(np.float32)).with_views(views)


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.2,
                       contrast: float = 0.2, saturation: float = 0.2,
                       noise_std_max: float = 4.0) -> np.ndarray:
    """Random brightness, contrast, saturation and Gaussian noise on an (H, W, 3) uint8 RGB image."""
    out = image.astype(np.float32)
    if brightness > 0:
        out *= rng.uniform(1 - brightness, 1 + brightness)
    if contrast > 0:
        mean = float((out @ LUMA_RGB).mean())
        out = (out - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    if saturation > 0:
        gray = (out @ LUMA_RGB)[..., None]
        out = gray + (out - gray) * rng.uniform(1 - saturation, 1 + saturation)
    if noise_std_max > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(0, noise_std_max)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def drop_points(points: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Drop a random `fraction` of the (N, C) points (each point independently)."""
    if fraction <= 0:
        return points
    return points[rng.random(len(points)) >= fraction]


def augment_frame(frame: Frame, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Frame:
    """Apply the configured augmentations to `frame`; returns a new Frame (input unchanged)."""
    if rng.random() < config.flip_probability:
        frame = flip_frame_horizontally(frame)
    low, high = config.scale_range
    if config.rotation_max_rad > 0 or (low, high) != (1.0, 1.0):
        yaw = rng.uniform(-config.rotation_max_rad, config.rotation_max_rad)
        frame = rotate_scale_frame(frame, yaw, rng.uniform(low, high))
    views = [dataclasses.replace(view, image=photometric_jitter(view.image, rng, config.brightness, config.contrast,
                                                                config.saturation, config.noise_std_max))
             for view in frame.views]
    points = drop_points(frame.points, rng, rng.uniform(0, config.point_dropout_max)
                         if config.point_dropout_max > 0 else 0.0)
    return dataclasses.replace(frame, points=points).with_views(views)
