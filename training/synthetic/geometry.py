"""Per-frame geometry of a synthetic scene in the vehicle frame, shared by camera and LiDAR.

All parts of all objects are flattened once per scene into arrays (one row per part, one
vertex block per decal group), so that placing them at a frame is a few vectorised numpy
operations. Part i is drawn into the id buffer as PART_ID_OFFSET + i; ids below the offset
are A2D2 class indices of the ground (and the sky).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception_ros.core.boxes import box_corners, transform_boxes
from mtl_perception_ros.core.camera import invert_rigid
from training.synthetic.world import GROUND_Z_M, Scene

PART_ID_OFFSET = 64
MAX_PARTS = 65535 - PART_ID_OFFSET


def pose_matrix(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """4x4 transform of a frame at (x, y, z) rotated by yaw about +z."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.array([[cos, -sin, 0.0, x], [sin, cos, 0.0, y], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])


@dataclass
class SceneArrays:
    """Flattened parts and decals of a scene (object frame), with per-frame object poses."""

    parts: np.ndarray          # (M, 7) object-frame boxes
    swing_m: np.ndarray        # (M,)
    colors: np.ndarray         # (M, 3)
    classes: np.ndarray        # (M,) A2D2 class index
    reflectance: np.ndarray    # (M,)
    rendered: np.ndarray       # (M,) bool
    owner: np.ndarray          # (M,) object index
    layer: np.ndarray          # (O,) object layer
    road_user: np.ndarray      # (O,) bool: annotated with a 3D box
    sizes: np.ndarray          # (O, 3) enclosing box of each object
    poses: np.ndarray          # (T, O, 3) world x, y, yaw per frame
    phases: np.ndarray         # (T, O)
    decal_vertices: np.ndarray  # (V, 3) object frame
    decal_groups: list         # per group: (owner, vertex start, polygon count, vertices per polygon)
    decal_normals: np.ndarray  # (G, 3) object frame
    decal_colors: np.ndarray   # (G, 3)

    @classmethod
    def from_scene(cls, scene: Scene) -> 'SceneArrays':
        parts, swing, colors, classes, refl, rendered, owner = [], [], [], [], [], [], []
        vertices, groups, normals, decal_colors = [], [], [], []
        vertex_count = 0
        for index, obj in enumerate(scene.objects):
            shape = obj.shape
            parts.append(shape.parts)
            swing.append(shape.swing_m)
            colors.append(shape.colors)
            classes.append(shape.classes)
            refl.append(shape.reflectance)
            rendered.append(shape.rendered)
            owner.append(np.full(len(shape.parts), index))
            for decal in shape.decals:
                count, per_polygon = decal.polygons.shape[:2]
                vertices.append(decal.polygons.reshape(-1, 3))
                groups.append((index, vertex_count, count, per_polygon))
                normals.append(decal.normal)
                decal_colors.append(decal.color)
                vertex_count += count * per_polygon
        frames = scene.frame_count
        poses = np.stack([np.broadcast_to(obj.poses, (frames, 3)) if len(obj.poses) == 1 else obj.poses
                          for obj in scene.objects], axis=1)
        phases = np.stack([np.broadcast_to(obj.phases, (frames,)) if len(obj.phases) == 1 else obj.phases
                           for obj in scene.objects], axis=1)
        arrays = cls(parts=np.concatenate(parts), swing_m=np.concatenate(swing), colors=np.concatenate(colors),
                     classes=np.concatenate(classes), reflectance=np.concatenate(refl),
                     rendered=np.concatenate(rendered), owner=np.concatenate(owner),
                     layer=np.array([obj.layer for obj in scene.objects]),
                     road_user=np.array([obj.box_class is not None for obj in scene.objects]),
                     sizes=np.array([obj.shape.size for obj in scene.objects]), poses=poses, phases=phases,
                     decal_vertices=np.concatenate(vertices) if vertices else np.zeros((0, 3)),
                     decal_groups=groups, decal_normals=np.array(normals).reshape(-1, 3),
                     decal_colors=np.array(decal_colors).reshape(-1, 3))
        if len(arrays.parts) > MAX_PARTS:
            raise ValueError(f'scene has {len(arrays.parts)} parts; the id buffer holds at most {MAX_PARTS}')
        return arrays

    def id_to_class(self, sky_class: int) -> np.ndarray:
        """(65536,) uint8: id buffer value -> A2D2 class index."""
        table = np.full(65536, sky_class, dtype=np.uint8)
        table[:PART_ID_OFFSET] = np.arange(PART_ID_OFFSET)
        table[PART_ID_OFFSET:PART_ID_OFFSET + len(self.classes)] = self.classes
        return table


@dataclass
class FrameGeometry:
    """A frame's geometry in the vehicle frame."""

    world_to_vehicle: np.ndarray   # 4x4
    object_poses: np.ndarray       # (O, 3) x, y, yaw in the vehicle frame
    part_boxes: np.ndarray         # (M, 7) vehicle-frame boxes
    part_corners: np.ndarray       # (M, 8, 3)
    object_boxes: np.ndarray       # (O, 7) enclosing boxes, vehicle frame
    decal_vertices: np.ndarray     # (V, 3) vehicle frame
    decal_normals: np.ndarray      # (G, 3) vehicle frame
    sun_dir: np.ndarray            # (3,) vehicle frame


def frame_geometry(scene: Scene, arrays: SceneArrays, frame: int) -> FrameGeometry:
    """Place every part and decal at `frame`, in the vehicle frame of that frame."""
    ego = scene.ego_poses[frame]
    world_to_vehicle = invert_rigid(pose_matrix(ego[0], ego[1], ego[2]))
    poses_world = arrays.poses[frame]                                   # (O, 3)
    vehicle_yaw = poses_world[:, 2] - ego[2]
    centres = transform_boxes(np.column_stack([poses_world[:, :2], np.zeros((len(poses_world), 4)),
                                               poses_world[:, 2]]), world_to_vehicle)
    object_poses = np.column_stack([centres[:, :2], vehicle_yaw])

    # parts: object frame -> vehicle frame
    local = arrays.parts.copy()
    local[:, 0] += arrays.swing_m * np.sin(arrays.phases[frame][arrays.owner])
    pose = object_poses[arrays.owner]
    cos, sin = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    boxes = local.copy()
    boxes[:, 0] = pose[:, 0] + cos * local[:, 0] - sin * local[:, 1]
    boxes[:, 1] = pose[:, 1] + sin * local[:, 0] + cos * local[:, 1]
    boxes[:, 2] = local[:, 2] + GROUND_Z_M
    boxes[:, 6] = local[:, 6] + pose[:, 2]

    sizes = arrays.sizes
    object_boxes = np.column_stack([object_poses[:, :2], GROUND_Z_M + sizes[:, 2] / 2, sizes, object_poses[:, 2]])

    decal_vertices = np.zeros((0, 3))
    decal_normals = np.zeros((0, 3))
    if arrays.decal_groups:
        owners = np.array([group[0] for group in arrays.decal_groups])
        counts = np.array([group[2] * group[3] for group in arrays.decal_groups])
        vertex_owner = np.repeat(owners, counts)
        vpose = object_poses[vertex_owner]
        vcos, vsin = np.cos(vpose[:, 2]), np.sin(vpose[:, 2])
        v = arrays.decal_vertices
        decal_vertices = np.column_stack([vpose[:, 0] + vcos * v[:, 0] - vsin * v[:, 1],
                                          vpose[:, 1] + vsin * v[:, 0] + vcos * v[:, 1],
                                          v[:, 2] + GROUND_Z_M])
        npose = object_poses[owners]
        n = arrays.decal_normals
        ncos, nsin = np.cos(npose[:, 2]), np.sin(npose[:, 2])
        decal_normals = np.column_stack([ncos * n[:, 0] - nsin * n[:, 1], nsin * n[:, 0] + ncos * n[:, 1], n[:, 2]])
    sun = world_to_vehicle[:3, :3] @ scene.lighting.sun_dir
    return FrameGeometry(world_to_vehicle=world_to_vehicle, object_poses=object_poses, part_boxes=boxes,
                         part_corners=box_corners(boxes), object_boxes=object_boxes,
                         decal_vertices=decal_vertices, decal_normals=decal_normals, sun_dir=sun)
