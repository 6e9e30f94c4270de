"""Camera rendering of a synthetic frame: image, A2D2 label colours and per-object visibility.

Rendering is plain polygon rasterisation (cv2.fillConvexPoly / fillPoly, painter's order far to
near) into an *undistorted* pinhole canvas, followed by A2D2's lens distortion (the on-disk
images are distorted). The canvas covers every direction the distorted image sees: for the
front-center camera (a mild pinhole lens) it is the `CamMatrix` image plus a margin; a fisheye's
distorted image reaches far beyond its `CamMatrix` image (up to ~70 degrees off its axis), so its
canvas has its own, lower focal length (CamMatrix scaled so the canvas holds about
MAX_CANVAS_PX pixels) and spans the whole distortion map. Order of drawing: sky, the ground (a
homography warp of the ground map), kerbs, contact shadows, buildings, then every other object
by distance, each object's parts far to near followed by its decals. Labels are drawn as
part ids into a uint16 buffer with the same polygons (no anti-aliasing), so image and label
agree pixel for pixel; ids become A2D2 colours through a lookup table after a nearest-neighbour
distortion.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mtl_perception_ros.core.boxes import bev_corners
from mtl_perception_ros.core.camera import project_points
from training.data.a2d2_calibration import A2D2Camera
from training.synthetic.geometry import PART_ID_OFFSET, FrameGeometry, SceneArrays
from training.synthetic.ground import GroundMap
from training.synthetic.shapes import a2d2_classes, class_index
from training.synthetic.world import GROUND_Z_M, LAYER_GROUND, Lighting

NEAR_M = 0.5           # near clipping plane (depth along the optical axis)
FIXED_SHIFT = 4        # sub-pixel bits for cv2 polygon filling
MARGIN_PX = 96         # canvas margin: the distorted image's corners see beyond the CamMatrix image
MAX_CANVAS_PX = 4_000_000  # wide-angle canvases are scaled down to about this many pixels
CANVAS_PAD_PX = 4      # wide-angle canvases: room around the distortion map's extent for interpolation
# The four vehicle axes (+x, +y, -x, -y) as exact unit vectors, in heading order.
VEHICLE_AXES = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
# Box faces as corner indices of mtl_perception_ros.core.boxes.box_corners, with object-frame normals.
FACES = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [3, 0, 4, 7], [1, 2, 6, 5]])


@dataclass
class CameraRig:
    """One A2D2 camera (pinhole or fisheye) prepared for rendering (built once).

    Canvas pixel = scale * CamMatrix pixel + offset: the canvas is the undistorted CamMatrix
    image scaled by `scale` (1 for the front-center camera, below 1 for the fisheyes) and shifted.
    """

    camera: A2D2Camera
    canvas_matrix: np.ndarray       # 3x3 pinhole matrix of the canvas
    canvas_hw: tuple
    map_x: np.ndarray               # (H, W) float32: distorted pixel -> canvas column
    map_y: np.ndarray
    horizon_row: np.ndarray         # (canvas W,) row of the ground's vanishing line per column
    position: np.ndarray            # (3,) camera centre in the vehicle frame
    scale: float                    # canvas pixels per CamMatrix pixel
    image_rect: tuple               # (x0, y0, x1, y1) canvas px: where the CamMatrix image lies
    axis: np.ndarray                # (2,) vehicle axis nearest the camera's heading (nearest_vehicle_axis)

    @classmethod
    def build(cls, camera: A2D2Camera, margin_px: int = MARGIN_PX,
              max_canvas_px: float = MAX_CANVAS_PX) -> 'CameraRig':
        """Canvas, distortion maps and horizon of `camera` (see canvas_layout)."""
        height, width = camera.image_size_hw
        map_x, map_y = distortion_maps(camera)
        scale, (offset_x, offset_y), canvas_hw = canvas_layout(camera, map_x, map_y, margin_px, max_canvas_px)
        canvas_matrix = camera.camera_matrix.copy()
        if scale == 1.0:
            map_x, map_y = map_x + offset_x, map_y + offset_y        # exact: integral offsets
        else:
            canvas_matrix[:2] *= scale
            map_x = (scale * map_x.astype(np.float64) + offset_x).astype(np.float32)
            map_y = (scale * map_y.astype(np.float64) + offset_y).astype(np.float32)
        canvas_matrix[0, 2] += offset_x
        canvas_matrix[1, 2] += offset_y
        axis = nearest_vehicle_axis(camera)
        return cls(camera=camera, canvas_matrix=canvas_matrix, canvas_hw=canvas_hw, map_x=map_x, map_y=map_y,
                   horizon_row=_horizon_rows(camera, canvas_matrix, canvas_hw[1], axis),
                   position=camera.view_to_vehicle[:3, 3].copy(), scale=scale,
                   image_rect=(offset_x, offset_y, offset_x + scale * width, offset_y + scale * height), axis=axis)

    @property
    def image_slices(self) -> tuple[slice, slice]:
        """(rows, cols) of the canvas that show the CamMatrix image (rounded to whole pixels)."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.image_rect)
        return slice(y0, y1), slice(x0, x1)


def canvas_layout(camera: A2D2Camera, map_x: np.ndarray, map_y: np.ndarray, margin_px: int = MARGIN_PX,
                  max_canvas_px: float = MAX_CANVAS_PX) -> tuple[float, tuple[float, float], tuple[int, int]]:
    """Scale, (offset x, offset y) and (height, width) of a canvas covering the distortion maps.

    When the CamMatrix image plus `margin_px` holds the whole map (the front-center camera),
    that is the canvas (scale 1, offset = margin). Otherwise (fisheyes) the canvas spans the map's
    extent, scaled down to at most `max_canvas_px` pixels: a pinhole canvas over +-70 degrees
    needs far more pixels at the edges than the distorted image has there.
    """
    height, width = camera.image_size_hw
    low = np.array([float(map_x.min()), float(map_y.min())])
    high = np.array([float(map_x.max()), float(map_y.max())])
    # bilinear sampling reads the pixel after the sample too: stay a pixel inside the canvas
    if (low >= 1 - margin_px).all() and (high <= np.array([width, height]) + margin_px - 2).all():
        return 1.0, (float(margin_px), float(margin_px)), (height + 2 * margin_px, width + 2 * margin_px)
    span = high - low
    scale = float(min(1.0, np.sqrt(max_canvas_px / (span[0] * span[1]))))
    start = np.floor(scale * low) - CANVAS_PAD_PX
    stop = np.ceil(scale * high) + CANVAS_PAD_PX
    size = (stop - start + 1).astype(int)
    return scale, (float(-start[0]), float(-start[1])), (int(size[1]), int(size[0]))


def nearest_vehicle_axis(camera: A2D2Camera) -> np.ndarray:
    """(2,) the vehicle axis (+x, +y, -x or -y, exact unit vector) nearest the camera's heading."""
    forward = camera.view_to_vehicle[:3, 0]
    quadrant = int(np.round(np.arctan2(forward[1], forward[0]) / (np.pi / 2))) % 4
    return VEHICLE_AXES[quadrant].copy()


def _horizon_rows(camera: A2D2Camera, canvas_matrix: np.ndarray, canvas_w: int, axis: np.ndarray) -> np.ndarray:
    """(canvas_w,) canvas row of the ground plane's vanishing line at each column.

    The line is the image of two ground directions at infinity, (cos a, sin a, 0) at +-26.6 deg
    around `axis` (the vehicle axis the camera looks along, so both are in front of it; the
    front camera's are (1, -+0.5, 0), as they always were).
    """
    left = np.array([-axis[1], axis[0]])
    directions = np.array([[axis[0] - 0.5 * left[0], axis[1] - 0.5 * left[1], 0.0],
                           [axis[0] + 0.5 * left[0], axis[1] + 0.5 * left[1], 0.0]])
    rotation = camera.vehicle_to_camera[:3, :3]
    pixels = (directions @ rotation.T) @ canvas_matrix.T
    pixels = pixels[:, :2] / pixels[:, 2:]
    slope = (pixels[1, 1] - pixels[0, 1]) / (pixels[1, 0] - pixels[0, 0])
    columns = np.arange(canvas_w, dtype=np.float64)
    return pixels[0, 1] + slope * (columns - pixels[0, 0])


def distortion_maps(camera: A2D2Camera) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 maps: for each distorted (on-disk) pixel, its position in the CamMatrix image.

    The same maps as A2D2Camera.distort_image uses (both lens models), returned so that the
    renderer can place them into its canvas (the distorted corners see beyond the undistorted
    frame). The camera's cached arrays: callers must not modify them.
    """
    return camera.distortion_maps()


@dataclass
class SceneLook:
    """Per-scene rendering resources: sky, sensor noise, vignetting, label lookup."""

    sky: np.ndarray                 # (sky_bottom, canvas W, 3) uint8 RGB
    sky_mask: np.ndarray            # (sky_bottom, canvas W) bool, above the horizon
    ground_top: int                 # first canvas row that can show ground
    sky_bottom: int                 # canvas rows from here down show no sky
    noise_up: np.ndarray            # (H + 16, W + 16, 3) uint8 positive part of the sensor noise
    noise_down: np.ndarray
    vignette: np.ndarray            # (H, W, 3) uint8 gain * 255
    id_to_class: np.ndarray         # (65536,) uint8
    class_bgr: np.ndarray           # (1, 256, 3) uint8 LUT class index -> BGR
    lighting: Lighting


def scene_look(rig: CameraRig, arrays: SceneArrays, lighting: Lighting, rng: np.random.Generator) -> SceneLook:
    """The scene's sky (gradient + clouds, only the rows above the lowest horizon point), sensor
    noise, vignetting and label lookup for one camera rig."""
    canvas_h, canvas_w = rig.canvas_hw
    ground_top = int(np.clip(np.floor(rig.horizon_row.min()), 0, canvas_h))
    sky_bottom = int(np.clip(np.ceil(rig.horizon_row.max()) + 1, ground_top, canvas_h))
    rows = np.arange(sky_bottom, dtype=np.float32)[:, None]
    above = (rig.horizon_row[None, :].astype(np.float32) - rows) / rig.canvas_matrix[1, 1]   # ~ elevation, rad
    t = np.clip(above / 0.45, 0.0, 1.0) ** 0.6
    clouds = cv2.resize(rng.uniform(-1, 1, (8, 14)).astype(np.float32), (canvas_w, canvas_h),
                        interpolation=cv2.INTER_CUBIC)[:sky_bottom] * lighting.cloudiness
    sky = np.empty((sky_bottom, canvas_w, 3), np.uint8)
    gain = lighting.exposure * lighting.tint
    for channel in range(3):
        base = lighting.sky_horizon[channel] * (1 - t) + lighting.sky_zenith[channel] * t
        value = base + np.maximum(clouds, 0) * (235.0 - base) * 0.8
        sky[..., channel] = cv2.convertScaleAbs(value, alpha=float(gain[channel]))
    sky_mask = rows < rig.horizon_row[None, :]
    height, width = rig.camera.image_size_hw
    amplitude = max(int(round(lighting.noise_sigma * np.sqrt(3.0))), 1)     # uniform noise of that sigma
    noise = rng.integers(-amplitude, amplitude + 1, (height + 16, width + 16, 3), dtype=np.int16)
    cols, rws = np.meshgrid(np.linspace(-1, 1, width, dtype=np.float32), np.linspace(-0.63, 0.63, height,
                                                                                     dtype=np.float32))
    vignette = 1.0 - rng.uniform(0.1, 0.3) * (cols ** 2 + rws ** 2)
    _, colors = a2d2_classes()
    class_bgr = np.zeros((1, 256, 3), np.uint8)
    class_bgr[0, :len(colors)] = colors[:, ::-1]
    return SceneLook(sky=sky, sky_mask=sky_mask, ground_top=ground_top, sky_bottom=sky_bottom,
                     noise_up=np.maximum(noise, 0).astype(np.uint8),
                     noise_down=np.maximum(-noise, 0).astype(np.uint8),
                     vignette=np.repeat(np.clip(vignette * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=2),
                     id_to_class=arrays.id_to_class(class_index('Sky')), class_bgr=class_bgr, lighting=lighting)


@dataclass
class CameraFrame:
    image_bgr: np.ndarray        # (H, W, 3) uint8, distorted (on-disk) image
    label_bgr: np.ndarray        # (H, W, 3) uint8, distorted, exact A2D2 colours
    # pixel counts are CamMatrix pixels (canvas pixels / rig.scale ** 2)
    visible_px: np.ndarray       # (O,) pixels of each object in the undistorted CamMatrix image
    own_px: np.ndarray           # (O,) pixels a road user would cover alone in the image (sum of its faces)
    full_px: np.ndarray          # (O,) the same without the image bounds (truncation = 1 - own / full)


def render_camera(rig: CameraRig, look: SceneLook, arrays: SceneArrays, geometry: FrameGeometry,
                  ground: GroundMap, rng: np.random.Generator) -> CameraFrame:
    """Render one frame (see module docstring)."""
    canvas_h, canvas_w = rig.canvas_hw
    image = np.empty((canvas_h, canvas_w, 3), np.uint8)
    ids = np.empty((canvas_h, canvas_w), np.uint16)
    _draw_sky_and_ground(rig, look, ground, geometry, image, ids)

    vehicle_to_camera = rig.camera.vehicle_to_camera
    corners = geometry.part_corners                                    # (M, 8, 3)
    uv, depth, _ = project_points(corners.reshape(-1, 3), vehicle_to_camera, rig.canvas_matrix)
    uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
    face_corners = corners[:, FACES]                                   # (M, 6, 4, 3)
    face_centres = face_corners.mean(axis=2)
    normals = _face_normals(geometry.part_boxes)                       # (M, 6, 3)
    facing = np.sum(normals * (face_centres - rig.position), axis=-1) < 0
    face_uv, face_depth = uv[:, FACES], depth[:, FACES]                # (M, 6, 4, 2), (M, 6, 4)
    on_canvas = ((face_uv[..., 0].max(-1) >= 0) & (face_uv[..., 0].min(-1) < canvas_w)
                 & (face_uv[..., 1].max(-1) >= 0) & (face_uv[..., 1].min(-1) < canvas_h))
    in_front = face_depth.min(-1) >= NEAR_M
    draw = facing & arrays.rendered[:, None] & (face_depth.max(-1) >= NEAR_M) & (on_canvas | ~in_front)
    shade = _shade(normals, geometry.sun_dir, look.lighting)           # (M, 6, 3)
    face_colors = np.clip(arrays.colors[:, None, :] * shade, 0, 255)

    # projected face areas (pixels), for truncation / occlusion of road users
    x, y = face_uv[..., 0], face_uv[..., 1]
    face_area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - y * np.roll(x, -1, axis=-1), axis=-1))
    left, top, right, bottom = rig.image_rect                          # the CamMatrix image in the canvas
    face_inside = ((x.min(-1) >= left) & (x.max(-1) <= right) & (y.min(-1) >= top)
                   & (y.max(-1) <= bottom) & in_front)
    object_count = len(arrays.layer)
    own_px = np.zeros(object_count)
    full_px = np.zeros(object_count)
    order, part_sequence = _draw_order(rig, arrays, geometry, draw)
    decals_by_owner = _visible_decals(rig, arrays, geometry, look.lighting)
    image_rect = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float32)
    shadows_done = False
    for obj in order:
        if not shadows_done and arrays.layer[obj] != LAYER_GROUND:
            _draw_shadows(rig, arrays, geometry, image, look.lighting)
            shadows_done = True
        for part in part_sequence[obj]:
            for face in np.flatnonzero(draw[part]):
                if in_front[part, face]:
                    polygon = face_uv[part, face]
                else:
                    polygon = _clip_and_project(face_corners[part, face], face_depth[part, face], rig)
                    if polygon is None:
                        continue
                points = np.round(polygon * (1 << FIXED_SHIFT)).astype(np.int32)
                cv2.fillConvexPoly(image, points, face_colors[part, face].tolist(), cv2.LINE_8, FIXED_SHIFT)
                cv2.fillConvexPoly(ids, points, int(PART_ID_OFFSET + part), cv2.LINE_8, FIXED_SHIFT)
                if not arrays.road_user[obj]:
                    continue
                if face_inside[part, face]:
                    full_px[obj] += face_area[part, face]
                    own_px[obj] += face_area[part, face]
                else:
                    area, inside = _polygon_areas(polygon, image_rect)
                    full_px[obj] += area
                    own_px[obj] += inside
        for polygons, color in decals_by_owner.get(obj, ()):
            cv2.fillPoly(image, polygons, color, cv2.LINE_8, FIXED_SHIFT)
    if not shadows_done:
        _draw_shadows(rig, arrays, geometry, image, look.lighting)

    crop = ids[rig.image_slices]
    part_px = np.bincount(crop.ravel(), minlength=PART_ID_OFFSET + len(arrays.parts))[PART_ID_OFFSET:]
    visible_px = np.bincount(arrays.owner, weights=part_px[:len(arrays.owner)], minlength=object_count)
    image_bgr, label_bgr = _finish(rig, look, image, ids, rng)
    to_camera_px = 1.0 / (rig.scale * rig.scale)                       # exactly 1 for the front camera
    return CameraFrame(image_bgr=image_bgr, label_bgr=label_bgr, visible_px=visible_px * to_camera_px,
                       own_px=own_px * to_camera_px, full_px=full_px * to_camera_px)


def _draw_sky_and_ground(rig: CameraRig, look: SceneLook, ground: GroundMap, geometry: FrameGeometry,
                         image: np.ndarray, ids: np.ndarray) -> None:
    canvas_h, canvas_w = rig.canvas_hw
    top = look.ground_top
    world_to_camera = rig.camera.vehicle_to_camera @ geometry.world_to_vehicle
    a = world_to_camera[:3]
    plane = np.column_stack([a[:, 0], a[:, 1], a[:, 2] * ground.z_m + a[:, 3]])
    # map pixel -> world point on the ground -> canvas pixel, shifted up by the rows above `top`
    shift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
    homography = shift @ rig.canvas_matrix @ plane @ ground.world_from_map()
    size = (canvas_w, canvas_h - top)
    if canvas_h > top:
        cv2.warpPerspective(ground.color, homography, size, dst=image[top:], flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=ground.border_color)
        ids[top:] = cv2.warpPerspective(ground.label, homography, size, flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=int(ground.border_label))
    sky = look.sky
    image[:top] = sky[:top]
    sky_class = look.id_to_class[65535]
    ids[:top] = sky_class
    bottom = look.sky_bottom
    band = look.sky_mask[top:bottom]
    np.copyto(image[top:bottom], sky[top:bottom], where=band[..., None])
    ids[top:bottom][band] = sky_class


def _face_normals(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes -> (M, 6, 3) outward normals of FACES (bottom, top, front, rear, left, right)."""
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    zeros, ones = np.zeros(len(boxes)), np.ones(len(boxes))
    heading = np.stack([cos, sin, zeros], axis=1)
    left = np.stack([-sin, cos, zeros], axis=1)
    up = np.stack([zeros, zeros, ones], axis=1)
    return np.stack([-up, up, heading, -heading, left, -left], axis=1)


def _shade(normals: np.ndarray, sun_dir: np.ndarray, lighting: Lighting) -> np.ndarray:
    lambert = np.clip(normals @ sun_dir, 0.0, None)
    # facades facing away from the sun still get some skylight from above / the street
    return (lighting.exposure * (lighting.ambient * (0.85 + 0.15 * normals[..., 2]) + lighting.sun_strength * lambert)
            )[..., None] * lighting.tint


def _draw_order(rig: CameraRig, arrays: SceneArrays, geometry: FrameGeometry, draw: np.ndarray):
    """Objects to draw (layer, then far -> near) and, per object, its parts far -> near."""
    drawn_parts = np.flatnonzero(draw.any(axis=1))
    owners = np.unique(arrays.owner[drawn_parts])
    distance = _footprint_distance(geometry.object_boxes[owners], rig.position)
    order = owners[np.lexsort((-distance, arrays.layer[owners]))]
    part_distance = np.linalg.norm(geometry.part_boxes[drawn_parts, :3] - rig.position, axis=1)
    ranked = drawn_parts[np.lexsort((-part_distance, arrays.owner[drawn_parts]))]
    split = np.flatnonzero(np.diff(arrays.owner[ranked])) + 1
    part_sequence = {int(arrays.owner[group[0]]): group for group in np.split(ranked, split) if len(group)}
    return order, part_sequence


def _footprint_distance(boxes: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Distance in x-y from `point` to the nearest point of each (N, 7) box footprint."""
    d = point[:2] - boxes[:, :2]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local = np.stack([d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos], axis=1)
    outside = np.clip(np.abs(local) - boxes[:, 3:5] / 2, 0.0, None)
    return np.linalg.norm(outside, axis=1)


def _visible_decals(rig: CameraRig, arrays: SceneArrays, geometry: FrameGeometry, lighting: Lighting) -> dict:
    """owner -> [(fixed-point polygons, RGB colour)] of decals facing the camera and in front of it."""
    result: dict = {}
    if not arrays.decal_groups:
        return result
    uv, depth, _ = project_points(geometry.decal_vertices, rig.camera.vehicle_to_camera, rig.canvas_matrix)
    canvas_h, canvas_w = rig.canvas_hw
    colors = np.clip(arrays.decal_colors * _shade(geometry.decal_normals, geometry.sun_dir, lighting), 0, 255)
    for index, (owner, start, count, per_polygon) in enumerate(arrays.decal_groups):
        stop = start + count * per_polygon
        normal = geometry.decal_normals[index]
        if np.dot(normal, geometry.decal_vertices[start] - rig.position) >= 0:
            continue
        polygon_uv = uv[start:stop].reshape(count, per_polygon, 2)
        keep = depth[start:stop].reshape(count, per_polygon).min(axis=1) >= NEAR_M
        keep &= ((polygon_uv[..., 0].max(1) >= 0) & (polygon_uv[..., 0].min(1) < canvas_w)
                 & (polygon_uv[..., 1].max(1) >= 0) & (polygon_uv[..., 1].min(1) < canvas_h))
        if not keep.any():
            continue
        points = np.round(polygon_uv[keep] * (1 << FIXED_SHIFT)).astype(np.int32)
        result.setdefault(int(owner), []).append((list(points), colors[index].tolist()))
    return result


def _draw_shadows(rig: CameraRig, arrays: SceneArrays, geometry: FrameGeometry, image: np.ndarray,
                  lighting: Lighting) -> None:
    """Dark contact patches under road users (image only; the label keeps the road).

    Road users from 2 m behind to 120 m ahead along the vehicle axis the camera looks along
    (rig.axis; for the front camera that is the vehicle x as it always was) are drawn; patches
    reaching behind the near plane are left out.
    """
    movers = np.flatnonzero(arrays.road_user)
    boxes = geometry.object_boxes[movers]
    ahead = boxes[:, 0] * rig.axis[0] + boxes[:, 1] * rig.axis[1]      # = x exactly for the front axis
    near = (ahead > -2.0) & (ahead < 120.0)
    boxes = boxes[near].copy()
    if not len(boxes):
        return
    boxes[:, 3:5] *= 1.08
    footprint = bev_corners(boxes)
    points = np.concatenate([footprint, np.full(footprint.shape[:2] + (1,), GROUND_Z_M + 0.01)], axis=2)
    uv, depth, _ = project_points(points.reshape(-1, 3), rig.camera.vehicle_to_camera, rig.canvas_matrix)
    uv, depth = uv.reshape(-1, 4, 2), depth.reshape(-1, 4)
    color = (np.array([34.0, 34.0, 36.0]) * lighting.exposure * lighting.ambient * 1.4).tolist()
    polygons = [np.round(p * (1 << FIXED_SHIFT)).astype(np.int32) for p, d in zip(uv, depth) if d.min() >= NEAR_M]
    if polygons:
        cv2.fillPoly(image, polygons, color, cv2.LINE_8, FIXED_SHIFT)


def _clip_and_project(corners: np.ndarray, depth: np.ndarray, rig: CameraRig):
    """Clip a vehicle-frame polygon (K, 3) to depth >= NEAR_M and project it; None when nothing is left."""
    kept = []
    count = len(corners)
    for index in range(count):
        a, b = corners[index], corners[(index + 1) % count]
        da, db = depth[index], depth[(index + 1) % count]
        if da >= NEAR_M:
            kept.append(a)
        if (da >= NEAR_M) != (db >= NEAR_M):
            kept.append(a + (NEAR_M - da) / (db - da) * (b - a))
    if len(kept) < 3:
        return None
    uv, _, _ = project_points(np.array(kept), rig.camera.vehicle_to_camera, rig.canvas_matrix)
    return uv


def _polygon_areas(polygon: np.ndarray, image_rect: np.ndarray) -> tuple[float, float]:
    """Area of a convex polygon (pixels) and of its part inside the image rectangle."""
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area < 1e-6:
        return area, 0.0
    hull = cv2.convexHull(polygon.astype(np.float32))
    inside, _ = cv2.intersectConvexConvex(hull, image_rect)
    return area, max(float(inside), 0.0)


def _finish(rig: CameraRig, look: SceneLook, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator):
    """Distort to the on-disk image, add sensor effects, colour the labels."""
    image = cv2.remap(image, rig.map_x, rig.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    image = cv2.multiply(image, look.vignette, scale=1.0 / 255.0)
    height, width = image.shape[:2]
    dy, dx = rng.integers(0, 17, 2)
    image = cv2.add(image, look.noise_up[dy:dy + height, dx:dx + width])
    image = cv2.subtract(image, look.noise_down[dy:dy + height, dx:dx + width])
    distorted_ids = cv2.remap(ids, rig.map_x, rig.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    classes = look.id_to_class[distorted_ids]
    label = cv2.LUT(cv2.merge([classes, classes, classes]), look.class_bgr)
    return image, label
