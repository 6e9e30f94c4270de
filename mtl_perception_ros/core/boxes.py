"""3D / BEV boxes as plain float arrays, in the vehicle frame (REP-103, metres, radians).

A box array has shape (N, 7): x, y, z (centre), length (along the heading), width, height, yaw
(counter-clockwise about +z from +x). Classes and scores travel in separate (N,) arrays.
"""
from __future__ import annotations

import numpy as np

BOX_FIELDS = ('x', 'y', 'z', 'length', 'width', 'height', 'yaw')
BOX_DIM = len(BOX_FIELDS)


def wrap_angle(angle):
    """Wrap radians into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 8, 3) corners.

    Order: bottom face (z - h/2) front-left, front-right, rear-right, rear-left, then the same
    four on the top face. "front" = +length/2 along the heading, "left" = +width/2.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    x, y, z, length, width, height, yaw = boxes.T
    sign_l = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64)
    sign_w = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64)
    sign_h = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=np.float64)
    local_x = sign_l[None] * length[:, None] / 2
    local_y = sign_w[None] * width[:, None] / 2
    local_z = sign_h[None] * height[:, None] / 2
    cos, sin = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    corners = np.stack([x[:, None] + cos * local_x - sin * local_y,
                        y[:, None] + sin * local_x + cos * local_y,
                        z[:, None] + local_z], axis=-1)
    return corners


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 4, 2) x, y of the footprint: front-left, front-right, rear-right, rear-left."""
    return box_corners(boxes)[:, :4, :2]


def transform_boxes(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 7) boxes: centre as a point, heading as a vector.

    The new yaw is the angle of the rotated heading (cos yaw, sin yaw, 0) projected on the
    x-y plane, which stays correct when the transform also tilts slightly (A2D2's camera).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    rotation, translation = transform[:3, :3], transform[:3, 3]
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ rotation.T + translation
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))], axis=1)
    heading = heading @ rotation.T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return out


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
    """(P, >=3) points, (N, 7) boxes -> (P, N) bool: point inside box (yaw-rotated, upright)."""
    points = np.asarray(points, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    d = points[:, None, :3] - boxes[None, :, :3]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local_x = d[..., 0] * cos + d[..., 1] * sin
    local_y = -d[..., 0] * sin + d[..., 1] * cos
    return ((np.abs(local_x) <= boxes[:, 3] / 2 + margin_m)
            & (np.abs(local_y) <= boxes[:, 4] / 2 + margin_m)
            & (np.abs(d[..., 2]) <= boxes[:, 5] / 2 + margin_m))
