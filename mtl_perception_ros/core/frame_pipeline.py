"""The frame path shared by the node and offline bag evaluation: pairing, time policy, inference, tracking.

ROS-free. The caller converts messages; the pipeline gets header stamps (int ns), a receipt
clock (seconds, monotonic: the node passes time.monotonic(), offline evaluation the bag's
receive times) and opaque payloads, and later the payloads' numpy contents:

    pipeline = FramePipeline(inference, {'image': calibration}, PipelineConfig(), tracker)
    frames = pipeline.add_points(stamp_ns, cloud_msg, receipt_s)           # cheap: pairing only
    frames += pipeline.add_image('image', stamp_ns, image_msg, receipt_s)
    for frame in frames:                                                   # e.g. in a worker thread
        result = pipeline.process(frame, points, {'image': rgb})           # FrameResult or None

Two halves, thread-safe each: pairing (`add_points`, `add_image`, `clock_jumped`, `update`)
runs where messages arrive and only decides; processing (`process`) runs the model and the
tracker, one frame at a time. Payloads stay whatever the caller gave (the node: ROS messages)
until the caller converts them for `process`: most messages never reach the model (images at
30 Hz against clouds at 10 Hz, pairs dropped while the worker is busy), and a conversion in
the executor thread would delay every later callback.

Pairing. Clouds and images go through an ApproximateTimeSync (core/approx_time_sync.py; one
stream 'points' plus one per camera). A camera is silent when no image of it was accepted for
camera_timeout_s both by header stamps and by the receipt clock (before its first image: since
the first cloud): then clouds skip the synchronizer and run LiDAR-only (its pairs still waiting
leave with the images they have: no later image will prove a nearer one). Both measures, because
stamps alone would call a jump of the stamps a dropout and the clock alone a slowly replayed bag.
The stamps are that stream's own accepted ones, never an outlier's.

Time policy, per stream, on each header stamp (counters in `counts()`):
- negative stamp (builtin_interfaces/Time.sec is int32: a stamp after 2038 wraps to 1901):
  dropped, `skipped.bad_stamp.<stream>`.
- far ahead: more than future_stamp_tolerance_s after the stream's newest accepted stamp: the
  message is held back. It starts a new time base (`time.new_time_base.<stream>`; it and the
  stream's held messages go on, in arrival order) when another stream is already within
  future_stamp_tolerance_s of it, or holds a message within that of it (both moved: a new
  recording), or when `new_time_base_messages` (3) consecutive messages of the stream are held
  and agree (each within future_stamp_tolerance_s of the one before). Otherwise the stream's next
  ordinary message drops the held ones as outliers (`skipped.future_stamp.<stream>`): a lone
  stamp far ahead touches neither the synchronizer nor the camera timeout. A new time base needs
  no synchronizer reset (stamps moving forward block nothing; older pending messages leave as
  unmatched); tracking restarts when no stream was on the new time base yet.
- going back by more than time_jump_threshold_s, or `new_time_base_messages` consecutive
  messages older than the stream's newest (a loop of a bag shorter than the threshold): reset
  (`time.jump_back.<stream>`), this message is the first of the new time base. A smaller single
  step back is left to the synchronizer (dropped as out_of_order_late).
- `clock_jumped()` (the node: its ROS clock went back, /clock under use_sim_time): reset
  (`time.clock_jump`).
A reset (`time.resets`) first pairs each waiting cloud with the images it has within slop (the
last frame before the jump would otherwise wait for images that never come; not at a clock jump,
where the node forgets its transforms), then empties the synchronizer, forgets every stream's stamps (the next
message of each stream starts its new time base, so the other streams' jump is no second
reset) and the camera timeout's history, and restarts tracking (new track ids) at the next
processed frame; frames paired before the reset and processed after it are dropped
(`dropped_after_reset`). Processing resumes with the next pair.

Extrinsics. Each frame looks up the transform cloud frame -> image frame (the messages'
header.frame_id, given to `process`) at the cloud's stamp through `transforms` (core.transform_buffer
semantics: the node's TF, offline evaluation's bag /tf_static); where that fails the camera's
`lidar_to_camera` calibration is the fallback, and without either the camera is left out of the
frame (`skipped.no_extrinsics.<camera>`, the TF error in the message). Which source each camera
uses is counted (`extrinsics.tf.<camera>`, `extrinsics.parameter.<camera>`) and, with
`transforms`, a change of it is logged once (info), with the reason TF could not give it.

Known limit: a camera whose clock stays offset from the LiDAR's by more than slop_s never pairs
(counted as sync.dropped.unmatched); camera_time_offset_s corrects a constant offset.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from mtl_perception_ros.core.approx_time_sync import DROP_REASONS, ApproximateTimeSync
from mtl_perception_ros.core.camera import project_points
from mtl_perception_ros.core.camera_calibration import CalibrationError, CameraCalibration
from mtl_perception_ros.core.point_limits import DEFAULT_MAX_POINTS, POINT_LIMIT_MESSAGES, limit_points
from mtl_perception_ros.core.transform_buffer import TransformUnavailable

POINTS_STREAM = 'points'
# the inference settings configure_decoding may change
DECODING_SETTINGS = ('score_threshold', 'max_detections', 'nms_radius_m')
_SYNC_FIELDS = ('slop_s', 'queue_size', 'camera_time_offsets_s', 'points_min_interval_s')


@dataclass(frozen=True)
class PipelineConfig:
    """Pairing and time-policy settings (module docstring); seconds unless named otherwise."""

    cameras: tuple = ('image',)            # camera stream names (the node: the `cameras` parameter)
    slop_s: float = 0.05                   # largest stamp difference of a cloud and an image in a pair
    queue_size: int = 10                   # messages kept per stream while waiting for a partner
    camera_time_offsets_s: tuple = ()      # per camera, added to its image stamps before pairing (() = zeros)
    points_min_interval_s: float = 0.05    # promised smallest gap between clouds (0 = wait for the next)
    camera_timeout_s: float = 0.5          # no image for this long (stamps and clock) -> camera left out
    time_jump_threshold_s: float = 1.0     # a stamp going back by more -> reset
    future_stamp_tolerance_s: float = 5.0  # a stamp further ahead of its stream -> outlier
    new_time_base_messages: int = 3        # consecutive agreeing messages that make a jump real
    max_points: int = DEFAULT_MAX_POINTS   # points used per cloud (core/point_limits.py; 0 = no cap)

    def __post_init__(self):
        cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        object.__setattr__(self, 'cameras', tuple(str(c) for c in cameras))
        offsets = tuple(self.camera_time_offsets_s) or (0.0,) * len(self.cameras)
        object.__setattr__(self, 'camera_time_offsets_s', offsets)
        problems = []
        if not self.cameras:
            problems.append('cameras: at least one camera name is needed')
        if POINTS_STREAM in self.cameras or len(set(self.cameras)) != len(self.cameras) or '' in self.cameras:
            problems.append(f"cameras must be distinct non-empty names other than '{POINTS_STREAM}', "
                            f"got {list(self.cameras)}")
        for name, low, inclusive in (('slop_s', 0.0, True), ('points_min_interval_s', 0.0, True),
                                     ('camera_timeout_s', 0.0, False), ('time_jump_threshold_s', 0.0, False),
                                     ('future_stamp_tolerance_s', 0.0, False)):
            value = getattr(self, name)
            if not _real(value) or not math.isfinite(value) or value < low or (value == low and not inclusive):
                problems.append(f"{name} must be a finite number {'>=' if inclusive else '>'} {low:g}, got {value!r}")
        if len(offsets) != len(self.cameras) or not all(_real(v) and math.isfinite(v) for v in offsets):
            problems.append(f'camera_time_offsets_s must be one finite number per camera {list(self.cameras)}, '
                            f'got {list(offsets)}')
        for name, low in (('queue_size', 1), ('new_time_base_messages', 1), ('max_points', 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                problems.append(f'{name} must be an integer >= {low}, got {value!r}')
        if problems:
            raise ValueError('; '.join(problems))

    @property
    def streams(self) -> tuple:
        return (POINTS_STREAM,) + self.cameras

    def time_offset_s(self, camera: str) -> float:
        return self.camera_time_offsets_s[self.cameras.index(camera)]


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class PairedFrame:
    """A cloud ready to process, with the images paired with it: one per camera that matched within
    slop (a subset of the cameras when some were silent or had no image near the cloud), or none
    (LiDAR-only: every camera silent). Payloads are as given to add_points / add_image."""

    points_stamp_ns: int
    points: Any
    image_stamps_ns: dict           # camera -> header stamp ns
    images: dict                    # camera -> payload
    receipt_s: float                # receipt of the later of its messages
    epoch: int                      # resets before it was paired

    @property
    def lidar_only(self) -> bool:
        return not self.images


@dataclass
class FrameResult:
    """One processed frame. boxes (N, 7), classes (N,), scores (N,) as PerceptionInference gives them;
    semantic_maps: camera -> core.semantic_map.SemanticMap at the received image's size (cameras
    fused, when class maps were asked for), class_maps: those as (H, W) uint8; images: camera -> the
    RGB image as received, `undistorted_image(camera)` the one its class map belongs to;
    calibrations: camera -> the CameraCalibration used; image_stamps_ns: the cameras whose image was
    used -> its stamp; lidar_only: no camera was used; tracks (core.tracking.TrackedObjects),
    track_ids / velocities per detection (None without a tracker); timings_ms: per stage; counts:
    the pipeline's counters after this frame."""

    points_stamp_ns: int
    image_stamps_ns: dict
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    semantic_maps: dict
    images: dict
    calibrations: dict
    lidar_only: bool
    tracks: Any = None
    track_ids: np.ndarray | None = None
    velocities: np.ndarray | None = None
    timings_ms: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    @property
    def class_maps(self) -> dict:
        return {camera: semantic.labels() for camera, semantic in self.semantic_maps.items()}

    def undistorted_image(self, camera: str) -> np.ndarray:
        """The camera's received image undistorted at its size (itself when it has no distortion):
        what its class map is aligned with, e.g. for an overlay. Made only when asked for."""
        return self.calibrations[camera].prepare_image(self.images[camera])[0]


@dataclass(frozen=True)
class _Message:
    stamp_ns: int
    payload: Any
    receipt_s: float
    arrival: int                   # arrival order over all streams


@dataclass
class _OpenCloud:
    """A cloud given to the cameras' synchronizers, until each has paired or dropped it."""

    message: _Message
    waiting: set                                 # cameras that may still pair it
    images: dict = field(default_factory=dict)   # camera -> paired image _Message


@dataclass
class _StreamTime:
    """A stream's recent stamps since the last reset."""

    newest_ns: int | None = None                 # newest accepted stamp
    ahead: list = field(default_factory=list)    # held consecutive far-ahead _Messages (a new time base?)
    behind: int = 0                              # consecutive stamps older than newest_ns


# notify(level, key, message): level 'warn' or 'info'; key names the event (a counter name, or
# 'lidar_only' / 'camera_back'); called outside the pipeline's locks.
Notify = Callable[[str, str, str], None]
# transforms(target_frame, source_frame, stamp_ns) -> 4x4 target_from_source; raises
# core.transform_buffer.TransformUnavailable (e.g. TransformBuffer.lookup, ros.tf_lookup.TfLookup.lookup).
Transforms = Callable[[str, str, int], np.ndarray]


class FramePipeline:
    """Pairing + time policy + image preparation + inference + tracking (module docstring).

    inference: core.inference.PerceptionInference (or anything with its `run_views`);
    calibrations: camera name -> core.camera_calibration.CameraCalibration, as far as known (a camera
    missing: nothing known yet; `apply_camera_info` and `transforms` complete them); tracker:
    core.tracking.Tracker or None; notify: see Notify (None: silent); transforms: see Transforms (None:
    the calibrations' lidar_to_camera only).
    """

    def __init__(self, inference, calibrations: Mapping[str, CameraCalibration], config: PipelineConfig | None = None,
                 tracker=None, notify: Notify | None = None, transforms: Transforms | None = None):
        self.config = PipelineConfig() if config is None else config
        unknown = [c for c in calibrations if c not in self.config.cameras]
        if unknown:
            raise ValueError(f'calibrations of cameras {unknown} that are not in cameras {list(self.config.cameras)}')
        self.inference = inference
        self.tracker = tracker
        self._calibrations = {c: calibrations.get(c) or CameraCalibration() for c in self.config.cameras}
        self._notify = notify
        self.transforms = transforms
        self._extrinsics_source: dict = {}    # camera -> 'tf' | 'parameter' | None, of its latest frame
        self._pairing = threading.Lock()       # synchronizer, stream times, camera timeout, config
        self._processing = threading.Lock()    # tracker; one frame at a time
        self._counts_lock = threading.Lock()
        self._counts = Counter()
        self._sync_base: dict = {}             # camera -> counters of its synchronizers replaced by update()
        self._syncs = self._make_syncs(self.config)
        self._open: list[_OpenCloud] = []     # clouds the synchronizers still hold, in arrival order
        self._flushed: list[PairedFrame] = []  # frames a reset completed, handed out by the next _add
        self._epoch = 0
        self._tracker_epoch = 0
        self._streams = {name: _StreamTime() for name in self.config.streams}
        self._first_points = None              # (stamp ns, receipt s) of the first cloud since the reset
        self._last_image = {}                  # camera -> receipt s of its newest accepted image
        self._silent: set = set()              # cameras past camera_timeout_s: left out of pairing
        self._arrivals = 0

    # ----------------------------------------------------------------------------- configuration
    def update(self, **changes) -> PipelineConfig:
        """Change settings at run time (thread-safe); ValueError names a bad value and changes nothing.
        A change of the synchronizer's settings starts a new one (pending messages count as 'reset')."""
        if 'cameras' in changes and tuple(changes['cameras']) != self.config.cameras:
            raise ValueError('cameras cannot change at run time')
        with self._pairing:
            config = dataclasses.replace(self.config, **changes)
            if any(getattr(config, name) != getattr(self.config, name) for name in _SYNC_FIELDS):
                syncs = self._make_syncs(config)
                for camera, sync in self._syncs.items():
                    sync.reset()
                    self._sync_base[camera] = _add_sync_stats(self._sync_base.get(camera), sync.stats())
                self._syncs, self._open = syncs, []
            self.config = config
            return config

    def set_calibration(self, camera: str, calibration: CameraCalibration) -> None:
        if camera not in self.config.cameras:
            raise ValueError(f'unknown camera {camera!r}; cameras: {list(self.config.cameras)}')
        with self._pairing:
            self._calibrations[camera] = calibration

    def calibration(self, camera: str) -> CameraCalibration:
        with self._pairing:
            return self._calibrations[camera]

    def apply_camera_info(self, camera: str, camera_matrix, distortion, distortion_model: str,
                          image_size_wh) -> bool:
        """A CameraInfo of `camera` (K, D, model, size): its intrinsics from the next frame on (remap
        tables kept when nothing changed). A value that cannot be a calibration is counted
        (`skipped.bad_camera_info`) and the previous calibration stays; returns whether it was taken."""
        try:
            calibration = self.calibration(camera).with_intrinsics(camera_matrix, distortion, distortion_model,
                                                                   image_size_wh)
        except CalibrationError as error:
            self.skip('bad_camera_info', f'{camera}: {error}')
            return False
        self.set_calibration(camera, calibration)
        return True

    def configure_decoding(self, **changes) -> None:
        """Change the inference's score_threshold / max_detections / nms_radius_m (None = off) between
        two frames (thread-safe: never in the middle of one)."""
        unknown = set(changes) - set(DECODING_SETTINGS)
        if unknown:
            raise ValueError(f'not decoding settings: {sorted(unknown)}')
        with self._processing:
            for name, value in changes.items():
                setattr(self.inference, name, value)

    def configure_tracking(self, **changes) -> None:
        """Change TrackerConfig fields of the tracker (e.g. gates_m, default_gate_m) between two frames;
        tracks and their ids are kept. ValueError (from TrackerConfig) changes nothing."""
        if self.tracker is None:
            return
        with self._processing:
            self.tracker.config = dataclasses.replace(self.tracker.config, **changes)

    @staticmethod
    def _make_syncs(config: PipelineConfig) -> dict:
        """One cloud/image synchronizer per camera: each cloud gets the nearest image of every camera
        within slop, and a camera without one near the cloud (or silent) costs only its own image."""
        return {camera: ApproximateTimeSync(
            num_streams=2, slop_s=config.slop_s, queue_size=config.queue_size,
            offsets_s=[0.0, config.time_offset_s(camera)], min_interval_s=[config.points_min_interval_s, 0.0],
            stream_names=[POINTS_STREAM, camera]) for camera in config.cameras}

    # ----------------------------------------------------------------------------- pairing
    def add_points(self, stamp_ns: int, payload, receipt_s: float) -> list[PairedFrame]:
        """A cloud arrived: the frames now ready (a pair, or this cloud LiDAR-only, or none)."""
        return self._add(POINTS_STREAM, stamp_ns, payload, receipt_s)

    def add_image(self, camera: str, stamp_ns: int, payload, receipt_s: float) -> list[PairedFrame]:
        """An image of `camera` arrived: the pairs now ready."""
        if camera not in self.config.cameras:
            raise ValueError(f'unknown camera {camera!r}; cameras: {list(self.config.cameras)}')
        return self._add(camera, stamp_ns, payload, receipt_s)

    def clock_jumped(self, message: str = 'the clock went back') -> None:
        """The caller's clock jumped (e.g. /clock went back under use_sim_time): reset."""
        events = []
        with self._pairing:     # the node forgets its transforms at a clock jump: no frame of before it is kept
            self._reset('time.clock_jump', message, events, flush=False)
        self._emit(events)

    @property
    def lidar_only_active(self) -> bool:
        """Every camera is silent: clouds run LiDAR-only."""
        with self._pairing:
            return len(self._silent) == len(self.config.cameras)

    @property
    def silent_cameras(self) -> list:
        """The cameras left out of pairing now (no image for camera_timeout_s), in camera order."""
        with self._pairing:
            return [c for c in self.config.cameras if c in self._silent]

    def _add(self, stream: str, stamp_ns: int, payload, receipt_s: float) -> list[PairedFrame]:
        events = []
        with self._pairing:
            self._arrivals += 1
            message = _Message(int(stamp_ns), payload, float(receipt_s), self._arrivals)
            admitted = self._admit(stream, message, events)
            frames, self._flushed = self._flushed, []       # a reset's last frames go first
            for name, released in admitted:
                frames += self._take(name, released, events)
        self._emit(events)
        return frames

    def _take(self, stream: str, message: '_Message', events: list) -> list[PairedFrame]:
        """An admitted message: the camera timeout, then the cameras' synchronizers (or LiDAR-only)."""
        cameras = self.config.cameras
        if stream == POINTS_STREAM:
            if self._first_points is None:
                self._first_points = (message.stamp_ns, message.receipt_s)
            for camera in cameras:
                if camera not in self._silent and self._camera_silent(camera, message.stamp_ns, message.receipt_s):
                    self._silence(camera, events)
            active = [c for c in cameras if c not in self._silent]
            if not active:
                return self._settle() + [PairedFrame(message.stamp_ns, message.payload, {}, {}, message.receipt_s,
                                                     self._epoch)]
            cloud = _OpenCloud(message, set(active))
            self._open.append(cloud)
            for camera in active:
                self._pair(camera, 0, message)
            return self._settle()
        self._last_image[stream] = message.receipt_s
        if stream in self._silent:
            self._silent.discard(stream)
            if len(self._silent) == len(cameras) - 1:
                events.append(('info', 'camera_back', f'images of {stream} are back: fusing camera and LiDAR again'))
            else:
                events.append(('info', f'camera_back.{stream}', f'images of {stream} are back: fusing it again'))
        self._pair(stream, 1, message)
        return self._settle()

    def _silence(self, camera: str, events: list) -> None:
        """`camera` sent nothing for camera_timeout_s: leave it out of pairing until its next image."""
        self._silent.add(camera)
        self.count(f'camera_silent.{camera}')
        # its pending pairs are final (no later image to prove a nearer one): they leave, not dropped
        self._attach(camera, self._syncs[camera].flush())
        for cloud in self._open:
            cloud.waiting.discard(camera)
        timeout = self.config.camera_timeout_s
        others = [c for c in self.config.cameras if c not in self._silent]
        if not others:
            events.append(('warn', 'lidar_only', f'no image from {sorted(self._silent)} for {timeout} s: '
                           'running LiDAR-only'))
        else:
            events.append(('warn', f'camera_silent.{camera}', f'no image from {camera} for {timeout} s: fusing '
                           f'the other cameras {others} without it'))

    def _pair(self, camera: str, index: int, message: '_Message') -> None:
        """Offer a cloud (index 0) or an image of `camera` (index 1) to the camera's synchronizer."""
        sync = self._syncs[camera]
        self._attach(camera, sync.add(index, message.stamp_ns, message))
        for cloud in self._open:     # clouds this synchronizer dropped will not pair with this camera
            if camera in cloud.waiting and not sync.is_pending(0, cloud.message):
                cloud.waiting.discard(camera)

    def _attach(self, camera: str, pairs) -> None:
        """The (cloud, image) pairs a synchronizer of `camera` emitted: each image joins its open cloud."""
        for cloud_message, image_message in pairs:
            for cloud in self._open:
                if cloud.message is cloud_message:
                    cloud.images[camera] = image_message
                    cloud.waiting.discard(camera)
                    break

    def _settle(self) -> list[PairedFrame]:
        """The open clouds every camera has decided on, in arrival order: fused with the images they
        got, or dropped when none (each synchronizer counted why)."""
        frames = []
        while self._open and not self._open[0].waiting:
            cloud = self._open.pop(0)
            if cloud.images:
                images = sorted(cloud.images.items(), key=lambda item: self.config.cameras.index(item[0]))
                frames.append(PairedFrame(
                    cloud.message.stamp_ns, cloud.message.payload, {c: m.stamp_ns for c, m in images},
                    {c: m.payload for c, m in images},
                    max([cloud.message.receipt_s] + [m.receipt_s for _, m in images]), self._epoch))
        if frames:
            self.count('synced_pairs', len(frames))
        return frames

    def _camera_silent(self, camera: str, stamp_ns: int, receipt_s: float) -> bool:
        """No accepted image of `camera` for camera_timeout_s by stamps and by the clock."""
        if camera in self._last_image:
            last_stamp_ns, last_receipt = self._streams[camera].newest_ns, self._last_image[camera]
        else:
            last_stamp_ns, last_receipt = self._first_points
        timeout = self.config.camera_timeout_s
        return (stamp_ns - last_stamp_ns) * 1e-9 > timeout and receipt_s - last_receipt > timeout

    def _admit(self, stream: str, message: '_Message', events: list) -> list:
        """The time policy (module docstring) for one message: the (stream, message)s to pass on, in
        arrival order (none: dropped or held; several: held messages of a new time base)."""
        stamp_ns = message.stamp_ns
        if stamp_ns < 0:
            self._skip_locked(f'bad_stamp.{stream}', f'{stream} message stamped {stamp_ns} ns (before 1970: a '
                              'stamp past 2038 wrapped in the int32 seconds of builtin_interfaces/Time): dropped',
                              events)
            return []
        config = self.config
        tolerance_ns = config.future_stamp_tolerance_s * 1e9
        state = self._streams[stream]
        if state.newest_ns is None:
            state.newest_ns = stamp_ns
            return [(stream, message)]
        step_s = (stamp_ns - state.newest_ns) * 1e-9
        if step_s > config.future_stamp_tolerance_s:
            if state.ahead and abs(stamp_ns - state.ahead[-1].stamp_ns) > tolerance_ns:
                self._drop_held(stream, events)
            state.ahead.append(message)
            others = [name for name in self._streams if name != stream]
            if any(self._streams[name].newest_ns is not None
                   and abs(stamp_ns - self._streams[name].newest_ns) <= tolerance_ns for name in others):
                return self._move([stream], f'{stream} stamps joined the other streams {step_s:.3f} s ahead',
                                  events, restart=False)
            partners = [name for name in others if self._streams[name].ahead
                        and abs(stamp_ns - self._streams[name].ahead[-1].stamp_ns) <= tolerance_ns]
            if partners:
                return self._move(partners + [stream], f'{", ".join(partners + [stream])} stamps moved together '
                                  f'{step_s:.3f} s ahead', events, restart=True)
            if len(state.ahead) >= config.new_time_base_messages:
                return self._move([stream], f'{len(state.ahead)} consecutive {stream} messages moved '
                                  f'{step_s:.3f} s ahead', events, restart=True)
            return []                      # held: an outlier unless the stream or another one follows
        if state.ahead:
            self._drop_held(stream, events)
        if step_s < -config.time_jump_threshold_s:
            self._reset(f'time.jump_back.{stream}', f'{stream} stamps went back {-step_s:.3f} s', events)
            self._streams[stream].newest_ns = stamp_ns
            return [(stream, message)]
        if step_s < 0:
            state.behind += 1
            if state.behind >= config.new_time_base_messages:
                self._reset(f'time.jump_back.{stream}', f'{state.behind} consecutive {stream} messages went back '
                            f'(by {-step_s:.3f} s)', events)
                self._streams[stream].newest_ns = stamp_ns
            return [(stream, message)]
        state.behind = 0
        state.newest_ns = stamp_ns
        return [(stream, message)]

    def _move(self, streams: list, message: str, events: list, restart: bool) -> list:
        """Streams whose held messages start a new time base: pass them on; `restart` restarts
        tracking (no stream was on that time base yet). The synchronizer needs no reset: stamps
        moving forward do not block it (its older pending messages leave as unmatched)."""
        released = []
        for name in streams:
            state = self._streams[name]
            released += [(name, m) for m in state.ahead]
            state.newest_ns = max(m.stamp_ns for m in state.ahead)
            state.ahead, state.behind = [], 0
            self.count(f'time.new_time_base.{name}')
        if restart:
            self._epoch += 1
        events.append(('warn', 'time.new_time_base', f'{message}: a new time base'
                       + ('; tracking restarts' if restart else '')))
        return sorted(released, key=lambda item: item[1].arrival)

    def _drop_held(self, stream: str, events: list) -> None:
        state = self._streams[stream]
        if state.ahead:
            ahead_s = (state.ahead[-1].stamp_ns - state.newest_ns) * 1e-9
            self._skip_locked(f'future_stamp.{stream}', f'{len(state.ahead)} {stream} message(s) stamped '
                              f'{ahead_s:.3f} s ahead of the stream (more than future_stamp_tolerance_s '
                              f'{self.config.future_stamp_tolerance_s} s), not followed: dropped as outliers', events,
                              n=len(state.ahead))
            state.ahead = []

    def _reset(self, counter: str, message: str, events: list, flush: bool = True) -> None:
        """Empty the synchronizer, forget the streams' stamps (held outliers are dropped) and the camera
        timeout's history; tracking restarts at the next processed frame (epoch). With `flush`, the
        clouds still waiting pair with the images they have first (`_flushed`: the last frame before a
        jump of the stamps would otherwise wait for images that never come)."""
        for name in self._streams:
            self._drop_held(name, events)
        for camera, sync in self._syncs.items():
            if flush:
                self._attach(camera, sync.flush())
            else:
                sync.reset()
        if flush:
            for cloud in self._open:
                cloud.waiting.clear()
            self._flushed += self._settle()
        self._open = []
        self._silent = set()
        self._epoch += 1
        self._streams = {name: _StreamTime() for name in self.config.streams}
        self._first_points = None
        self._last_image = {}
        self.count(counter)
        self.count('time.resets')
        events.append(('warn', counter, f'{message}: synchronizer and tracking restart'))

    # ----------------------------------------------------------------------------- processing
    def process(self, frame: PairedFrame, points: np.ndarray, images: Mapping[str, np.ndarray | None] | None = None,
                want_class_map: bool = True, cloud_frame: str = '',
                image_frames: Mapping[str, str] | None = None) -> FrameResult | None:
        """Run one frame: `points` (N, >=4) float x, y, z, reflectance [0, 1] (the point limits of
        core/point_limits.py apply, with config.max_points; counted as `points.<reason>`), `images`
        camera -> RGB uint8 (H, W, 3) as received, or None where the caller could not convert it (the
        frame runs without that camera). `cloud_frame`, `image_frames` (camera -> frame id): the
        messages' header.frame_id, for the extrinsics from `transforms` (module doc). A camera without
        intrinsics or extrinsics is left out (`skipped.no_intrinsics.<camera>`,
        `skipped.no_extrinsics.<camera>`). None when the frame is skipped (counted)."""
        events = []
        try:
            with self._processing:
                return self._process(frame, points, images or {}, want_class_map, cloud_frame,
                                     image_frames or {}, events)
        finally:
            self._emit(events)

    def _process(self, frame: PairedFrame, points, images, want_class_map: bool, cloud_frame: str,
                 image_frames: Mapping[str, str], events: list):
        start = time.perf_counter()
        if frame.epoch < self._tracker_epoch:
            self._skip_locked('dropped_after_reset', 'a frame paired before a time reset: dropped', events,
                              prefix='', level=None)
            return None
        if frame.epoch > self._tracker_epoch:
            if self.tracker is not None:
                self.tracker.reset()
            self._tracker_epoch = frame.epoch
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 4 or points.dtype.kind != 'f':
            raise ValueError(f'points must be a float (N, >=4) array, got {points.shape} {points.dtype}')
        received = len(points)
        points, limited = limit_points(points, max_points=self.config.max_points)
        for reason, n in limited.items():
            if n:
                self._skip_locked(reason, f'{n} of {received} points of the cloud at {frame.points_stamp_ns} ns: '
                                  f'{POINT_LIMIT_MESSAGES[reason]}', events, prefix='points.', n=n)
        if len(points) == 0:
            self._skip_locked('empty_pointcloud', f'point cloud at {frame.points_stamp_ns} ns has no usable points '
                              f'({received} received)', events)
            return None

        views, used = [], []                     # the cameras' (model input, its K, lidar_to_camera), in camera order
        received = {}                            # camera -> its image as received
        for camera in self.config.cameras:
            rgb = images.get(camera) if camera in frame.images else None
            if rgb is None:
                continue
            calibration = self.calibration(camera)
            if not calibration.has_intrinsics:
                self._skip_locked(f'no_intrinsics.{camera}', f'{camera}: no camera_info yet and no camera_matrix '
                                  'parameter: frame runs without this camera', events)
                continue
            lidar_to_camera = self._extrinsics(camera, calibration, cloud_frame, image_frames.get(camera, ''),
                                               frame.points_stamp_ns, events)
            if lidar_to_camera is None:
                continue
            try:
                image, camera_matrix = calibration.model_input(rgb, self.inference.info.image_hw)
            except CalibrationError as error:
                self._skip_locked('bad_image', f'{camera}: {error}; frame runs without this camera', events)
                continue
            views.append((image, camera_matrix, np.asarray(lidar_to_camera, dtype=np.float64)))
            used.append(camera)
            received[camera] = rgb
        prepared = time.perf_counter()
        result = self.inference.run_views(points, views, want_class_map=want_class_map,
                                          class_map_hw=[received[camera].shape[:2] for camera in used])
        inferred = time.perf_counter()
        for camera, (image, camera_matrix, lidar_to_camera) in zip(used, views):
            if not _projects_into_image(points, camera_matrix, lidar_to_camera, image.shape):
                self._skip_locked('calibration_projects_nothing', f'no LiDAR point projects into the image of '
                                  f'{camera}: check its lidar_to_camera / camera matrix (camera features were '
                                  'unused)', events)
        tracks = track_ids = velocities = None
        if self.tracker is not None:
            tracks = self.tracker.update(result.boxes, result.classes, result.scores, frame.points_stamp_ns * 1e-9)
            track_ids = tracks.detection_track_ids(len(result.boxes))
            velocities = tracks.detection_velocities(len(result.boxes))
        done = time.perf_counter()
        timings = {'prepare': (prepared - start) * 1000, 'inference': (inferred - prepared) * 1000}
        if self.tracker is not None:
            timings['tracking'] = (done - inferred) * 1000
        timings.update({f'model.{stage}': value for stage, value in result.timings_ms.items()})
        timings['total'] = (done - start) * 1000
        self.count('processed')
        if result.lidar_only:
            self.count('processed_lidar_only')
        for camera in used:
            self.count(f'fused.{camera}')
        semantic_maps = {camera: m for camera, m in zip(used, result.semantic_maps) if m is not None}
        return FrameResult(
            frame.points_stamp_ns, {camera: frame.image_stamps_ns[camera] for camera in used},
            result.boxes, result.classes, result.scores, semantic_maps,
            received, {camera: self.calibration(camera) for camera in used}, result.lidar_only,
            tracks, track_ids, velocities, timings, self.counts())

    def _extrinsics(self, camera: str, calibration: CameraCalibration, cloud_frame: str, image_frame: str,
                    stamp_ns: int, events: list):
        """4x4 cloud -> camera of this frame: TF, else the calibration's lidar_to_camera, else None
        (counted skip); counts the source used and logs when it changes (module doc)."""
        transform, reason = None, 'no TF lookup here'
        if self.transforms is not None:
            try:
                transform = np.asarray(self.transforms(image_frame, cloud_frame, stamp_ns), dtype=np.float64)
                reason = ''
            except TransformUnavailable as error:
                reason = f'TF {cloud_frame!r} -> {image_frame!r}: {error}'
        source = 'tf' if transform is not None else 'parameter' if calibration.lidar_to_camera is not None else None
        if transform is None:
            transform = calibration.lidar_to_camera
        if source is None:
            self._skip_locked(f'no_extrinsics.{camera}', f'{camera}: no extrinsics ({reason}) and no '
                              f'{camera}.lidar_to_camera parameter: frame runs without this camera', events)
        else:
            self.count(f'extrinsics.{source}.{camera}')
        if self.transforms is not None and source != self._extrinsics_source.get(camera, 'unset'):
            self._extrinsics_source[camera] = source
            if source == 'tf':
                events.append(('info', f'extrinsics.{camera}', f'{camera}: extrinsics from TF ({cloud_frame} -> '
                                                               f'{image_frame})'))
            elif source == 'parameter':
                events.append(('info', f'extrinsics.{camera}', f'{camera}: extrinsics from the '
                                                               f'{camera}.lidar_to_camera parameter ({reason})'))
        return transform

    # ----------------------------------------------------------------------------- counters
    def count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def skip(self, reason: str, message: str) -> None:
        """Count an input skipped or degraded by the caller (`skipped.<reason>`) and notify a warning."""
        events = []
        self._skip_locked(reason, message, events)
        self._emit(events)

    def _skip_locked(self, reason: str, message: str, events: list, prefix: str = 'skipped.', level='warn',
                     n: int = 1) -> None:
        self.count(prefix + reason, n)
        if level is not None:
            events.append((level, prefix + reason, message))

    def counts(self) -> dict:
        """A copy of the counters: processed, processed_lidar_only, synced_pairs, points.<reason>,
        skipped.<reason>, time.<event>, dropped_after_reset, and whatever the caller counted."""
        with self._counts_lock:
            return dict(self._counts)

    def sync_stats(self) -> dict:
        """The cameras' synchronizers' counters (ApproximateTimeSync.stats(), summed over the ones
        `update` replaced) as one stats dict: streams 'points' and the camera for one camera; for
        several, 'points/<camera>' and '<camera>' per camera (each camera pairs the clouds itself)."""
        with self._pairing:
            per_camera = [(camera, _add_sync_stats(self._sync_base.get(camera), sync.stats()))
                          for camera, sync in self._syncs.items()]
        if len(per_camera) == 1:
            return per_camera[0][1]
        names, received, emitted, pending = [], [], [], []
        dropped = {reason: [] for reason in DROP_REASONS}
        for camera, stats in per_camera:
            names += [f'{POINTS_STREAM}/{camera}', camera]
            received += stats['received']
            emitted += stats['emitted']
            pending += stats['pending']
            for reason in DROP_REASONS:
                dropped[reason] += stats['dropped'][reason]
        return {'stream_names': names, 'received': received, 'emitted_sets': sum(s['emitted_sets'] for _, s in per_camera),
                'emitted': emitted, 'pending': pending, 'dropped': dropped}

    def _emit(self, events: list) -> None:
        if self._notify is not None:
            for level, key, message in events:
                self._notify(level, key, message)


def _projects_into_image(points, camera_matrix, lidar_to_camera, image_shape) -> bool:
    _, _, valid = project_points(points[::8], lidar_to_camera, camera_matrix, image_shape[:2])
    return bool(valid.any())


def _add_sync_stats(base: dict | None, stats: dict) -> dict:
    """Counters of two synchronizers of the same streams added ('pending' is the newer one's)."""
    if base is None:
        return stats
    return {
        'stream_names': stats['stream_names'],
        'received': [a + b for a, b in zip(base['received'], stats['received'])],
        'emitted_sets': base['emitted_sets'] + stats['emitted_sets'],
        'emitted': [a + b for a, b in zip(base['emitted'], stats['emitted'])],
        'pending': stats['pending'],
        'dropped': {reason: [a + b for a, b in zip(base['dropped'][reason], stats['dropped'][reason])]
                    for reason in DROP_REASONS},
    }
