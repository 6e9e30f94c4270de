"""BEV multi-object tracking: persistent identities and velocities for per-frame detections.

ROS-free (numpy + scipy); the node and offline evaluation (training/evaluation/evaluate_tracking.py) use it.

    tracker = Tracker(TrackerConfig())
    tracks = tracker.update(boxes, classes, scores, stamp_s)   # once per frame, in time order
    tracks.track_ids, tracks.boxes, tracks.velocities           # the confirmed tracks

Frame. The tracker works in the frame its boxes are given in (the node: the point cloud's
frame). Velocities are relative to that frame: on a moving vehicle with no ego motion given, a
parked car ahead "moves" at minus the vehicle's velocity. Passing `ego_motion` (4x4, previous
frame -> current frame, i.e. p_current = T p_previous) to each update moves the tracks into
the new frame; velocities are then over ground, expressed in the current frame.

Per track:
- x, y, vx, vy: a constant-velocity Kalman filter with white-noise acceleration
  (accel_std_mps2) and position measurements (position_std_m). The x and y axes share the model
  and noise, so their 2x2 covariances are equal (a rotation keeps them equal): each track keeps
  one (position variance, covariance, velocity variance) triple for both axes.
- z, length, width, height: exponential smoothing (size_alpha = weight of the new detection).
- yaw: circular exponential smoothing (yaw_alpha) of the wrapped difference, so yaws on either
  side of +-pi average across the wrap. A detection whose heading is more than 90 degrees from
  the track's is taken as the detector's front/back ambiguity and turned by pi first. Optionally
  (heading_from_velocity_mps > 0) a track moving at least that fast has its yaw turned by pi when
  it points against the velocity: only meaningful with over-ground velocities (ego motion given).
Association, per frame: tracks are predicted to the frame's stamp; a detection can only match a
track of its own class whose predicted centre is within that class's gate (BEV centre distance,
metres). 'hungarian': scipy.optimize.linear_sum_assignment, most matches first, then the least
summed distance. 'greedy': detections by descending score, each to its nearest free track.
Lifecycle: a detection matched to no track (and scoring >= birth_score) starts a tentative
track. It is confirmed once matched in birth_hits consecutive frames (a tentative track is
deleted at its first miss), or at once when confirm_score > 0 and its first detection scores at
least that (a confident detector need not wait: in short scenes the wait is most of the misses),
and then gets its id: increasing integers from 1 in order of
confirmation, never reused during the tracker's life (reset() included). A confirmed track
that is not matched coasts (predicted without update, reported with coasting=True and its id)
and is deleted at death_misses consecutive misses. predict_only(stamp_s) is a frame without
detections (a dropped frame).
Time: dt from the stamps (seconds). dt = 0: no prediction (another observation of the same
instant). dt < 0 (the clock jumped back, e.g. a bag restarted) or dt > max_gap_s: every track is
dropped and the frame starts afresh (`resets` counts these).
Output order: by track id. The same inputs give the same outputs (no randomness, stable sorts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mtl_perception_ros.core.boxes import BOX_DIM, wrap_angle
from mtl_perception_ros.core.matching import gated_assignment

__all__ = ['TrackerConfig', 'TrackedObjects', 'Tracker', 'DEFAULT_GATES_BY_NAME', 'gates_for_class_names',
           'ASSOCIATIONS']

ASSOCIATIONS = ('hungarian', 'greedy')
# Centre-distance gates [m] by class name: roughly the distance an object of the class can be
# off its constant-velocity prediction after a frame or two, plus detector noise.
DEFAULT_GATES_BY_NAME = {'car': 4.0, 'truck': 5.0, 'pedestrian': 1.5, 'cyclist': 2.5}
# The project's detection classes (config/a2d2/box_classes.yaml), in class id order.
_DEFAULT_CLASS_NAMES = ('car', 'truck', 'pedestrian', 'cyclist')


def gates_for_class_names(class_names, gates_by_name: dict | None = None) -> dict[int, float]:
    """Class id -> gate [m] for a label set's `class_names`, from gates given by name
    (default DEFAULT_GATES_BY_NAME); names without a gate are left out (TrackerConfig.default_gate_m)."""
    gates_by_name = DEFAULT_GATES_BY_NAME if gates_by_name is None else gates_by_name
    return {i: float(gates_by_name[name]) for i, name in enumerate(class_names) if name in gates_by_name}


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings (module docstring). gates_m: class id -> centre-distance gate [m]; the
    default fits the project's classes (0 car 4 m, 1 truck 5 m, 2 pedestrian 1.5 m, 3 cyclist 2.5 m)."""

    gates_m: dict = field(default_factory=lambda: gates_for_class_names(_DEFAULT_CLASS_NAMES))
    default_gate_m: float = 2.0          # classes not in gates_m
    birth_hits: int = 2                  # M: matched frames until a track is confirmed (reported)
    death_misses: int = 3                # K: consecutive misses that delete a confirmed track
    association: str = 'hungarian'       # or 'greedy'
    max_gap_s: float = 1.0               # a longer time between frames resets the tracker
    birth_score: float = 0.0             # detections below this update tracks but start none
    confirm_score: float = 0.0           # > 0: a new track scoring at least this is confirmed at once
    position_std_m: float = 0.3          # detection centre noise (Kalman measurement noise)
    accel_std_mps2: float = 3.0          # white-noise acceleration (Kalman process noise)
    initial_velocity_std_mps: float = 10.0
    size_alpha: float = 0.3              # weight of a new detection's z, length, width, height
    yaw_alpha: float = 0.5               # weight of a new detection's yaw
    heading_from_velocity_mps: float = 0.0   # > 0: turn yaw to the motion above this speed

    def __post_init__(self):
        problems = []
        if self.association not in ASSOCIATIONS:
            problems.append(f'association must be one of {ASSOCIATIONS}, got {self.association!r}')
        if int(self.birth_hits) < 1 or int(self.death_misses) < 1:
            problems.append(f'birth_hits and death_misses must be >= 1, got {self.birth_hits}, {self.death_misses}')
        gates = dict(self.gates_m)
        if any(not (float(g) > 0 and math.isfinite(float(g))) for g in list(gates.values()) + [self.default_gate_m]):
            problems.append(f'gates must be finite and > 0 m, got gates_m={gates}, '
                            f'default_gate_m={self.default_gate_m}')
        for name in ('max_gap_s', 'position_std_m', 'initial_velocity_std_mps'):
            if not float(getattr(self, name)) > 0:
                problems.append(f'{name} must be > 0, got {getattr(self, name)}')
        if not float(self.accel_std_mps2) >= 0 or not float(self.heading_from_velocity_mps) >= 0:
            problems.append('accel_std_mps2 and heading_from_velocity_mps must be >= 0')
        if not (float(self.confirm_score) >= 0 and math.isfinite(float(self.confirm_score))):
            problems.append(f'confirm_score must be finite and >= 0 (0: off), got {self.confirm_score}')
        for name in ('size_alpha', 'yaw_alpha'):
            if not 0.0 < float(getattr(self, name)) <= 1.0:
                problems.append(f'{name} must be in (0, 1], got {getattr(self, name)}')
        if problems:
            raise ValueError('TrackerConfig: ' + '; '.join(problems))

    def gate_of(self, classes: np.ndarray) -> np.ndarray:
        """(N,) class ids -> (N,) gates [m]."""
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        gates = np.full(len(classes), float(self.default_gate_m))
        for class_id, gate in self.gates_m.items():
            gates[classes == int(class_id)] = float(gate)
        return gates


@dataclass
class TrackedObjects:
    """Confirmed tracks at one frame, ordered by track id.

    boxes (N, 7) float64 x, y, z, length, width, height, yaw (filtered; predicted when coasting);
    classes (N,) int64; scores (N,) float64 = the score of the track's last matched detection;
    track_ids (N,) int64 >= 1; velocities (N, 2) float64 vx, vy [m/s] in the boxes' frame;
    coasting (N,) bool = not matched this frame; detection_index (N,) int64 = the index of the
    detection (in this frame's input) each track was matched to, -1 when coasting.
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray
    velocities: np.ndarray
    coasting: np.ndarray
    detection_index: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)

    def select(self, rows) -> 'TrackedObjects':
        """The tracks at `rows` (a bool mask or indices), order kept."""
        return TrackedObjects(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})

    def detection_track_ids(self, num_detections: int) -> np.ndarray:
        """(num_detections,) int64: the confirmed track id of each input detection, -1 for none."""
        ids = np.full(int(num_detections), -1, dtype=np.int64)
        matched = self.detection_index >= 0
        ids[self.detection_index[matched]] = self.track_ids[matched]
        return ids

    def detection_velocities(self, num_detections: int) -> np.ndarray:
        """(num_detections, 2) float64: the velocity of each input detection's track, NaN for none."""
        velocities = np.full((int(num_detections), 2), np.nan)
        matched = self.detection_index >= 0
        velocities[self.detection_index[matched]] = self.velocities[matched]
        return velocities


# Per-track state arrays, all with the track count as first dimension.
_STATE_KEYS = ('xy', 'velocity', 'covariance', 'z', 'size', 'yaw', 'classes', 'scores', 'hits', 'misses',
               'ids', 'detection_index')


class Tracker:
    """Multi-object tracker in BEV (module docstring). Not thread-safe: one caller at a time."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = TrackerConfig() if config is None else config
        self._next_id = 1
        self.resets = 0          # time jumps (dt < 0 or > max_gap_s) that dropped all tracks
        self.reset()

    def reset(self) -> None:
        """Forget all tracks and the last stamp (ids keep counting up)."""
        self._stamp_s: float | None = None
        self._state = {
            'xy': np.zeros((0, 2)), 'velocity': np.zeros((0, 2)), 'covariance': np.zeros((0, 3)),
            'z': np.zeros(0), 'size': np.zeros((0, 3)), 'yaw': np.zeros(0),
            'classes': np.zeros(0, np.int64), 'scores': np.zeros(0), 'hits': np.zeros(0, np.int64),
            'misses': np.zeros(0, np.int64), 'ids': np.zeros(0, np.int64),
            'detection_index': np.zeros(0, np.int64)}

    @property
    def num_tracks(self) -> int:
        """Tracks held, tentative ones included."""
        return len(self._state['ids'])

    @property
    def num_confirmed(self) -> int:
        return int(np.count_nonzero(self._state['ids'] > 0))

    def predict_only(self, stamp_s: float, ego_motion: np.ndarray | None = None) -> TrackedObjects:
        """A frame without detections (e.g. a dropped frame): tracks coast and count a miss."""
        return self.update(np.zeros((0, BOX_DIM)), np.zeros(0, np.int64), np.zeros(0), stamp_s, ego_motion)

    def update(self, boxes, classes, scores, stamp_s: float, ego_motion: np.ndarray | None = None) -> TrackedObjects:
        """One frame of detections -> the confirmed tracks at `stamp_s`.

        boxes (N, 7) x, y, z, length, width, height, yaw in the tracker's frame; classes (N,) int;
        scores (N,) float; stamp_s: the frame's time [s]; ego_motion: optional (4, 4) previous
        frame -> this frame. Rows with non-finite numbers are ignored.
        """
        boxes, classes, scores, input_index = _checked_detections(boxes, classes, scores)
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise ValueError(f'stamp_s must be a finite time in seconds, got {stamp_s}')
        if ego_motion is not None:
            ego_motion = np.asarray(ego_motion, dtype=np.float64)
            if ego_motion.shape != (4, 4) or not np.isfinite(ego_motion).all():
                raise ValueError(f'ego_motion must be a finite 4x4 transform (previous frame -> this frame), '
                                 f'got shape {ego_motion.shape}')
        if self._stamp_s is not None:
            dt = stamp_s - self._stamp_s
            if dt < 0 or dt > self.config.max_gap_s:
                self.resets += 1
                self.reset()
            elif dt > 0:
                self._predict(dt)
        if ego_motion is not None and self.num_tracks:
            self._move_frame(ego_motion)
        self._stamp_s = stamp_s

        track_index, detection_index = self._associate(boxes, classes, scores)
        self._correct(track_index, boxes[detection_index], scores[detection_index])
        state = self._state
        state['detection_index'][:] = -1
        state['detection_index'][track_index] = input_index[detection_index]
        missed = np.ones(self.num_tracks, dtype=bool)
        missed[track_index] = False
        state['misses'][missed] += 1
        confirmed = state['ids'] > 0
        keep = (state['misses'] == 0) | (confirmed & (state['misses'] < self.config.death_misses))
        self._select(keep)

        unmatched = np.ones(len(boxes), dtype=bool)
        unmatched[detection_index] = False
        born = np.nonzero(unmatched & (scores >= self.config.birth_score))[0]
        self._add_tracks(boxes[born], classes[born], scores[born], input_index[born])

        state = self._state          # _select and _add_tracks replace the arrays
        ready = state['hits'] >= self.config.birth_hits
        if self.config.confirm_score > 0:    # hits == 1 without an id: born in this frame
            ready |= (state['hits'] == 1) & (state['scores'] >= self.config.confirm_score)
        new = np.nonzero((state['ids'] <= 0) & ready)[0]
        state['ids'][new] = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        return self._confirmed()

    # ----------------------------------------------------------------------------- steps
    def _predict(self, dt: float) -> None:
        state = self._state
        state['xy'] += state['velocity'] * dt
        p, pv, v = state['covariance'].T
        q = self.config.accel_std_mps2 ** 2
        state['covariance'] = np.column_stack([
            p + 2 * dt * pv + dt * dt * v + q * dt ** 4 / 4,
            pv + dt * v + q * dt ** 3 / 2,
            v + q * dt * dt])

    def _move_frame(self, transform: np.ndarray) -> None:
        """Express the tracks in the new frame: p' = R p + t, v' = R v, yaw' = yaw + rotation about z."""
        state = self._state
        centres = np.column_stack([state['xy'], state['z']]) @ transform[:3, :3].T + transform[:3, 3]
        state['xy'] = centres[:, :2]
        state['z'] = centres[:, 2]
        state['velocity'] = state['velocity'] @ transform[:2, :2].T
        state['yaw'] = wrap_angle(state['yaw'] + math.atan2(transform[1, 0], transform[0, 0]))

    def _associate(self, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(track indices, detection indices) of the matched pairs, in track order."""
        state = self._state
        track_parts, detection_parts = [], []
        if self.num_tracks and len(boxes):
            for class_id in np.intersect1d(state['classes'], classes):
                tracks = np.nonzero(state['classes'] == class_id)[0]
                detections = np.nonzero(classes == class_id)[0]
                delta = state['xy'][tracks, None, :] - boxes[None, detections, :2]
                distance = np.hypot(delta[..., 0], delta[..., 1])           # (tracks, detections)
                gate = float(self.config.gate_of([class_id])[0])
                within = distance <= gate
                if not within.any():
                    continue
                if self.config.association == 'hungarian':
                    rows, cols = gated_assignment(distance, gate)
                else:
                    rows, cols = _greedy(distance, within, scores[detections])
                track_parts.append(tracks[rows])
                detection_parts.append(detections[cols])
        if not track_parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        track_index = np.concatenate(track_parts)
        detection_index = np.concatenate(detection_parts)
        order = np.argsort(track_index, kind='stable')
        return track_index[order], detection_index[order]

    def _correct(self, tracks: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> None:
        """Kalman update of the matched tracks' x, y, vx, vy; smoothing of size and yaw."""
        if len(tracks) == 0:
            return
        state, config = self._state, self.config
        p, pv, v = state['covariance'][tracks].T
        r = config.position_std_m ** 2
        s = p + r
        innovation = boxes[:, :2] - state['xy'][tracks]
        state['xy'][tracks] += (p / s)[:, None] * innovation
        state['velocity'][tracks] += (pv / s)[:, None] * innovation
        state['covariance'][tracks] = np.column_stack([p * r / s, pv * r / s, v - pv * pv / s])
        state['z'][tracks] += config.size_alpha * (boxes[:, 2] - state['z'][tracks])
        state['size'][tracks] += config.size_alpha * (boxes[:, 3:6] - state['size'][tracks])
        yaw = state['yaw'][tracks]
        turn = wrap_angle(boxes[:, 6] - yaw)
        flipped = np.abs(turn) > np.pi / 2          # front/back ambiguity of the detection
        turn = np.where(flipped, wrap_angle(turn + np.pi), turn)
        yaw = wrap_angle(yaw + config.yaw_alpha * turn)
        if config.heading_from_velocity_mps > 0:
            velocity = state['velocity'][tracks]
            moving = np.hypot(velocity[:, 0], velocity[:, 1]) >= config.heading_from_velocity_mps
            against = np.abs(wrap_angle(yaw - np.arctan2(velocity[:, 1], velocity[:, 0]))) > np.pi / 2
            yaw = np.where(moving & against, wrap_angle(yaw + np.pi), yaw)
        state['yaw'][tracks] = yaw
        state['scores'][tracks] = scores
        state['hits'][tracks] += 1
        state['misses'][tracks] = 0

    def _add_tracks(self, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                    detection_index: np.ndarray) -> None:
        count = len(boxes)
        if count == 0:
            return
        config = self.config
        new = {
            'xy': boxes[:, :2].copy(), 'velocity': np.zeros((count, 2)),
            'covariance': np.tile([config.position_std_m ** 2, 0.0, config.initial_velocity_std_mps ** 2],
                                  (count, 1)),
            'z': boxes[:, 2].copy(), 'size': boxes[:, 3:6].copy(), 'yaw': wrap_angle(boxes[:, 6]),
            'classes': classes.copy(), 'scores': scores.copy(), 'hits': np.ones(count, np.int64),
            'misses': np.zeros(count, np.int64), 'ids': np.zeros(count, np.int64),
            'detection_index': detection_index.astype(np.int64)}
        self._state = {key: np.concatenate([self._state[key], new[key]]) for key in _STATE_KEYS}

    def _select(self, keep: np.ndarray) -> None:
        if not keep.all():
            self._state = {key: value[keep] for key, value in self._state.items()}

    def _confirmed(self) -> TrackedObjects:
        state = self._state
        rows = np.nonzero(state['ids'] > 0)[0]
        rows = rows[np.argsort(state['ids'][rows], kind='stable')]
        boxes = np.column_stack([state['xy'][rows], state['z'][rows], state['size'][rows], state['yaw'][rows]])
        return TrackedObjects(boxes=boxes.reshape(-1, BOX_DIM), classes=state['classes'][rows].copy(),
                              scores=state['scores'][rows].copy(), track_ids=state['ids'][rows].copy(),
                              velocities=state['velocity'][rows].copy(), coasting=state['misses'][rows] > 0,
                              detection_index=state['detection_index'][rows].copy())


def _checked_detections(boxes, classes, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 boxes, int64 classes, float64 scores without non-finite rows, and the
    input index of each row kept."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, BOX_DIM)
    classes = np.asarray(classes).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM or len(classes) != len(boxes) or len(scores) != len(boxes):
        raise ValueError(f'Tracker.update: expected boxes (N, {BOX_DIM}), classes (N,), scores (N,); '
                         f'got {boxes.shape}, {classes.shape}, {scores.shape}')
    if len(classes) and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f'Tracker.update: classes must be integer class ids, got dtype {classes.dtype}')
    classes = classes.astype(np.int64)
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    input_index = np.nonzero(finite)[0]
    if len(input_index) < len(boxes):
        boxes, classes, scores = boxes[finite], classes[finite], scores[finite]
    return boxes, classes, scores, input_index


def _greedy(distance: np.ndarray, within: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detections by descending score, each to its nearest free track within the gate: (rows, cols)."""
    rows, cols = np.nonzero(within)
    order = np.lexsort((distance[rows, cols], -scores[cols]))    # score first, then distance
    track_free = np.ones(distance.shape[0], dtype=bool)
    detection_free = np.ones(distance.shape[1], dtype=bool)
    pairs = []
    for row, col in zip(rows[order].tolist(), cols[order].tolist()):
        if track_free[row] and detection_free[col]:
            track_free[row] = detection_free[col] = False
            pairs.append((row, col))
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]
