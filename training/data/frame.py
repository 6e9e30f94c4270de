"""One training frame in the project's conventions: what the A2D2 reader yields and chunks store."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """A camera + LiDAR frame with labels, all in the vehicle frame (REP-103, metres).

    - points: (N, 4) float32 x, y, z, reflectance in [0, 1] (A2D2's 0..255 divided by 255).
    - image: (H, W, 3) uint8 RGB, undistorted, so `camera_matrix` projects into it.
    - class_map: (H, W) uint8 training class ids (255 = ignore), or None when unlabelled.
    - boxes: (M, 7) float32 x, y, z, length, width, height, yaw (mtl_perception_ros.core.boxes).
    - box_classes: (M,) int64 detection class ids (after grouping; dropped classes removed).
    - track_ids: (M,) int64 object identities across the frames of a scene, -1 when unknown
      (real A2D2 has none: its box `id` is only the index within the frame).
    - camera_matrix: (3, 3) float64 of `image`; vehicle_to_camera: (4, 4) float64 vehicle ->
      camera optical frame (mtl_perception_ros.core.camera).
    - camera_timestamp_us / lidar_timestamp_us: TAI microseconds (-1 when unknown).
    """

    name: str
    scene: str
    points: np.ndarray
    image: np.ndarray
    class_map: np.ndarray | None
    boxes: np.ndarray
    box_classes: np.ndarray
    track_ids: np.ndarray
    camera_matrix: np.ndarray
    vehicle_to_camera: np.ndarray
    camera_timestamp_us: int = -1
    lidar_timestamp_us: int = -1
