"""One training frame in the project's conventions: what the A2D2 reader yields and chunks store."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class CameraView:
    """One camera of a frame: its undistorted image, class map and calibration.

    - image: (H, W, 3) uint8 RGB, undistorted, so `camera_matrix` projects into it.
    - class_map: (H, W) uint8 training class ids (255 = ignore), or None when unlabelled.
    - camera_matrix: (3, 3) float64 of `image`; vehicle_to_camera: (4, 4) float64 vehicle ->
      camera optical frame (mtl_perception_ros.core.camera).
    - timestamp_us: TAI microseconds of the image (-1 when unknown).
    """

    name: str
    image: np.ndarray | None
    class_map: np.ndarray | None
    camera_matrix: np.ndarray
    vehicle_to_camera: np.ndarray
    timestamp_us: int = -1


@dataclass
class Frame:
    """A LiDAR frame with one or more cameras and labels, all in the vehicle frame (REP-103, metres).

    - points: (N, 4) float32 x, y, z, reflectance in [0, 1] (A2D2's 0..255 divided by 255).
    - image, class_map, camera_matrix, vehicle_to_camera, camera_timestamp_us: the first camera
      (`camera_name`, the reference camera that defines the frame); see CameraView.
    - extra_views: the frame's other cameras (surround rigs), in rig order; `views` lists all.
    - boxes: (M, 7) float32 x, y, z, length, width, height, yaw (mtl_perception_ros.core.boxes).
    - box_classes: (M,) int64 detection class ids (after grouping; dropped classes removed).
    - track_ids: (M,) int64 object identities across the frames of a scene, -1 when unknown
      (real A2D2 has none: its box `id` is only the index within the frame).
    - camera_timestamp_us / lidar_timestamp_us: TAI microseconds (-1 when unknown).
    """

    name: str
    scene: str
    points: np.ndarray
    image: np.ndarray | None
    class_map: np.ndarray | None
    boxes: np.ndarray
    box_classes: np.ndarray
    track_ids: np.ndarray
    camera_matrix: np.ndarray
    vehicle_to_camera: np.ndarray
    camera_timestamp_us: int = -1
    lidar_timestamp_us: int = -1
    camera_name: str = 'front_center'
    extra_views: tuple = ()

    @property
    def views(self) -> list[CameraView]:
        """Every camera of the frame, the reference camera first."""
        first = CameraView(self.camera_name, self.image, self.class_map, self.camera_matrix,
                           self.vehicle_to_camera, self.camera_timestamp_us)
        return [first, *self.extra_views]

    @property
    def camera_names(self) -> list[str]:
        return [self.camera_name] + [view.name for view in self.extra_views]

    def with_views(self, views: Sequence[CameraView]) -> 'Frame':
        """A copy with these cameras (the first becomes the reference camera's fields)."""
        if not views:
            raise ValueError(f'frame {self.name}: a frame needs at least one camera view')
        first = views[0]
        return dataclasses.replace(self, camera_name=first.name, image=first.image, class_map=first.class_map,
                                   camera_matrix=first.camera_matrix, vehicle_to_camera=first.vehicle_to_camera,
                                   camera_timestamp_us=int(first.timestamp_us), extra_views=tuple(views[1:]))
