"""Writing synthetic frames in A2D2's own on-disk layout (camera_lidar_semantic_bboxes).

See docs/a2d2_format.md (summarised in training/data/a2d2_calibration.py): per frame and camera
a distorted camera PNG + JSON, a LiDAR `.npz` in that camera's view frame, a label PNG and a
`label3D` JSON, under `<root>/<YYYYMMDD_hhmmss>/<kind>/cam_<camera>/` (e.g. cam_front_left,
file token `frontleft`). Every write is atomic (temporary file in the same folder, then
os.replace) and byte-deterministic: the `.npz` is written like np.savez_compressed but with
fixed zip member dates (numpy stamps the current time), JSON with a fixed key order.
"""
from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from mtl_perception_ros.core.boxes import box_corners, transform_boxes, wrap_angle
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import CAMERA_NAMES, A2D2Camera, camera_file_token, camera_folder

TAI_MINUS_UTC_S = 37            # leap seconds since 2017 (A2D2 was recorded in 2018/2019)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
KINDS = {'camera': 'camera', 'lidar': 'lidar', 'label': 'label', 'label3D': 'label3D'}


def scene_folder_name(start_utc: datetime) -> str:
    return start_utc.strftime('%Y%m%d_%H%M%S')


def _check_camera(camera: str) -> None:
    if camera not in CAMERA_NAMES:
        raise ValueError(f'unknown A2D2 camera {camera!r}; expected one of {list(CAMERA_NAMES)}')


def frame_stem(start_utc: datetime, kind: str, frame_id: int, camera: str = 'front_center') -> str:
    """e.g. 20180807145028_camera_frontcenter_000000091 (kind: camera, lidar, label, label3D;
    camera: an A2D2 camera name such as front_left -> token frontleft)."""
    if kind not in KINDS:
        raise ValueError(f'unknown A2D2 file kind {kind!r}; expected one of {sorted(KINDS)}')
    _check_camera(camera)
    return f"{start_utc.strftime('%Y%m%d%H%M%S')}_{kind}_{camera_file_token(camera)}_{frame_id:09d}"


def frame_paths(root: Path, start_utc: datetime, frame_id: int, camera: str = 'front_center') -> dict:
    """Paths of the five files of one camera's frame: image, camera_json, lidar, label, label3d."""
    _check_camera(camera)
    scene = Path(root) / scene_folder_name(start_utc)
    folder = camera_folder(camera)

    def path(kind, suffix):
        return scene / kind / folder / (frame_stem(start_utc, kind, frame_id, camera) + suffix)

    return {'image': path('camera', '.png'), 'camera_json': path('camera', '.json'), 'lidar': path('lidar', '.npz'),
            'label': path('label', '.png'), 'label3d': path('label3D', '.json')}


def tai_microseconds(utc: datetime) -> int:
    """TAI time in microseconds since the epoch, as A2D2's `cam_tstamp`."""
    return int(round((utc.replace(tzinfo=timezone.utc).timestamp() + TAI_MINUS_UTC_S) * 1e6))


# ---------------------------------------------------------------------------------------------
# Atomic, deterministic writers

def npz_bytes(arrays: dict) -> bytes:
    """What np.savez_compressed writes, with fixed zip dates so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode='w', compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + '.npy', date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            with archive.open(info, 'w', force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def json_bytes(value) -> bytes:
    return (json.dumps(value, indent=4) + '\n').encode('utf-8')


def png_bytes(image_bgr: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.png', image_bgr)
    if not ok:
        raise RuntimeError('cv2.imencode failed to encode a PNG')
    return encoded.tobytes()


# ---------------------------------------------------------------------------------------------
# Content

def camera_json(camera_tstamp_us: int, lidar_ids: dict, cam_name: str = 'front_center') -> dict:
    """A2D2 camera JSON: the camera's name, its timestamp (TAI µs) and the LiDAR id -> name table."""
    _check_camera(cam_name)
    return {'cam_name': cam_name, 'cam_tstamp': int(camera_tstamp_us), 'lidar_ids': dict(lidar_ids)}


def label3d_json(boxes_vehicle: np.ndarray, classes: list, track_ids: list, camera: A2D2Camera,
                 truncation: np.ndarray, occlusion: np.ndarray) -> dict:
    """A2D2 `label3D` content for (N, 7) vehicle-frame boxes (see docs/a2d2_format.md, 3D boxes).

    centre and 3d_points in `camera`'s view frame; size = [length, width, height]; yaw in the
    view frame as axis [0, 0, +-1] and rot_angle >= 0; 2d_bbox = extent of the projected corners
    in the undistorted image (not clipped); alpha = yaw - atan2(y, x) of the centre (view frame);
    `id` = index in the frame; `track_id` (extra key) = identity across the scene.
    """
    to_view = camera.vehicle_to_view
    k = camera.camera_matrix
    boxes_view = transform_boxes(boxes_vehicle, to_view)
    corners_view = transform_points(box_corners(boxes_vehicle).reshape(-1, 3), to_view).reshape(-1, 8, 3)
    result = {}
    for index in range(len(boxes_vehicle)):
        corners = corners_view[index]
        col = k[0, 2] - k[0, 0] * corners[:, 1] / corners[:, 0]
        row = k[1, 2] - k[1, 1] * corners[:, 2] / corners[:, 0]
        x, y, z, length, width, height, yaw = (float(v) for v in boxes_view[index])
        result[f'box_{index}'] = {
            'center': [x, y, z],
            'size': [length, width, height],
            'axis': [0.0, 0.0, 1.0 if yaw >= 0 else -1.0],
            'rot_angle': abs(yaw),
            'class': classes[index],
            'id': index,
            'track_id': int(track_ids[index]),
            '2d_bbox': [float(col.min()), float(row.min()), float(col.max()), float(row.max())],
            'truncation': round(float(truncation[index]), 3),
            'occlusion': round(float(occlusion[index]), 3),
            'alpha': float(wrap_angle(yaw - np.arctan2(y, x))),
            '3d_points': corners.tolist(),
        }
    return result
