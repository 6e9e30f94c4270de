"""Object shapes for the synthetic A2D2-layout generator: vehicles, people, street furniture.

Every object is a set of upright boxes ("parts") in its own frame (x along the heading, y left,
z up, the ground at z = 0), plus flat "decals" (windows, lights, wheels, number plates) that only
colour the camera image. Each part carries an A2D2 semantic class (index into class_list.json),
an RGB colour and a LiDAR reflectance (VLP-16 scale 1..255). Parts lie inside the object's
enclosing box `size` = (length, width, height), centred at (0, 0, height / 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from training.paths import A2D2_CONFIG_DIR

CLASS_LIST_PATH = A2D2_CONFIG_DIR / 'class_list.json'

# Outward face normals of an upright box in its own frame, and their decal coordinate frames.
_FACE_NORMALS = {'front': (1.0, 0.0, 0.0), 'rear': (-1.0, 0.0, 0.0),
                 'left': (0.0, 1.0, 0.0), 'right': (0.0, -1.0, 0.0), 'top': (0.0, 0.0, 1.0)}
DECAL_OFFSET_M = 0.01   # decals float this far in front of their face


@lru_cache(maxsize=1)
def a2d2_classes() -> tuple[tuple[str, ...], np.ndarray]:
    """A2D2 semantic class names (index order of class_list.json) and (55, 3) uint8 RGB colours."""
    with open(CLASS_LIST_PATH, encoding='utf-8') as stream:
        table = json.load(stream)
    names = tuple(table.values())
    colors = np.array([[int(key[i:i + 2], 16) for i in (1, 3, 5)] for key in table], dtype=np.uint8)
    return names, colors


def class_index(name: str) -> int:
    """Index of an A2D2 semantic class name in class_list.json."""
    names, _ = a2d2_classes()
    try:
        return names.index(name)
    except ValueError:
        raise ValueError(f'{CLASS_LIST_PATH}: no A2D2 class named {name!r}') from None


@dataclass
class DecalGroup:
    """Flat polygons of one colour on one side of an object (image only, never in the labels)."""

    polygons: np.ndarray   # (n, K, 3) vertices in the object frame, metres
    normal: np.ndarray     # (3,) outward normal in the object frame (back-face culling, shading)
    color: np.ndarray      # (3,) RGB 0..255 before lighting


@dataclass
class Shape:
    """Geometry of one object in its own frame."""

    parts: np.ndarray          # (P, 7) boxes x, y, z, length, width, height, yaw
    colors: np.ndarray         # (P, 3) RGB 0..255 before lighting
    classes: np.ndarray        # (P,) int A2D2 semantic class index
    reflectance: np.ndarray    # (P,) LiDAR reflectance 1..255
    size: np.ndarray           # (3,) length, width, height of the enclosing 3D box
    swing_m: np.ndarray = None  # (P,) walking swing amplitude along x (legs, arms), metres
    rendered: np.ndarray = None  # (P,) bool; False = LiDAR-only proxy (e.g. bicycle wheels)
    decals: list = field(default_factory=list)

    def __post_init__(self):
        count = len(self.parts)
        if self.swing_m is None:
            self.swing_m = np.zeros(count)
        if self.rendered is None:
            self.rendered = np.ones(count, dtype=bool)


class ShapeBuilder:
    """Collects parts and decals; `face_quad` / `disc` place decals on part faces."""

    def __init__(self):
        self.parts, self.colors, self.classes, self.reflectance = [], [], [], []
        self.swing, self.rendered = [], []
        self.decals: list[DecalGroup] = []

    def part(self, box, color, class_name: str, reflectance: float, swing_m: float = 0.0,
             rendered: bool = True) -> np.ndarray:
        """Add a part (x, y, z_bottom, length, width, height[, yaw]); returns its centre box."""
        x, y, z_bottom, length, width, height = box[:6]
        yaw = box[6] if len(box) > 6 else 0.0
        centre_box = np.array([x, y, z_bottom + height / 2, length, width, height, yaw], dtype=np.float64)
        self.parts.append(centre_box)
        self.colors.append(np.asarray(color, dtype=np.float64))
        self.classes.append(class_index(class_name))
        self.reflectance.append(float(reflectance))
        self.swing.append(float(swing_m))
        self.rendered.append(bool(rendered))
        return centre_box

    def face_quads(self, box: np.ndarray, face: str, rects, color) -> None:
        """Decal rectangles on a vertical face of an unrotated part box.

        rects: iterable of (u0, u1, v0, v1) fractions of the face; u runs along the face's
        horizontal edge (+y for front / rear, +x for left / right), v from bottom to top.
        """
        polygons = np.array([_face_rect(box, face, *rect) for rect in rects], dtype=np.float64)
        if len(polygons):
            self.decals.append(DecalGroup(polygons, np.array(_FACE_NORMALS[face]), np.asarray(color, float)))

    def disc(self, centres, radius: float, side: str, color, vertices: int = 14) -> None:
        """Vertical discs (wheels, lamps) facing `side` ('left', 'right', 'front', 'rear')."""
        normal = np.array(_FACE_NORMALS[side])
        angles = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
        polygons = []
        for centre in np.atleast_2d(np.asarray(centres, dtype=np.float64)):
            if side in ('left', 'right'):
                offsets = np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], axis=1)
            else:
                offsets = np.stack([np.zeros_like(angles), np.cos(angles), np.sin(angles)], axis=1)
            polygons.append(centre + radius * offsets + normal * DECAL_OFFSET_M)
        self.decals.append(DecalGroup(np.array(polygons), normal, np.asarray(color, float)))

    def build(self, size=None) -> Shape:
        """The shape; without `size`, the smallest box centred on the origin holding every part
        at any walking phase."""
        parts = np.array(self.parts)
        if size is None:
            size = _enclosing_size(parts, np.array(self.swing))
        return Shape(parts=parts, colors=np.array(self.colors),
                     classes=np.array(self.classes, dtype=np.int64),
                     reflectance=np.array(self.reflectance), size=np.asarray(size, dtype=np.float64),
                     swing_m=np.array(self.swing), rendered=np.array(self.rendered), decals=self.decals)


def _enclosing_size(parts: np.ndarray, swing_m: np.ndarray) -> np.ndarray:
    """(3,) length, width, height of the origin-centred box holding all parts (swing included)."""
    half_l, half_w = parts[:, 3] / 2, parts[:, 4] / 2
    cos, sin = np.abs(np.cos(parts[:, 6])), np.abs(np.sin(parts[:, 6]))
    reach_x = np.abs(parts[:, 0]) + np.abs(swing_m) + cos * half_l + sin * half_w
    reach_y = np.abs(parts[:, 1]) + sin * half_l + cos * half_w
    top = parts[:, 2] + parts[:, 5] / 2
    return np.array([2 * reach_x.max() + 0.02, 2 * reach_y.max() + 0.02, top.max() + 0.01])


def _face_rect(box: np.ndarray, face: str, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """(4, 3) corners of a rectangle on a face of an unrotated centre box."""
    x, y, z, length, width, height = box[:6]
    x_min, x_max = x - length / 2, x + length / 2
    y_min, y_max = y - width / 2, y + width / 2
    z_min = z - height / 2
    zs = z_min + np.array([v0, v0, v1, v1]) * height
    d = DECAL_OFFSET_M
    if face in ('front', 'rear'):
        ys = y_min + np.array([u0, u1, u1, u0]) * width
        xs = np.full(4, x_max + d if face == 'front' else x_min - d)
    elif face in ('left', 'right'):
        xs = x_min + np.array([u0, u1, u1, u0]) * length
        ys = np.full(4, y_max + d if face == 'left' else y_min - d)
    else:
        raise ValueError(f'decal face must be front/rear/left/right, got {face!r}')
    return np.stack([xs, ys, zs], axis=1)


# ---------------------------------------------------------------------------------------------
# Colours

CAR_PAINTS = np.array([[235, 235, 235], [200, 200, 205], [150, 152, 158], [95, 97, 102], [30, 30, 32],
                       [20, 35, 80], [40, 70, 150], [150, 20, 25], [200, 40, 30], [25, 80, 45],
                       [190, 170, 130], [230, 190, 40], [120, 60, 30], [70, 20, 60], [210, 110, 30]],
                      dtype=np.float64)
CLOTHES = np.array([[25, 25, 30], [40, 45, 80], [70, 70, 75], [140, 140, 145], [220, 220, 215],
                    [150, 30, 35], [30, 90, 150], [200, 160, 60], [60, 100, 50], [120, 80, 50],
                    [190, 90, 140], [230, 120, 40], [90, 60, 110]], dtype=np.float64)
SKIN = np.array([[240, 200, 170], [210, 160, 120], [170, 120, 85], [120, 80, 55], [80, 55, 40]],
                dtype=np.float64)
FACADES = np.array([[225, 215, 195], [240, 238, 230], [200, 195, 185], [170, 90, 70], [150, 75, 60],
                    [185, 175, 160], [130, 130, 135], [215, 190, 150], [160, 170, 175], [230, 220, 170],
                    [110, 105, 100], [205, 160, 130]], dtype=np.float64)
GREENS = np.array([[50, 90, 35], [70, 110, 40], [40, 75, 30], [90, 120, 50], [60, 95, 55],
                   [110, 125, 55]], dtype=np.float64)


def _jitter(rng, color, amount=12.0):
    return np.clip(np.asarray(color, dtype=np.float64) + rng.normal(0.0, amount, 3), 0, 255)


def _pick(rng, table, amount=12.0):
    return _jitter(rng, table[rng.integers(len(table))], amount)


def _paint_reflectance(color) -> float:
    """VLP-16-like diffuse reflectivity of a painted surface from its brightness."""
    return 8.0 + 0.3 * float(np.mean(color))


def _variant(name: str, track_id: int, count: int) -> str:
    """A2D2 numbers neighbouring instances (Car 1..4); cycle through them by identity."""
    return f'{name} {track_id % count + 1}'


# ---------------------------------------------------------------------------------------------
# Road users

def car_shape(rng, track_id: int, van: bool = False) -> Shape:
    """Passenger car (A2D2 `Car`) or van / SUV (`VanSUV`): body, glass cabin, lights, wheels."""
    if van:
        length, width, height = rng.uniform(4.4, 5.3), rng.uniform(1.82, 2.02), rng.uniform(1.65, 2.05)
    else:
        length, width, height = rng.uniform(3.7, 4.9), rng.uniform(1.65, 1.88), rng.uniform(1.38, 1.58)
    semantic = _variant('Car', track_id, 4)
    paint = _pick(rng, CAR_PAINTS, 10.0)
    glass = _jitter(rng, (45, 55, 65), 8.0)
    clearance = rng.uniform(0.18, 0.28)
    body_height = height * (rng.uniform(0.42, 0.5) if not van else rng.uniform(0.45, 0.55))
    cabin_height = height - clearance - body_height
    if van:
        cabin_length = length * rng.uniform(0.68, 0.82)
        cabin_x = -(length - cabin_length) / 2 + length * 0.03
    else:
        cabin_length = length * rng.uniform(0.45, 0.58)
        cabin_x = -length * rng.uniform(0.02, 0.1)
    shape = ShapeBuilder()
    body = shape.part((0, 0, clearance, length, width, body_height), paint, semantic, _paint_reflectance(paint))
    cabin = shape.part((cabin_x, 0, clearance + body_height, cabin_length, width * 0.9, cabin_height),
                       paint, semantic, 0.5 * _paint_reflectance(paint) + 6)
    shape.face_quads(cabin, 'left', [(0.06, 0.94, 0.1, 0.9)], glass)
    shape.face_quads(cabin, 'right', [(0.06, 0.94, 0.1, 0.9)], glass)
    shape.face_quads(cabin, 'front', [(0.05, 0.95, 0.08, 0.93)], glass)
    shape.face_quads(cabin, 'rear', [(0.08, 0.92, 0.15, 0.9)], glass)
    shape.face_quads(body, 'front', [(0.04, 0.22, 0.62, 0.88), (0.78, 0.96, 0.62, 0.88)], (235, 235, 225))
    shape.face_quads(body, 'front', [(0.3, 0.7, 0.5, 0.82)], (25, 25, 28))
    shape.face_quads(body, 'rear', [(0.03, 0.2, 0.6, 0.85), (0.8, 0.97, 0.6, 0.85)], (170, 20, 20))
    shape.face_quads(body, 'front', [(0.39, 0.61, 0.2, 0.42)], (235, 235, 235))
    shape.face_quads(body, 'rear', [(0.39, 0.61, 0.25, 0.47)], (235, 235, 235))
    _add_wheels(shape, length, width, radius=rng.uniform(0.3, 0.36) if not van else rng.uniform(0.33, 0.38),
                axles=(length / 2 - rng.uniform(0.7, 0.95), -length / 2 + rng.uniform(0.7, 0.95)))
    return shape.build((length, width, height))


def truck_shape(rng, track_id: int) -> Shape:
    """Lorry (A2D2 `Truck`): cab, cargo box with a stripe, chassis, two or three axles."""
    length, width, height = rng.uniform(6.5, 12.0), rng.uniform(2.3, 2.55), rng.uniform(3.0, 3.9)
    semantic = _variant('Truck', track_id, 3)
    cab_color = _pick(rng, CAR_PAINTS, 10.0)
    cargo_color = _pick(rng, np.array([[235, 235, 235], [200, 200, 200], [60, 90, 150], [170, 40, 35],
                                       [230, 200, 60], [90, 110, 90]]), 10.0)
    glass = _jitter(rng, (45, 55, 65), 8.0)
    cab_length, cab_height = rng.uniform(2.0, 2.4), min(height, rng.uniform(2.7, 3.2))
    cargo_length = length - cab_length - 0.15
    shape = ShapeBuilder()
    cab = shape.part((length / 2 - cab_length / 2, 0, 0.45, cab_length, width, cab_height - 0.45),
                     cab_color, semantic, _paint_reflectance(cab_color))
    cargo = shape.part((-length / 2 + cargo_length / 2, 0, 0.95, cargo_length, width, height - 0.95),
                       cargo_color, semantic, _paint_reflectance(cargo_color))
    shape.part((-length / 2 + cargo_length / 2, 0, 0.45, cargo_length, width * 0.8, 0.5),
               (35, 35, 38), semantic, 12.0)
    shape.face_quads(cab, 'front', [(0.06, 0.94, 0.5, 0.92)], glass)
    shape.face_quads(cab, 'front', [(0.05, 0.2, 0.08, 0.2), (0.8, 0.95, 0.08, 0.2)], (235, 235, 225))
    shape.face_quads(cab, 'left', [(0.45, 0.92, 0.55, 0.9)], glass)
    shape.face_quads(cab, 'right', [(0.45, 0.92, 0.55, 0.9)], glass)
    stripe = _pick(rng, CAR_PAINTS, 20.0)
    band = sorted(rng.uniform(0.2, 0.8, 2))
    for side in ('left', 'right'):
        shape.face_quads(cargo, side, [(0.04, 0.96, band[0], band[0] + 0.08 + 0.2 * (band[1] - band[0]))], stripe)
    shape.face_quads(cargo, 'rear', [(0.49, 0.51, 0.03, 0.97)], (60, 60, 60))
    shape.face_quads(cargo, 'rear', [(0.05, 0.15, 0.02, 0.1), (0.85, 0.95, 0.02, 0.1)], (170, 20, 20))
    axles = [length / 2 - cab_length / 2, -length / 2 + 1.3]
    if length > 9.0:
        axles.append(-length / 2 + 2.6)
    _add_wheels(shape, length, width, radius=0.5, axles=axles)
    return shape.build((length, width, height))


def _add_wheels(shape: ShapeBuilder, length: float, width: float, radius: float, axles) -> None:
    for side, sign in (('left', 1.0), ('right', -1.0)):
        centres = [(x, sign * width / 2, radius) for x in axles]
        shape.disc(centres, radius, side, (22, 22, 24))
        shape.disc(centres, radius * 0.55, side, (140, 140, 145), vertices=10)


def pedestrian_shape(rng, track_id: int, walking: bool) -> Shape:
    """Person (A2D2 `Pedestrian`): legs and arms that swing when walking, torso, head, maybe a bag."""
    height = rng.uniform(1.1, 1.4) if rng.random() < 0.1 else rng.uniform(1.52, 1.95)
    scale = height / 1.75
    semantic = _variant('Pedestrian', track_id, 3)
    leg_height, torso_height = 0.48 * height, 0.36 * height
    head_height = height - leg_height - torso_height
    torso_width, torso_depth = rng.uniform(0.34, 0.46) * scale, rng.uniform(0.2, 0.28) * scale
    swing = rng.uniform(0.16, 0.26) * scale if walking else 0.0
    pants, shirt, skin = _pick(rng, CLOTHES), _pick(rng, CLOTHES), _pick(rng, SKIN, 8.0)
    shape = ShapeBuilder()
    for sign in (1.0, -1.0):
        shape.part((0, sign * torso_width * 0.25, 0, 0.14 * scale, 0.13 * scale, leg_height), pants,
                   semantic, 20 + 0.15 * pants.mean(), swing_m=sign * swing)
        shape.part((0, sign * (torso_width / 2 + 0.05 * scale), leg_height + torso_height - 0.33 * height,
                    0.1 * scale, 0.09 * scale, 0.33 * height), shirt, semantic, 20 + 0.15 * shirt.mean(),
                   swing_m=-sign * 0.7 * swing)
    torso = shape.part((0, 0, leg_height, torso_depth, torso_width, torso_height), shirt, semantic,
                       20 + 0.15 * shirt.mean())
    head = shape.part((0, 0, leg_height + torso_height, 0.2 * scale, 0.17 * scale, head_height), skin,
                      semantic, 25.0)
    hair = _pick(rng, np.array([[30, 25, 20], [80, 55, 30], [160, 130, 80], [120, 120, 120]]), 6.0)
    shape.face_quads(head, 'rear', [(0.0, 1.0, 0.35, 1.0)], hair)
    shape.face_quads(head, 'left', [(0.0, 0.55, 0.45, 1.0)], hair)
    shape.face_quads(head, 'right', [(0.0, 0.55, 0.45, 1.0)], hair)
    if rng.random() < 0.3:
        bag = _pick(rng, CLOTHES)
        shape.part((-torso_depth / 2 - 0.09 * scale, 0, leg_height + 0.3 * torso_height, 0.18 * scale,
                    torso_width * 0.8, 0.55 * torso_height), bag, semantic, 25.0)
    del torso
    return shape.build()


def bicycle_shape(rng, track_id: int, with_rider: bool) -> Shape:
    """Bicycle (A2D2 `Bicycle`) or cyclist (`Cyclist`: bicycle with rider); all parts Bicycle n."""
    semantic = _variant('Bicycle', track_id, 4)
    frame_color = _pick(rng, CAR_PAINTS, 15.0)
    radius, wheel_x = rng.uniform(0.32, 0.36), rng.uniform(0.5, 0.56)
    shape = ShapeBuilder()
    shape.part((0, 0, radius * 1.1, 2 * wheel_x * 0.75, 0.06, 0.5), frame_color, semantic,
               _paint_reflectance(frame_color))
    shape.part((wheel_x * 0.75, 0, 0.98, 0.08, 0.56, 0.07), (30, 30, 30), semantic, 20.0)
    for x in (wheel_x, -wheel_x):   # LiDAR-only stand-ins for the (see-through) wheels
        shape.part((x, 0, 0.3 * radius, 1.4 * radius, 0.05, 1.4 * radius), (0, 0, 0), semantic, 15.0,
                   rendered=False)
    for side, sign in (('left', 1.0), ('right', -1.0)):
        centres = [(wheel_x, sign * 0.03, radius), (-wheel_x, sign * 0.03, radius)]
        shape.disc(centres, radius, side, (25, 25, 25), vertices=16)
        shape.disc(centres, radius * 0.85, side, (95, 95, 100), vertices=16)
    if with_rider:
        scale = rng.uniform(0.9, 1.08)
        pants, shirt, skin = _pick(rng, CLOTHES), _pick(rng, CLOTHES), _pick(rng, SKIN, 8.0)
        for sign in (1.0, -1.0):
            shape.part((-0.08, sign * 0.12, 0.3, 0.14, 0.13, 0.72 * scale), pants, semantic, 22.0,
                       swing_m=sign * 0.09)
            shape.part((0.15, sign * 0.21, 1.12 * scale, 0.5, 0.08, 0.09), shirt, semantic, 22.0)
        shape.part((-0.12, 0, 0.98 * scale, 0.28, 0.4, 0.55 * scale), shirt, semantic, 22.0)
        helmet = rng.random() < 0.5
        head = shape.part((-0.04, 0, 1.53 * scale, 0.21, 0.18, 0.25), skin, semantic, 25.0)
        if helmet:
            shape.face_quads(head, 'left', [(0.0, 1.0, 0.55, 1.0)], _pick(rng, CAR_PAINTS))
            shape.face_quads(head, 'right', [(0.0, 1.0, 0.55, 1.0)], _pick(rng, CAR_PAINTS))
    return shape.build()


# ---------------------------------------------------------------------------------------------
# Static world

def building_shape(rng, length: float, depth: float, height: float) -> Shape:
    """Building block with a window grid on every side and a darker ground floor."""
    facade = _pick(rng, FACADES, 8.0)
    glass = _jitter(rng, (60, 70, 85) if rng.random() < 0.7 else (120, 135, 150), 10.0)
    shape = ShapeBuilder()
    box = shape.part((0, 0, 0, length, depth, height), facade, 'Buildings', rng.uniform(25, 60))
    floor_m, spacing_m = rng.uniform(2.8, 3.4), rng.uniform(2.3, 3.6)
    window_w, window_h = rng.uniform(0.8, 1.5), rng.uniform(1.1, 1.6)
    for face, extent in (('left', length), ('right', length), ('front', depth), ('rear', depth)):
        columns = max(int(extent / spacing_m), 1)
        floors = max(int((height - 1.0) / floor_m), 0)
        rects = []
        for floor in range(1, floors):
            v0 = (floor * floor_m + 0.8) / height
            v1 = v0 + window_h / height
            if v1 > 0.97:
                break
            for column in range(columns):
                centre = (column + 0.5) / columns
                rects.append((centre - window_w / 2 / extent, centre + window_w / 2 / extent, v0, v1))
        shape.face_quads(box, face, rects, glass)
        if face in ('left', 'right') and rng.random() < 0.6:   # shop windows / doors at street level
            shop = []
            for column in range(0, columns, 2):
                centre = (column + 0.5) / columns
                shop.append((centre - 0.8 * spacing_m / extent, centre + 0.8 * spacing_m / extent,
                             0.25 / height, 2.4 / height))
            shape.face_quads(box, face, shop, glass * 0.8)
    return shape.build((length, depth, height))


def tree_shape(rng) -> Shape:
    """Tree (`Nature object`): trunk and a crown of a few rotated boxes."""
    green = _pick(rng, GREENS, 8.0)
    trunk_height = rng.uniform(1.8, 3.2)
    crown = rng.uniform(2.5, 5.5)
    shape = ShapeBuilder()
    shape.part((0, 0, 0, 0.35, 0.35, trunk_height + 0.5), _jitter(rng, (90, 70, 50), 10.0), 'Nature object', 40.0)
    for index in range(3):
        size = crown * rng.uniform(0.65, 1.0)
        offset = rng.uniform(-0.2, 0.2, 2) * crown
        shape.part((offset[0], offset[1], trunk_height + rng.uniform(-0.2, 0.6), size, size * rng.uniform(0.8, 1.0),
                    size * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi / 2)),
                   _jitter(rng, green * (0.85 + 0.1 * index), 6.0), 'Nature object', rng.uniform(25, 50))
    return shape.build()


def hedge_shape(rng, length: float) -> Shape:
    shape = ShapeBuilder()
    width, height = rng.uniform(0.6, 1.2), rng.uniform(0.7, 1.6)
    shape.part((0, 0, 0, length, width, height), _pick(rng, GREENS, 8.0), 'Nature object', rng.uniform(25, 45))
    return shape.build((length, width, height))


def street_lamp_shape(rng, road_side: float) -> Shape:
    """Lamp post (`Poles`) with an arm over the road (road_side = +1 road to the left, -1 right)."""
    height = rng.uniform(6.0, 9.0)
    color = _jitter(rng, (110, 112, 115), 10.0)
    shape = ShapeBuilder()
    shape.part((0, 0, 0, 0.18, 0.18, height), color, 'Poles', 45.0)
    shape.part((0, road_side * 0.8, height - 0.1, 0.1, 1.6, 0.1), color, 'Poles', 45.0)
    shape.part((0, road_side * 1.5, height - 0.25, 0.3, 0.55, 0.15), color * 0.7, 'Poles', 60.0)
    return shape.build()


SIGN_COLORS = np.array([[200, 25, 30], [235, 235, 235], [25, 70, 160], [240, 200, 30]], dtype=np.float64)


def sign_shape(rng, track_id: int) -> Shape:
    """Traffic sign (`Traffic sign n`) on a `Poles` post, plate facing the traffic along -x."""
    post = rng.uniform(2.2, 3.0)
    plate = rng.uniform(0.55, 0.85)
    color = SIGN_COLORS[rng.integers(len(SIGN_COLORS))]
    shape = ShapeBuilder()
    shape.part((0, 0, 0, 0.08, 0.08, post + plate * 0.2), (130, 130, 135), 'Poles', 50.0)
    board = shape.part((-0.06, 0, post, 0.04, plate, plate * (1.0 if rng.random() < 0.7 else 0.6)), color,
                       _variant('Traffic sign', track_id, 3), 220.0)
    inner = SIGN_COLORS[rng.integers(len(SIGN_COLORS))]
    shape.face_quads(board, 'rear', [(0.22, 0.78, 0.22, 0.78)], inner)
    return shape.build()


def traffic_light_shape(rng, lit: int) -> Shape:
    """Traffic light: `Poles` post and a `Traffic signal 1` housing with lamps facing -x."""
    post = rng.uniform(2.3, 3.0)
    shape = ShapeBuilder()
    shape.part((0, 0, 0, 0.14, 0.14, post), (90, 92, 95), 'Poles', 45.0)
    housing = shape.part((-0.12, 0, post, 0.28, 0.34, 0.95), (35, 35, 38), 'Traffic signal 1', 40.0)
    lamps = [(230, 40, 30), (240, 180, 20), (40, 210, 90)]
    for index, color in enumerate(lamps):
        centre = (housing[0] - housing[3] / 2, 0.0, post + 0.95 * (0.82 - 0.32 * index))
        shade = np.asarray(color, float) * (1.0 if index == lit else 0.3)
        shape.disc([centre], 0.1, 'rear', shade, vertices=10)
    return shape.build()


def bin_shape(rng) -> Shape:
    """Litter bin (`Obstacles / trash`)."""
    color = _pick(rng, np.array([[40, 110, 60], [90, 90, 95], [220, 120, 30], [40, 60, 120]]), 8.0)
    size = (rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.2))
    shape = ShapeBuilder()
    shape.part((0, 0, 0) + size, color, 'Obstacles / trash', 35.0)
    return shape.build(size)


def curb_shape(length: float, color) -> Shape:
    """Kerb stone segment (`Curbstone`), 0.2 m wide and 0.12 m high."""
    shape = ShapeBuilder()
    shape.part((0, 0, 0, length, 0.2, 0.12), color, 'Curbstone', 30.0)
    return shape.build((length, 0.2, 0.12))


def backdrop_shape(rng, width: float) -> Shape:
    """Far end of the street view: a row of buildings and trees across the road."""
    shape = ShapeBuilder()
    y = -width / 2
    while y < width / 2:
        span = rng.uniform(8.0, 25.0)
        if rng.random() < 0.6:
            color = _pick(rng, FACADES, 8.0)
            shape.part((0, y + span / 2, 0, 8.0, span, rng.uniform(8.0, 30.0)), color, 'Buildings', 40.0)
        else:
            shape.part((0, y + span / 2, 0, 8.0, span, rng.uniform(6.0, 14.0)), _pick(rng, GREENS, 8.0),
                       'Nature object', 35.0)
        y += span
    return shape.build()
