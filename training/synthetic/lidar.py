"""Synthetic LiDAR: VLP-16-like ray patterns of A2D2's LiDARs cast against the scene.

Front rig (LidarRig.build): three of A2D2's LiDARs (front_left, front_right, front_center;
their real mounting poses from cams_lidars.json, tilts included) each fire 16 rings (-15..+15
degrees) every 0.2 degrees of azimuth; only rays that can reach the front camera's field of
view are kept. Surround rig (LidarRig.build_surround): all five LiDARs (rear_left and
rear_right too) over the full 360 degrees. Every ray is intersected with the ground plane and
with every part box (slab test, vectorised over rays, boxes culled by heading); a point lies
exactly on the first surface hit, plus range noise. Reflectance comes from the material
(ground map, part) and the incidence angle. to_a2d2_arrays then keeps, per camera, the points
that camera sees, in its view frame.

Geometry is taken at the camera time (surround: the frame time; points are motion-compensated
to the image), while the per-point timestamps follow each LiDAR's spin. Front rig: a sweep over
the camera's view takes ~17 ms and the three LiDARs are phased so that points spread over the
100 ms before the image. Surround rig: the points come from each LiDAR's last full revolution,
which ends SURROUND_LEAD_US before the frame time (each LiDAR's beam at its own azimuth then),
so every point precedes every camera's image (the cameras are within +-8 ms of the frame time).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.core.boxes import bev_corners
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import A2D2Camera, view_to_vehicle
from training.synthetic.geometry import FrameGeometry, SceneArrays
from training.synthetic.ground import GroundMap

# (A2D2 lidar name, lidar_id as in the camera JSON's lidar_ids, delay of its sweep end before the image, µs)
LIDARS = (('front_center', 3, 4000), ('front_left', 0, 35000), ('front_right', 2, 65000))
# surround: (A2D2 lidar name, lidar_id, azimuth of the beam SURROUND_LEAD_US before the frame, degrees)
SURROUND_LIDARS = (('front_center', 3, 0.0), ('front_left', 0, 72.0), ('front_right', 2, 144.0),
                   ('rear_left', 4, 216.0), ('rear_right', 1, 288.0))
SURROUND_LEAD_US = 10000
LIDAR_IDS = {'0': 'front_left', '1': 'rear_right', '2': 'front_right', '3': 'front_center', '4': 'rear_left'}
RING_ELEVATIONS_DEG = np.linspace(-15.0, 15.0, 16)
AZIMUTH_STEP_DEG = 0.2
SWEEP_US = 100000
MAX_RANGE_M = 100.0
MIN_RANGE_M = 1.0
RANGE_NOISE_M = 0.015
DROPOUT = 0.03


@dataclass
class LidarRig:
    """Rays of the LiDARs that may hit something the cameras see, in the vehicle frame."""

    origins: np.ndarray        # (R, 3)
    directions: np.ndarray     # (R, 3) unit
    azimuth: np.ndarray        # (R,) radians in the emitting LiDAR's frame
    lidar_id: np.ndarray       # (R,) float64
    time_offset_us: np.ndarray  # (R,) int64, < 0, relative to the frame (front: camera) timestamp
    heading: np.ndarray        # (R,) atan2(dy, dx) of the direction in the vehicle frame (sorted)
    full_circle: bool = False  # rays all around the vehicle (surround); False: a fan ahead, no wrap at +-pi
    origin_reach_m: float = 1.0  # every ray origin lies within this x-y distance of the origins' mean

    @classmethod
    def build(cls, calibration: dict, camera: A2D2Camera, margin_px: float = 30.0) -> 'LidarRig':
        """Front rig: three front LiDARs, rays whose point 30 m out lies in `camera`'s image."""
        origins, directions, azimuths, ids, offsets = [], [], [], [], []
        az, local = _ring_directions()
        for name, lidar_id, delay_us in LIDARS:
            to_vehicle = _lidar_to_vehicle(calibration, name)
            dirs = local @ to_vehicle[:3, :3].T
            origin = to_vehicle[:3, 3]
            # keep rays whose point 30 m out projects into the (undistorted) image
            keep = _in_camera_view(origin + 30.0 * dirs, camera, margin_px)
            ray_az = az[keep]
            # the spin reaches the rays of the window in order; the last one fires `delay_us` before the image
            start = _window_start(ray_az)
            progress = np.mod(ray_az - start, 2 * np.pi)
            span_us = progress.max() / (2 * np.pi) * SWEEP_US
            delay = min(delay_us, SWEEP_US - span_us)
            offsets.append(-np.rint(delay + (progress.max() - progress) / (2 * np.pi) * SWEEP_US).astype(np.int64))
            origins.append(np.broadcast_to(origin, (int(keep.sum()), 3)))
            directions.append(dirs[keep])
            azimuths.append(ray_az)
            ids.append(np.full(int(keep.sum()), float(lidar_id)))
        return cls._sorted(origins, directions, azimuths, ids, offsets, full_circle=False, origin_reach_m=1.0)

    @classmethod
    def build_surround(cls, calibration: dict) -> 'LidarRig':
        """Surround rig: all five LiDARs, every ray of a full revolution (R = 5 x 16 x 1800).

        Time offsets: the beam of each LiDAR points at its SURROUND_LIDARS azimuth
        SURROUND_LEAD_US before the frame; a ray fired that revolution, `delta` radians of spin
        earlier, has offset -(SURROUND_LEAD_US + delta / 2 pi * SWEEP_US).
        """
        origins, directions, azimuths, ids, offsets = [], [], [], [], []
        az, local = _ring_directions()
        for name, lidar_id, phase_deg in SURROUND_LIDARS:
            to_vehicle = _lidar_to_vehicle(calibration, name)
            behind = np.mod(np.radians(phase_deg) - az, 2 * np.pi)        # spin from the ray to the phase
            offsets.append(-np.rint(SURROUND_LEAD_US + behind / (2 * np.pi) * SWEEP_US).astype(np.int64))
            origins.append(np.broadcast_to(to_vehicle[:3, 3], (len(az), 3)))
            directions.append(local @ to_vehicle[:3, :3].T)
            azimuths.append(az)
            ids.append(np.full(len(az), float(lidar_id)))
        all_origins = np.concatenate(origins)
        reach = float(np.max(np.hypot(*(all_origins[:, :2] - all_origins.mean(axis=0)[:2]).T)))
        return cls._sorted(origins, directions, azimuths, ids, offsets, full_circle=True,
                           origin_reach_m=reach + 0.05)

    @classmethod
    def _sorted(cls, origins, directions, azimuths, ids, offsets, full_circle: bool,
                origin_reach_m: float) -> 'LidarRig':
        """Concatenate per-LiDAR ray lists and sort the rays by vehicle-frame heading."""
        directions = np.concatenate(directions)
        heading = np.arctan2(directions[:, 1], directions[:, 0])
        order = np.argsort(heading, kind='stable')
        return cls(origins=np.concatenate(origins)[order], directions=directions[order],
                   azimuth=np.concatenate(azimuths)[order], lidar_id=np.concatenate(ids)[order],
                   time_offset_us=np.concatenate(offsets)[order], heading=heading[order],
                   full_circle=full_circle, origin_reach_m=origin_reach_m)


def _ring_directions() -> tuple[np.ndarray, np.ndarray]:
    """(16 x 1800,) azimuth (radians) and (16 x 1800, 3) unit directions of one revolution, LiDAR frame."""
    elevation = np.radians(RING_ELEVATIONS_DEG)
    azimuth = np.radians(np.arange(-180.0, 180.0, AZIMUTH_STEP_DEG))
    az, el = np.meshgrid(azimuth, elevation)
    local = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    return az.reshape(-1), local


def _lidar_to_vehicle(calibration: dict, name: str) -> np.ndarray:
    """4x4 LiDAR `name` -> vehicle frame, from cams_lidars.json."""
    try:
        return view_to_vehicle(calibration['lidars'][name]['view'])
    except KeyError:
        raise ValueError(f'cams_lidars.json: lidars.{name}.view is missing') from None


def _in_camera_view(points_vehicle: np.ndarray, camera: A2D2Camera, margin_px: float) -> np.ndarray:
    """(N,) bool: (N, 3) vehicle-frame points in front of `camera` that project into its
    undistorted CamMatrix image grown by margin_px."""
    height, width = camera.image_size_hw
    cam = transform_points(points_vehicle, camera.vehicle_to_camera)
    uvw = cam @ camera.camera_matrix.T
    with np.errstate(divide='ignore', invalid='ignore'):
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    return ((cam[:, 2] > 0.5) & (u > -margin_px) & (u < width + margin_px)
            & (v > -margin_px) & (v < height + margin_px))


def _window_start(azimuth: np.ndarray) -> float:
    """Start of the smallest arc holding all azimuths (radians)."""
    values = np.sort(np.mod(azimuth, 2 * np.pi))
    gaps = np.diff(np.concatenate([values, values[:1] + 2 * np.pi]))
    return float(values[(np.argmax(gaps) + 1) % len(values)])


@dataclass
class LidarScan:
    points_vehicle: np.ndarray   # (N, 3)
    reflectance: np.ndarray      # (N,) int64 1..255
    time_offset_us: np.ndarray   # (N,) int64 relative to the camera timestamp
    lidar_id: np.ndarray         # (N,) float64
    azimuth: np.ndarray          # (N,) float64
    part: np.ndarray             # (N,) int64 part index hit, -1 = ground


def cast_rays(rig: LidarRig, arrays: SceneArrays, geometry: FrameGeometry, ground: GroundMap,
              rng: np.random.Generator) -> LidarScan:
    """Intersect every ray with the ground plane and the part boxes; first hit wins."""
    origins, directions = rig.origins, rig.directions
    count = len(directions)
    with np.errstate(divide='ignore', invalid='ignore'):
        t_ground = (ground.z_m - origins[:, 2]) / directions[:, 2]
    best = np.where((directions[:, 2] < -1e-6) & (t_ground > 0), t_ground, np.inf)
    hit_part = np.full(count, -1, dtype=np.int64)
    cos_incidence = np.abs(directions[:, 2]).copy()

    boxes = geometry.part_boxes
    centre = origins.mean(axis=0)
    rel = boxes[:, :2] - centre[:2]
    distance = np.hypot(rel[:, 0], rel[:, 1])
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + rig.origin_reach_m   # + spread of the LiDAR origins
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    with np.errstate(invalid='ignore'):
        half_angle = np.where(distance > radius, np.arcsin(np.clip(radius / distance, 0, 1)), np.pi)
    if rig.full_circle:
        candidates = np.flatnonzero(distance - radius < MAX_RANGE_M)
        # near to far, so that the hits found first rule out most rays for the parts behind them
        # (equal ranges of two parts are then resolved in this order, not the front rig's)
        candidates = candidates[np.argsort(distance[candidates] - radius[candidates], kind='stable')]
        windows = _footprint_windows(boxes[candidates], centre, rig.origin_reach_m)
        with np.errstate(divide='ignore', invalid='ignore'):
            slope = directions[:, 2] / np.hypot(directions[:, 0], directions[:, 1])   # rise per metre across
    else:
        # the rays fan out over a limited heading range in front of the vehicle (no wrap at +-pi)
        in_fan = (angle + half_angle >= rig.heading[0]) & (angle - half_angle <= rig.heading[-1])
        candidates = np.flatnonzero((distance - radius < MAX_RANGE_M) & (boxes[:, 0] + radius > 0.0)
                                    & (in_fan | (distance <= radius)))
        windows = None
    for index, part in enumerate(candidates):
        if windows is not None:
            rays = np.arange(count) if np.isnan(windows[index, 0]) else \
                _rays_between(rig.heading, windows[index, 0], windows[index, 1])
        elif distance[part] <= radius[part]:
            rays = np.arange(count)
        else:
            rays = _rays_between(rig.heading, angle[part] - half_angle[part], angle[part] + half_angle[part])
        if windows is not None:
            rays = _may_reach(rays, origins[:, 2], slope, best, boxes[part],
                              max(distance[part] - radius[part], 0.0), distance[part] + radius[part])
        if not len(rays):
            continue
        x, y, z, length, width, height, yaw = boxes[part]
        cos, sin = np.cos(yaw), np.sin(yaw)
        o = origins[rays] - (x, y, z)
        d = directions[rays]
        o_local = np.stack([o[:, 0] * cos + o[:, 1] * sin, -o[:, 0] * sin + o[:, 1] * cos, o[:, 2]], axis=1)
        d_local = np.stack([d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos, d[:, 2]], axis=1)
        half_size = np.array([length, width, height]) / 2
        with np.errstate(divide='ignore', invalid='ignore'):
            t1 = (-half_size - o_local) / d_local
            t2 = (half_size - o_local) / d_local
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_in, t_out = near.max(axis=1), far.min(axis=1)
        hit = (t_in <= t_out) & (t_in > 0.05) & (t_in < best[rays])
        if not hit.any():
            continue
        rays = rays[hit]
        best[rays] = t_in[hit]
        hit_part[rays] = part
        axis = np.argmax(near[hit], axis=1)
        cos_incidence[rays] = np.abs(d_local[hit, axis])

    valid = np.isfinite(best) & (best >= MIN_RANGE_M) & (best <= MAX_RANGE_M)
    valid &= rng.random(count) >= DROPOUT
    rays = np.flatnonzero(valid)
    ranges = best[rays] + rng.normal(0.0, RANGE_NOISE_M, len(rays))
    points = origins[rays] + directions[rays] * ranges[:, None]
    part = hit_part[rays]
    on_ground = part < 0
    base = np.empty(len(rays))
    exact = origins[rays] + directions[rays] * best[rays, None]
    world_xy = transform_points(exact[on_ground], np.linalg.inv(geometry.world_to_vehicle))[:, :2]
    _, base[on_ground] = ground.lookup(world_xy)
    base[~on_ground] = arrays.reflectance[part[~on_ground]]
    reflectance = base * (0.55 + 0.45 * cos_incidence[rays]) * (1.0 + 0.1 * rng.standard_normal(len(rays)))
    return LidarScan(points_vehicle=points, reflectance=np.clip(np.rint(reflectance), 1, 255).astype(np.int64),
                     time_offset_us=rig.time_offset_us[rays], lidar_id=rig.lidar_id[rays],
                     azimuth=rig.azimuth[rays], part=part)


def _footprint_windows(boxes: np.ndarray, centre: np.ndarray, reach_m: float) -> np.ndarray:
    """(N, 2) heading windows [low, high] (radians, low may exceed high across +-pi) of the rays
    that can hit (N, 7) boxes, seen from `centre` (3,) with ray origins within reach_m of it.

    A ray from origin o hitting the box at p has the heading of p - o, which is the heading from
    `centre` of p + (centre - o): a point of the footprint grown by reach_m on every side. That
    grown rectangle's corners bound the window (tighter than a bounding circle for long boxes
    such as buildings). NaN rows: the centre lies in the grown footprint, every ray is a candidate.
    """
    grown = boxes.copy()
    grown[:, 3:5] += 2.0 * reach_m
    corners = bev_corners(grown) - centre[:2]                          # (N, 4, 2)
    local = _to_box_frame(centre[:2] - boxes[:, :2], boxes[:, 6])
    inside = (np.abs(local) <= grown[:, 3:5] / 2).all(axis=1)
    angles = np.arctan2(corners[..., 1], corners[..., 0])              # (N, 4)
    # the grown footprint does not hold the centre, so it spans less than pi: measure the
    # corners' angles around the direction of the box centre and take the extremes
    mid = np.arctan2(boxes[:, 1] - centre[1], boxes[:, 0] - centre[0])
    offsets = np.mod(angles - mid[:, None] + np.pi, 2 * np.pi) - np.pi
    windows = np.stack([mid + offsets.min(axis=1), mid + offsets.max(axis=1)], axis=1)
    windows[inside] = np.nan
    return windows


def _may_reach(rays: np.ndarray, origin_z: np.ndarray, slope: np.ndarray, best: np.ndarray, box: np.ndarray,
               near_m: float, far_m: float, tolerance_m: float = 0.05) -> np.ndarray:
    """The rays of `rays` that can still hit `box` (7,) first: a cheap test before the slab test.

    near_m, far_m: x-y distances (metres) between which any ray origin meets the box. A hit
    lies at least near_m along the ray (the ray is at least as long as its x-y extent), so rays
    with a nearer hit already are out; and the ray's height over [near_m, far_m] across
    (origin_z + slope * distance, a straight line) must meet the box's height range.
    """
    rays = rays[best[rays] > near_m]
    z_near = origin_z[rays] + slope[rays] * near_m
    z_far = origin_z[rays] + slope[rays] * far_m
    bottom, top = box[2] - box[5] / 2 - tolerance_m, box[2] + box[5] / 2 + tolerance_m
    return rays[(np.maximum(z_near, z_far) >= bottom) & (np.minimum(z_near, z_far) <= top)]


def _to_box_frame(d: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(N, 2) vehicle-frame vectors -> each box's own frame (rotated by -yaw)."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.stack([d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos], axis=1)


def _rays_between(heading: np.ndarray, low: float, high: float) -> np.ndarray:
    """Indices of sorted headings within [low, high] (radians, may wrap around +-pi)."""
    low = (low + np.pi) % (2 * np.pi) - np.pi
    high = (high + np.pi) % (2 * np.pi) - np.pi
    if low <= high:
        return np.arange(np.searchsorted(heading, low), np.searchsorted(heading, high, side='right'))
    return np.concatenate([np.arange(np.searchsorted(heading, low), len(heading)),
                           np.arange(0, np.searchsorted(heading, high, side='right'))])


def to_a2d2_arrays(scan: LidarScan, camera: A2D2Camera, camera_tstamp_us: int) -> dict:
    """One camera's A2D2 `.npz` arrays: points in that camera's view frame, only those in its image.

    row / col follow A2D2: col = cx - fx * y / x, row = cy - fy * z / x with the camera's
    CamMatrix (undistorted image); depth = x; distance = |point|. camera_tstamp_us: the time the
    rig's time offsets count from (front rig: the camera's cam_tstamp; surround: the frame time,
    so that a point seen by two cameras has one timestamp).
    """
    points = transform_points(scan.points_vehicle, camera.vehicle_to_view)
    k = camera.camera_matrix
    height, width = camera.image_size_hw
    x = points[:, 0]
    with np.errstate(divide='ignore', invalid='ignore'):
        col = k[0, 2] - k[0, 0] * points[:, 1] / x
        row = k[1, 2] - k[1, 1] * points[:, 2] / x
    keep = (x > 0.5) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    points = points[keep]
    return {
        'points': points.astype(np.float64),
        'reflectance': scan.reflectance[keep].astype(np.int64),
        'timestamp': (camera_tstamp_us + scan.time_offset_us[keep]).astype(np.int64),
        'row': row[keep].astype(np.float64),
        'col': col[keep].astype(np.float64),
        'depth': points[:, 0].copy(),
        'distance': np.linalg.norm(points, axis=1),
        'lidar_id': scan.lidar_id[keep].astype(np.float64),
        'azimuth': scan.azimuth[keep].astype(np.float64),
    }
