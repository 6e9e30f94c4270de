"""Pinhole camera geometry shared by training, the model and the node.

Conventions (the same everywhere in the project):
- `camera_matrix` K is 3x3 for the image the model sees (undistorted, after any resize).
- `vehicle_to_camera` is a 4x4 rigid transform from the vehicle (LiDAR) frame into the
  camera's **optical frame** (x right, y down, z forward), as in ROS `*_optical_frame`s and
  `sensor_msgs/CameraInfo`. A pixel is (u, v) = (column, row) = K @ p / p.z.
- A2D2's own camera "view" frame (x forward, y left, z up) is converted to the optical frame in
  the A2D2 reader, so nothing downstream needs to know about it.
"""
from __future__ import annotations

import numpy as np

# Optical frame from a camera frame with REP-103 axes (x forward, y left, z up):
# x_opt = -y, y_opt = -z, z_opt = x.
OPTICAL_FROM_FORWARD_LEFT_UP = np.array([[0.0, -1.0, 0.0, 0.0],
                                         [0.0, 0.0, -1.0, 0.0],
                                         [1.0, 0.0, 0.0, 0.0],
                                         [0.0, 0.0, 0.0, 1.0]])

# Points nearer than this along the optical axis do not project (here and in the model's sampling).
MIN_DEPTH_M = 0.1


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, >=3) points; returns (N, 3) float64."""
    xyz = np.asarray(points)[:, :3].astype(np.float64, copy=False)
    return xyz @ transform[:3, :3].T + transform[:3, 3]


def project_points(points_vehicle: np.ndarray, vehicle_to_camera: np.ndarray,
                   camera_matrix: np.ndarray, image_size_hw: tuple[int, int] | None = None):
    """Project vehicle-frame points into the image.

    Returns (uv, depth_m, valid): uv (N, 2) float64 pixel (column, row) coordinates, depth (N,)
    along the optical axis, and valid (N,) bool: in front of the camera (depth > 0.1 m) and,
    when `image_size_hw` is given, inside the image (0 <= u < W, 0 <= v < H).
    """
    cam = transform_points(points_vehicle, vehicle_to_camera)
    depth = cam[:, 2]
    valid = depth > MIN_DEPTH_M
    safe_depth = np.where(valid, depth, 1.0)
    uvw = cam @ np.asarray(camera_matrix, dtype=np.float64).T
    uv = uvw[:, :2] / safe_depth[:, None]
    if image_size_hw is not None:
        height, width = image_size_hw
        valid &= (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, depth, valid


def scale_camera_matrix(camera_matrix: np.ndarray, from_hw: tuple[int, int],
                        to_hw: tuple[int, int]) -> np.ndarray:
    """Camera matrix for an image resized from `from_hw` to `to_hw` (pixel-edge convention)."""
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    k = np.array(camera_matrix, dtype=np.float64, copy=True)
    k[0, 0] *= sx
    k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    k[1, 1] *= sy
    k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return k


def flip_camera_matrix_horizontally(camera_matrix: np.ndarray, width: int) -> np.ndarray:
    """Camera matrix of the mirrored image (u' = W - 1 - u) when the scene is mirrored in y.

    Mirroring the vehicle frame (y -> -y) mirrors the optical frame in x; the image then flips
    left-right with cx -> W - 1 - cx.
    """
    k = np.array(camera_matrix, dtype=np.float64, copy=True)
    k[0, 2] = width - 1 - k[0, 2]
    return k


def invert_rigid(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform [R | t] -> [R^T | -R^T t]."""
    inv = np.eye(4)
    rotation = transform[:3, :3]
    inv[:3, :3] = rotation.T
    inv[:3, 3] = -rotation.T @ transform[:3, 3]
    return inv


def mirror_extrinsics_y(vehicle_to_camera: np.ndarray) -> np.ndarray:
    """`vehicle_to_camera` for a scene mirrored in the vehicle frame (y -> -y).

    Consistent with `flip_camera_matrix_horizontally`: the optical frame is mirrored in x, so a
    mirrored point projects onto the mirrored pixel. The result is again a proper rotation.
    """
    mirror_vehicle = np.diag([1.0, -1.0, 1.0, 1.0])
    mirror_optical = np.diag([-1.0, 1.0, 1.0, 1.0])
    return mirror_optical @ np.asarray(vehicle_to_camera, dtype=np.float64) @ mirror_vehicle
