"""Scene content for the synthetic A2D2-layout generator: road layout, static world, moving actors.

The world frame of a scene is the ego vehicle frame at its first frame (REP-103: x forward
along a straight road, y left, z up); the ground is the plane z = GROUND_Z_M. Right-hand
traffic: the ego's lanes lie right of the centre line (smaller y), oncoming lanes left of it.
Every object is an upright `Shape` (synthetic_shapes) with one world pose (x, y, yaw) per
frame; road users move on unicycle paths (constant speed, gentle curves, lane changes,
right turns out of a side street, people walking and crossing), never overlapping each other
or the ego. Frames are FRAME_PERIOD_S apart (A2D2's 30 Hz camera, every third frame).

The front rig's world starts 40 m behind the ego and its road users start near or ahead of it.
`generate_scene(..., surround=True)` (the six-camera rig) also models the street behind: the
world reaches SURROUND_BEHIND_M back and ends in a second backdrop, and the traffic, parked
cars, cyclists and pedestrians start up to SURROUND_USERS_BEHIND_M behind the ego, so that the
rear and side cameras see road users too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.synthetic import shapes
from training.synthetic.shapes import Shape

GROUND_Z_M = -0.9            # ground height in the vehicle frame
FRAME_PERIOD_S = 0.1
SUBSTEP_S = 0.02             # path integration step
EGO_SIZE = np.array([4.8, 1.9, 1.5])
EGO_CENTRE_X_M = 1.5         # A2D2 ego-dimensions x-range [-1, 4] around the vehicle origin
BACKDROP_AHEAD_M = 210.0     # the view ends at a row of buildings / trees this far past the ego's last pose
SURROUND_BEHIND_M = 140.0    # surround: the modelled world starts this far behind the ego's first pose
SURROUND_USERS_BEHIND_M = 60.0  # surround: road users are placed from this far behind the ego
LAYER_GROUND, LAYER_BUILDINGS, LAYER_OBJECTS = 0, 1, 2


@dataclass
class RoadLayout:
    """A straight road along x. `side` = -1 is the ego's (right) side, +1 the oncoming side."""

    lane_width_m: float
    lanes_same: int
    lanes_oncoming: int
    ego_lane: int                   # same-direction lane of the ego, 0 = next to the centre line
    centre_line: str                # 'solid', 'double' or 'dashed'
    lane_dash_m: tuple              # (dash, gap) of lines between lanes of one direction
    edge_lines: bool
    parking: dict                   # side -> bool: 2.2 m parking strip at the carriageway edge
    sidewalk_m: dict                # side -> sidewalk width
    verge_m: dict                   # side -> grass between sidewalk and buildings
    zebra_x: float | None           # start of a zebra crossing (4 m long in x), or None
    side_street: tuple | None       # (x centre, side, width) of a side street, or None
    x_range: tuple                  # (x_min, x_max) of the modelled world
    paint_color: np.ndarray = field(default_factory=lambda: np.array([235.0, 235.0, 228.0]))

    @property
    def centre_y(self) -> float:
        return (self.ego_lane + 0.5) * self.lane_width_m

    def lane_y(self, side: int, index: int) -> float:
        """Centre of lane `index` (0 = next to the centre line) on `side`."""
        return self.centre_y + side * (index + 0.5) * self.lane_width_m

    def carriageway_edge(self, side: int) -> float:
        lanes = self.lanes_oncoming if side > 0 else self.lanes_same
        return self.centre_y + side * lanes * self.lane_width_m

    def road_edge(self, side: int) -> float:
        """Outer edge of the paved road (lanes + parking strip): where the kerb starts."""
        return self.carriageway_edge(side) + side * (2.2 if self.parking[side] else 0.0)

    def sidewalk(self, side: int) -> tuple[float, float]:
        """(inner, outer) y of the sidewalk behind the 0.2 m kerb."""
        inner = self.road_edge(side) + side * 0.2
        return inner, inner + side * self.sidewalk_m[side]

    def building_line(self, side: int) -> float:
        return self.sidewalk(side)[1] + side * self.verge_m[side]

    def in_side_street(self, x, margin_m: float = 0.0):
        if self.side_street is None:
            return np.zeros_like(np.asarray(x, dtype=bool))
        centre, _, width = self.side_street
        return np.abs(np.asarray(x) - centre) < width / 2 + margin_m


@dataclass
class Lighting:
    """Scene illumination: shade = exposure * (ambient + sun_strength * max(0, n . sun_dir)) * tint."""

    sun_dir: np.ndarray        # (3,) unit vector towards the sun, world frame
    sun_strength: float
    ambient: float
    exposure: float
    tint: np.ndarray           # (3,) RGB gains
    sky_horizon: np.ndarray    # (3,) RGB
    sky_zenith: np.ndarray     # (3,) RGB
    cloudiness: float          # 0..1
    noise_sigma: float         # sensor noise, 8-bit grey levels

    def shade(self, normals: np.ndarray) -> np.ndarray:
        """(..., 3) unit normals (world frame) -> (..., 3) RGB gains."""
        lambert = np.clip(np.asarray(normals) @ self.sun_dir, 0.0, None)
        return (self.exposure * (self.ambient + self.sun_strength * lambert))[..., None] * self.tint


@dataclass
class SceneObject:
    """One object with its world pose per frame (T = 1 for static objects)."""

    shape: Shape
    layer: int
    poses: np.ndarray            # (T, 3) x, y, yaw (world frame; metres, radians)
    phases: np.ndarray           # (T,) walking phase, radians
    box_class: str | None = None  # A2D2 3D box class for annotated road users
    track_id: int = -1

    def pose(self, frame: int) -> np.ndarray:
        return self.poses[min(frame, len(self.poses) - 1)]

    def phase(self, frame: int) -> float:
        return float(self.phases[min(frame, len(self.phases) - 1)])

    def footprints(self, frame_count: int) -> np.ndarray:
        """(T, 5) x, y, length, width, yaw of the enclosing box per frame."""
        poses = np.broadcast_to(self.poses, (frame_count, 3)) if len(self.poses) == 1 else self.poses
        size = np.broadcast_to(self.shape.size[:2], (len(poses), 2))
        return np.column_stack([poses[:, :2], size, poses[:, 2]])


@dataclass
class Scene:
    layout: RoadLayout
    lighting: Lighting
    objects: list
    ego_poses: np.ndarray        # (T, 3) world pose of the vehicle frame per frame
    frame_count: int

    def annotated(self) -> list:
        return [obj for obj in self.objects if obj.box_class is not None]


# ---------------------------------------------------------------------------------------------
# Paths

def integrate_path(x0: float, y0: float, yaw0: float, speed: np.ndarray, yaw_rate: np.ndarray,
                   frame_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Unicycle path sampled at the frames.

    speed, yaw_rate: (S,) m/s and rad/s per SUBSTEP_S step, S = substeps of the scene.
    Returns poses (T, 3) x, y, yaw and the travelled distance (T,) in metres.
    """
    steps = int(round(FRAME_PERIOD_S / SUBSTEP_S))
    yaw = yaw0 + np.concatenate([[0.0], np.cumsum(yaw_rate[:-1] * SUBSTEP_S)])
    dx = np.concatenate([[0.0], np.cumsum(speed[:-1] * np.cos(yaw[:-1]) * SUBSTEP_S)])
    dy = np.concatenate([[0.0], np.cumsum(speed[:-1] * np.sin(yaw[:-1]) * SUBSTEP_S)])
    distance = np.concatenate([[0.0], np.cumsum(np.abs(speed[:-1]) * SUBSTEP_S)])
    pick = np.arange(frame_count) * steps
    poses = np.column_stack([x0 + dx[pick], y0 + dy[pick], yaw[pick]])
    return poses, distance[pick]


def substep_times(frame_count: int) -> np.ndarray:
    steps = int(round(FRAME_PERIOD_S / SUBSTEP_S))
    return np.arange((frame_count - 1) * steps + 1) * SUBSTEP_S


def lane_change_yaw_rate(times: np.ndarray, speed: float, shift_m: float, start_s: float,
                         duration_s: float) -> np.ndarray:
    """Yaw rate (rad/s) of a smooth lane change moving `shift_m` sideways (small-angle)."""
    amplitude = 2 * np.pi * shift_m / (max(speed, 0.1) * duration_s ** 2)
    phase = (times - start_s) / duration_s
    active = (phase >= 0) & (phase <= 1)
    return np.where(active, amplitude * np.sin(2 * np.pi * phase), 0.0)


def rectangles_overlap(a: np.ndarray, b: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
    """(N, 5) x, y, length, width, yaw rectangles -> (N,) bool overlap (separating axis test)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)

    def corners(r):
        cos, sin = np.cos(r[:, 4]), np.sin(r[:, 4])
        hl, hw = r[:, 2] / 2 + margin_m / 2, r[:, 3] / 2 + margin_m / 2
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
        lx, ly = local[None, :, 0] * hl[:, None], local[None, :, 1] * hw[:, None]
        return np.stack([r[:, None, 0] + cos[:, None] * lx - sin[:, None] * ly,
                         r[:, None, 1] + sin[:, None] * lx + cos[:, None] * ly], axis=-1)

    ca, cb = corners(a), corners(b)
    separated = np.zeros(len(ca), dtype=bool)
    for rect in (a, b):
        for angle in (rect[:, 4], rect[:, 4] + np.pi / 2):
            axis = np.stack([np.cos(angle), np.sin(angle)], axis=1)[:, None, :]
            pa, pb = np.sum(ca * axis, axis=-1), np.sum(cb * axis, axis=-1)
            separated |= (pa.max(1) < pb.min(1)) | (pb.max(1) < pa.min(1))
    return ~separated


# ---------------------------------------------------------------------------------------------
# Scene generation

def random_layout(rng, x_range: tuple) -> RoadLayout:
    lanes_same = int(rng.choice([1, 1, 2, 2, 3]))
    lanes_oncoming = int(rng.choice([1, 1, 2, 2])) if lanes_same < 3 else 2
    zebra_x = float(rng.uniform(15.0, 70.0)) if rng.random() < 0.45 else None
    side_street = None
    if rng.random() < 0.5:
        x_side = float(rng.uniform(25.0, 80.0))
        if zebra_x is None or abs(x_side - zebra_x) > 20:
            side_street = (x_side, int(rng.choice([-1, 1])), float(rng.uniform(7.0, 11.0)))
    return RoadLayout(
        lane_width_m=float(rng.uniform(3.0, 3.7)), lanes_same=lanes_same, lanes_oncoming=lanes_oncoming,
        ego_lane=int(rng.integers(lanes_same)), centre_line=str(rng.choice(['solid', 'double', 'dashed'])),
        lane_dash_m=(float(rng.choice([3.0, 4.5, 6.0])), float(rng.choice([6.0, 9.0, 12.0]))),
        edge_lines=bool(rng.random() < 0.6),
        parking={side: bool(rng.random() < 0.5) for side in (-1, 1)},
        sidewalk_m={side: float(rng.uniform(2.0, 5.0)) for side in (-1, 1)},
        verge_m={side: float(rng.choice([0.0, rng.uniform(0.5, 6.0)])) for side in (-1, 1)},
        zebra_x=zebra_x, side_street=side_street, x_range=x_range,
        paint_color=np.array([235.0, 235.0, 228.0]) + rng.normal(0, 5, 3))


def random_lighting(rng) -> Lighting:
    overcast = rng.random() < 0.35
    elevation = rng.uniform(np.radians(12), np.radians(60))
    azimuth = rng.uniform(-np.pi, np.pi)
    sun_dir = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    warm = rng.uniform(-0.07, 0.07)
    if overcast:
        grey = rng.uniform(150, 215)
        horizon, zenith = np.full(3, grey) + rng.normal(0, 4, 3), np.full(3, grey * 0.85) + rng.normal(0, 4, 3)
    else:
        horizon = np.array([200.0, 218.0, 238.0]) + rng.normal(0, 8, 3)
        zenith = np.array([70.0, 125.0, 205.0]) + rng.normal(0, 12, 3)
    return Lighting(sun_dir=sun_dir, sun_strength=rng.uniform(0.1, 0.25) if overcast else rng.uniform(0.35, 0.65),
                    ambient=rng.uniform(0.65, 0.85) if overcast else rng.uniform(0.45, 0.65),
                    exposure=rng.uniform(0.8, 1.15), tint=np.array([1 + warm, 1.0, 1 - warm]),
                    sky_horizon=np.clip(horizon, 0, 255), sky_zenith=np.clip(zenith, 0, 255),
                    cloudiness=rng.uniform(0.5, 1.0) if overcast else rng.uniform(0.0, 0.5),
                    noise_sigma=rng.uniform(1.5, 4.0))


def generate_scene(rng: np.random.Generator, frame_count: int, surround: bool = False) -> Scene:
    """A random street scene of `frame_count` frames.

    surround: model the street all around the ego (see the module docstring); False keeps the
    front rig's scenes exactly as they were (same random draws, same objects).
    """
    if frame_count < 1:
        raise ValueError(f'a scene needs at least one frame, got {frame_count}')
    times = substep_times(frame_count)
    duration = times[-1]
    ego_speed = 0.0 if rng.random() < 0.12 else rng.uniform(4.0, 13.0)
    wobble, wobble_rate, wobble_phase = rng.uniform(0.0, 0.012), rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi)
    ego_yaw_rate = wobble * wobble_rate * np.cos(wobble_rate * times + wobble_phase)
    ego_poses, _ = integrate_path(0.0, 0.0, wobble * np.sin(wobble_phase), np.full(len(times), ego_speed),
                                  ego_yaw_rate, frame_count)
    ego_end = float(ego_poses[-1, 0])
    x_range = (-SURROUND_BEHIND_M if surround else -40.0, ego_end + BACKDROP_AHEAD_M + 12.0)
    layout = random_layout(rng, x_range)
    builder = _SceneBuilder(rng, layout, frame_count, times, ego_poses,
                            users_behind_m=SURROUND_USERS_BEHIND_M if surround else 0.0)
    builder.add_static_world(rear_backdrop=surround)
    builder.add_road_users(ego_speed, duration)
    return Scene(layout=layout, lighting=random_lighting(rng), objects=builder.objects,
                 ego_poses=ego_poses, frame_count=frame_count)


class _SceneBuilder:
    """Places objects one by one, rejecting road users that would overlap anything placed."""

    def __init__(self, rng, layout: RoadLayout, frame_count: int, times: np.ndarray, ego_poses: np.ndarray,
                 users_behind_m: float = 0.0):
        self.rng, self.layout, self.frame_count, self.times = rng, layout, frame_count, times
        self.ego_poses = ego_poses
        # road users start this much further back (metres; 0 for the front rig: subtracting 0.0
        # leaves every position, and so the front rig's scenes, bit for bit unchanged)
        self.users_behind_m = float(users_behind_m)
        self.objects: list[SceneObject] = []
        ego_centre = ego_poses[:, :2] + EGO_CENTRE_X_M * np.column_stack([np.cos(ego_poses[:, 2]),
                                                                           np.sin(ego_poses[:, 2])])
        # footprints (x, y, length, width, yaw) per frame of everything road users must avoid
        self._occupied = np.zeros((64, frame_count, 5))
        self._occupied_count = 0
        self._occupy(np.column_stack([ego_centre, np.broadcast_to(EGO_SIZE[:2], (frame_count, 2)), ego_poses[:, 2]]))
        self._next_track_id = 1

    def _occupy(self, footprints: np.ndarray) -> None:
        if self._occupied_count == len(self._occupied):
            self._occupied = np.concatenate([self._occupied, np.zeros_like(self._occupied)])
        self._occupied[self._occupied_count] = footprints
        self._occupied_count += 1

    def _collides(self, footprints: np.ndarray, margin_m: float) -> bool:
        """Whether (T, 5) footprints overlap anything occupied in any frame."""
        others = self._occupied[:self._occupied_count]                       # (K, T, 5)
        reach = 0.5 * np.hypot(footprints[:, 2], footprints[:, 3])            # bounding circles first
        other_reach = 0.5 * np.hypot(others[..., 2], others[..., 3])
        gap = np.hypot(others[..., 0] - footprints[:, 0], others[..., 1] - footprints[:, 1])
        close_k, close_t = np.nonzero(gap < reach + other_reach + margin_m)
        if not len(close_k):
            return False
        return bool(rectangles_overlap(footprints[close_t], others[close_k, close_t], margin_m).any())

    # -- helpers ----------------------------------------------------------------------------
    def _static(self, shape: Shape, x: float, y: float, yaw: float, layer: int = LAYER_OBJECTS,
                solid: bool = True) -> None:
        obj = SceneObject(shape, layer, np.array([[x, y, yaw]]), np.zeros(1))
        self.objects.append(obj)
        if solid:
            self._occupy(obj.footprints(self.frame_count))

    def _road_user(self, make_shape, box_class: str, poses: np.ndarray, distance: np.ndarray,
                   stride_m: float = 0.0, margin_m: float = 0.3) -> bool:
        """Add a moving object if it never overlaps anything placed; returns whether it was added."""
        track_id = self._next_track_id
        shape = make_shape(track_id)
        footprints = np.column_stack([poses[:, :2], np.broadcast_to(shape.size[:2], (len(poses), 2)), poses[:, 2]])
        if self._collides(footprints, margin_m):
            return False
        phases = 2 * np.pi * distance / stride_m + self.rng.uniform(0, 2 * np.pi) if stride_m else np.zeros(len(poses))
        self.objects.append(SceneObject(shape, LAYER_OBJECTS, poses, phases, box_class, track_id))
        self._occupy(footprints)
        self._next_track_id += 1
        return True

    def _extra_behind(self, most: int) -> int:
        """Surround: 0..most extra road users for the street behind (the same density over a longer
        street); the front rig draws nothing here, so its random stream is unchanged."""
        return int(self.rng.integers(0, most + 1)) if self.users_behind_m > 0 else 0

    def _wobble(self, amplitude_rad: float) -> tuple[np.ndarray, float]:
        """Yaw rate (S,) of a heading that sways by +-amplitude around its mean (bounded sideways
        drift, unlike a constant yaw rate), and the heading offset at t = 0."""
        rate, phase = self.rng.uniform(0.2, 0.7), self.rng.uniform(0, 2 * np.pi)
        return amplitude_rad * rate * np.cos(rate * self.times + phase), amplitude_rad * np.sin(phase)

    def _straight(self, x0, y0, yaw0, speed, wobble_rad=0.0):
        """Constant speed along yaw0, swaying by wobble_rad."""
        yaw_rate, offset = self._wobble(wobble_rad)
        return integrate_path(x0, y0, yaw0 + offset, np.full(len(self.times), speed), yaw_rate, self.frame_count)

    def _free_x(self, x, margin_m):
        """True where x is clear of the zebra crossing and the side street mouth."""
        layout = self.layout
        clear = ~layout.in_side_street(x, margin_m)
        if layout.zebra_x is not None:
            clear &= ~((x > layout.zebra_x - margin_m) & (x < layout.zebra_x + 4.0 + margin_m))
        return clear

    # -- static world ---------------------------------------------------------------------------
    def add_static_world(self, rear_backdrop: bool = False) -> None:
        """Backdrop ahead (and behind, for the surround rig), kerbs, buildings, street furniture."""
        rng, layout = self.rng, self.layout
        x_min, x_max = layout.x_range
        backdrop_x = x_max - 6.0
        self._static(shapes.backdrop_shape(rng, 500.0), backdrop_x, 0.0, 0.0, LAYER_BUILDINGS, solid=False)
        if rear_backdrop:
            # the rear camera's view ends like the front one; the street's buildings begin 10 m past it
            self._static(shapes.backdrop_shape(rng, 500.0), x_min + 6.0, 0.0, np.pi, LAYER_BUILDINGS, solid=False)
            x_min += 16.0
        curb_color = np.array([175.0, 172.0, 165.0]) + rng.normal(0, 8, 3)
        for side in (-1, 1):
            self._curbs(side, curb_color)
            self._buildings(side, x_min, backdrop_x - 10.0)
            self._street_furniture(side, x_min, min(x_max - 40.0, self.ego_poses[-1, 0] + 130.0))

    def _curbs(self, side: int, color) -> None:
        layout = self.layout
        y = layout.road_edge(side) + side * 0.1
        x_min, x_max = layout.x_range
        segment = 10.0
        for x in np.arange(x_min, x_max - 10.0, segment):
            centre = x + segment / 2
            if layout.in_side_street(centre, segment / 2):
                continue
            self._static(shapes.curb_shape(segment - 0.02, color), centre, y, 0.0, LAYER_GROUND, solid=False)

    def _buildings(self, side: int, x_min: float, x_max: float) -> None:
        rng, layout = self.rng, self.layout
        front = layout.building_line(side)
        x = x_min
        while x < x_max:
            length = rng.uniform(8.0, 32.0)
            centre = x + length / 2
            if layout.in_side_street(centre, length / 2 + 2.0):
                x += length
                continue
            if rng.random() < 0.25:        # a gap with trees or a hedge instead
                self._gap_vegetation(side, x, length, front)
            else:
                depth, height = rng.uniform(8.0, 18.0), rng.uniform(5.0, 24.0)
                self._static(shapes.building_shape(rng, length, depth, height), centre,
                             front + side * (depth / 2 + rng.uniform(0.0, 1.5)), 0.0, LAYER_BUILDINGS, solid=False)
            x += length + (rng.uniform(0.5, 8.0) if rng.random() < 0.4 else 0.1)

    def _gap_vegetation(self, side: int, x: float, length: float, front: float) -> None:
        """Hedge and trees between two buildings; drawn in the buildings' layer (they stand among them)."""
        rng = self.rng
        if rng.random() < 0.5:
            hedge = shapes.hedge_shape(rng, length * 0.9)
            self._static(hedge, x + length / 2, front + side * (hedge.size[1] / 2 + 0.3), 0.0, LAYER_BUILDINGS,
                         solid=False)
        for tree_x in np.arange(x + 3.0, x + length, rng.uniform(4.0, 8.0)):
            tree = shapes.tree_shape(rng)
            self._static(tree, tree_x, front + side * (tree.size[1] / 2 + 1.0), 0.0, LAYER_BUILDINGS, solid=False)

    def _street_furniture(self, side: int, x_min: float, x_max: float) -> None:
        """Lamps, signs, trees, bins and parked bicycles along the sidewalk; traffic lights at the zebra."""
        rng, layout = self.rng, self.layout
        inner, outer = layout.sidewalk(side)
        kerb_y = inner + side * 0.45
        lamp_spacing = rng.uniform(22.0, 40.0)
        for x in np.arange(x_min + rng.uniform(0, lamp_spacing), x_max, lamp_spacing):
            if self._free_x(np.array([x]), 3.0)[0]:
                self._static(shapes.street_lamp_shape(rng, road_side=-side), x, kerb_y, 0.0)
        if layout.verge_m[side] < 1.5 and rng.random() < 0.6:     # street trees on the sidewalk
            spacing = rng.uniform(9.0, 18.0)
            for x in np.arange(x_min + rng.uniform(0, spacing), x_max, spacing):
                if self._free_x(np.array([x]), 4.0)[0] and rng.random() < 0.8:
                    tree = shapes.tree_shape(rng)
                    self._static(tree, x + 2.0, inner + side * 0.6, 0.0)
        elif layout.verge_m[side] >= 1.5:
            spacing = rng.uniform(7.0, 15.0)
            for x in np.arange(x_min + rng.uniform(0, spacing), x_max, spacing):
                if self._free_x(np.array([x]), 3.0)[0] and rng.random() < 0.7:
                    self._static(shapes.tree_shape(rng), x, outer + side * layout.verge_m[side] / 2, 0.0, solid=False)
        for _ in range(rng.integers(2, 7)):
            x = rng.uniform(x_min + 40.0, x_max)
            if self._free_x(np.array([x]), 3.0)[0]:
                # signs stand on both sides and face the ego's direction of travel (plate towards -x)
                self._static(shapes.sign_shape(rng, int(rng.integers(3))), x, kerb_y, 0.0)
        for _ in range(rng.integers(0, 5)):
            x = rng.uniform(x_min + 40.0, x_max)
            self._static(shapes.bin_shape(rng), x, outer - side * 0.5, 0.0)
        if layout.zebra_x is not None:
            lit = int(rng.integers(3))
            self._static(shapes.traffic_light_shape(rng, lit), layout.zebra_x - 1.0, kerb_y, 0.0)
        for _ in range(rng.integers(0, 4)):       # parked bicycles (annotated, A2D2 class Bicycle)
            x = rng.uniform(self.ego_poses[0, 0] + 5.0 - self.users_behind_m, x_max)
            poses = np.array([[x, outer - side * 0.6, side * np.pi / 2 + rng.normal(0, 0.3)]])
            self._road_user(lambda tid: shapes.bicycle_shape(rng, tid, with_rider=False), 'Bicycle',
                            np.repeat(poses, self.frame_count, axis=0), np.zeros(self.frame_count))

    # -- road users -------------------------------------------------------------------------------
    def add_road_users(self, ego_speed: float, duration: float) -> None:
        self._parked_cars()
        self._lane_traffic(-1, ego_speed, duration)
        self._side_street_turners()
        self._crossing_people()
        self._lane_traffic(1, ego_speed, duration)
        self._cyclists(duration)
        self._sidewalk_pedestrians()

    def _vehicle_shape(self, allow_truck: bool = True):
        rng = self.rng
        draw = rng.random()
        # trucks are 40 % of the moving traffic: rarer than that, a test split of a few scenes
        # holds too few distinct trucks to measure them (A2D2 itself has few)
        if allow_truck and draw < 0.42:
            return 'Truck', lambda tid: shapes.truck_shape(rng, tid)
        if draw < 0.58:
            return 'VanSUV', lambda tid: shapes.car_shape(rng, tid, van=True)
        return 'Car', lambda tid: shapes.car_shape(rng, tid)

    def _parked_cars(self) -> None:
        rng, layout = self.rng, self.layout
        ego_x = self.ego_poses[0, 0]
        for side in (-1, 1):
            if not layout.parking[side]:
                continue
            y = layout.carriageway_edge(side) + side * 1.1
            x = ego_x - 10.0 - self.users_behind_m + rng.uniform(0, 5)
            while x < self.ego_poses[-1, 0] + 90.0:
                box_class, make = self._vehicle_shape(allow_truck=rng.random() < 0.5)   # some delivery trucks
                if rng.random() < 0.75 and self._free_x(np.array([x]), 4.0)[0]:
                    yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.03)
                    poses = np.repeat([[x, y + rng.normal(0, 0.1), yaw]], self.frame_count, axis=0)
                    self._road_user(make, box_class, poses, np.zeros(self.frame_count), margin_m=0.2)
                x += rng.uniform(5.5, 12.0)

    def _lane_traffic(self, side: int, ego_speed: float, duration: float) -> None:
        """Vehicles in the lanes of one direction (side -1: with the ego, +1: oncoming)."""
        rng, layout = self.rng, self.layout
        lanes = layout.lanes_oncoming if side > 0 else layout.lanes_same
        ego_x0, ego_x1 = self.ego_poses[0, 0], self.ego_poses[-1, 0]
        behind = self.users_behind_m
        for lane in range(lanes):
            y = layout.lane_y(side, lane)
            heading = 0.0 if side < 0 else np.pi
            if side < 0 and lane == layout.ego_lane:
                speed = max(ego_speed + rng.uniform(-1.0, 2.5), 0.0) if ego_speed > 0 else 0.0
                # surround: followers start behind the ego (ones that would hit it are rejected)
                x, x_end = ego_x0 - behind + rng.uniform(8.0, 20.0), ego_x1 + 95.0
            elif side < 0:
                speed = rng.uniform(0.0, 3.0) if ego_speed == 0 and rng.random() < 0.5 else rng.uniform(5.0, 15.0)
                x, x_end = ego_x0 - 25.0 - behind + rng.uniform(0, 10), ego_x1 + 95.0
            else:
                speed = rng.uniform(6.0, 14.0)
                x, x_end = ego_x0 - behind + rng.uniform(0, 10), ego_x1 + 70.0 + speed * duration
            while x < x_end:
                box_class, make = self._vehicle_shape()
                yaw_rate, yaw_offset = self._wobble(0.008)
                neighbours = [lane + d for d in (-1, 1) if 0 <= lane + d < lanes]
                if neighbours and speed > 3.0 and rng.random() < 0.15:
                    target = int(rng.choice(neighbours))
                    # lane_change_yaw_rate shifts to the vehicle's left for shift > 0; heading -x, left is -y
                    shift = (layout.lane_y(side, target) - y) * (1.0 if side < 0 else -1.0)
                    yaw_rate = yaw_rate + lane_change_yaw_rate(self.times, speed, shift,
                                                               rng.uniform(0, max(duration - 1.0, 0.5)),
                                                               rng.uniform(3.0, 5.0))
                poses, distance = integrate_path(x, y + rng.normal(0, 0.15), heading + yaw_offset,
                                                 np.full(len(self.times), speed + rng.normal(0, 0.3) * (speed > 0)),
                                                 yaw_rate, self.frame_count)
                self._road_user(make, box_class, poses, distance, margin_m=1.0)
                gap = rng.uniform(3.0, 12.0) if rng.random() < 0.5 else rng.uniform(15.0, 45.0)
                x += 5.0 + gap

    def _side_street_turners(self) -> None:
        """A vehicle leaving the side street with a right turn into the nearest lane."""
        rng, layout = self.rng, self.layout
        if layout.side_street is None:
            return
        x_street, side, width = layout.side_street
        for _ in range(rng.integers(1, 3)):
            speed, radius = rng.uniform(3.5, 7.0), rng.uniform(6.0, 9.0)
            lanes = layout.lanes_oncoming if side > 0 else layout.lanes_same
            y_lane = layout.lane_y(side, lanes - 1)
            turn_s = rng.uniform(0.0, 4.0)
            yaw_rate = np.where((self.times >= turn_s) & (self.times < turn_s + (np.pi / 2) * radius / speed),
                                -speed / radius, 0.0)
            yaw0 = -side * np.pi / 2
            relative, distance = integrate_path(0.0, 0.0, yaw0, np.full(len(self.times), speed), yaw_rate,
                                                self.frame_count)
            # leave the street on its right-hand half (heading -side * y: right is -side * x)
            before_turn = speed * turn_s
            x0 = x_street - side * width / 4
            y0 = y_lane + side * (radius + before_turn)
            poses = relative + np.array([x0, y0, 0.0])
            box_class, make = self._vehicle_shape(allow_truck=False)
            self._road_user(make, box_class, poses, distance, margin_m=0.8)

    def _crossing_people(self) -> None:
        """Pedestrians and cyclists crossing the road (zebra crossing, or anywhere)."""
        rng, layout = self.rng, self.layout
        ego_x = self.ego_poses[0, 0]
        crossings = []
        if layout.zebra_x is not None:
            crossings += [layout.zebra_x + rng.uniform(0.5, 3.5) for _ in range(rng.integers(1, 5))]
        crossings += [ego_x + rng.uniform(12.0, 60.0) for _ in range(rng.integers(0, 3))]
        road_lo, road_hi = layout.sidewalk(-1)[0], layout.sidewalk(1)[0]
        for x in crossings:
            direction = rng.choice([-1, 1])
            cyclist = rng.random() < 0.2
            speed = rng.uniform(3.0, 5.0) if cyclist else rng.uniform(0.9, 1.7)
            start_y = rng.uniform(road_lo, road_hi) if rng.random() < 0.5 else (road_lo if direction > 0 else road_hi)
            poses, distance = self._straight(x, start_y, direction * np.pi / 2 + rng.normal(0, 0.08), speed, 0.04)
            if cyclist:
                self._road_user(lambda tid: shapes.bicycle_shape(rng, tid, True), 'Cyclist', poses, distance,
                                stride_m=2.2)
            else:
                self._road_user(lambda tid: shapes.pedestrian_shape(rng, tid, walking=True), 'Pedestrian',
                                poses, distance, stride_m=1.4)

    def _cyclists(self, duration: float) -> None:
        rng, layout = self.rng, self.layout
        ego_x0, ego_x1 = self.ego_poses[0, 0], self.ego_poses[-1, 0]
        for _ in range(rng.integers(1, 5) + self._extra_behind(3)):
            side = int(rng.choice([-1, 1]))
            speed = rng.uniform(3.0, 7.5)
            y = layout.carriageway_edge(side) - side * rng.uniform(0.6, 1.0)
            heading = 0.0 if side < 0 else np.pi
            x = rng.uniform(ego_x0 + 5.0 - self.users_behind_m,
                            ego_x1 + 70.0 + (speed * duration if side > 0 else 0.0))
            poses, distance = self._straight(x, y, heading, speed, 0.02)
            self._road_user(lambda tid: shapes.bicycle_shape(rng, tid, True), 'Cyclist', poses, distance,
                            stride_m=2.2)

    def _sidewalk_pedestrians(self) -> None:
        rng, layout = self.rng, self.layout
        ego_x0, ego_x1 = self.ego_poses[0, 0], self.ego_poses[-1, 0]
        for side in (-1, 1):
            inner, outer = sorted(layout.sidewalk(side))
            for _ in range(rng.integers(2, 13) + self._extra_behind(6)):
                x = rng.uniform(ego_x0 + 3.0 - self.users_behind_m, ego_x1 + 70.0)
                y = rng.uniform(inner + 0.4, outer - 0.4)
                walking = rng.random() < 0.75
                if walking:
                    yaw, speed = rng.choice([0.0, np.pi]), rng.uniform(0.8, 1.8)
                else:
                    yaw, speed = rng.uniform(-np.pi, np.pi), 0.0
                poses, distance = self._straight(x, y, yaw, speed, 0.03 if walking else 0.0)
                self._road_user(lambda tid: shapes.pedestrian_shape(rng, tid, walking), 'Pedestrian', poses,
                                distance, stride_m=1.4, margin_m=0.1)
