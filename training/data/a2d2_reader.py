"""Read the real A2D2 layout (any of its six cameras) into training Frames.

Layout (see docs/a2d2_format.md): `<root>/cams_lidars.json`, `<root>/class_list.json`
and scene folders `<root>/<scene>/{camera,lidar,label,label3D}/cam_<camera>/` holding
`<stamp>_<kind>_<token>_<ID9>.<ext>` (token: the camera name without `_`, e.g. frontleft). The
stamp prefix differs between kinds, so the files of one camera frame are paired by scene and
9-digit ID. Both labelled sets are read as they are: `camera_lidar_semantic_bboxes` (all kinds)
and `camera_lidar_semantic` (no label3D; some scenes without LiDAR).

Cameras (`cameras`, default front_center only): the first one named is the *reference* camera;
each of its frames is one Frame. Frame IDs are per-camera counters and the cameras are not
synchronised, so the other cameras join a frame by `cam_tstamp`: the frame of that camera
nearest in time, within `group_tolerance_us` (default GROUP_TOLERANCE_US), each used once (the
nearest pair wins). What could not be grouped is counted per camera in `reader.grouping`.

What a Frame gets (training.data.frame.Frame conventions):
- points: every camera's LiDAR file holds the points that camera sees, in that camera's *view*
  frame (x fwd, y left, z up); they are moved to the vehicle frame with the camera's
  `view_to_vehicle` and merged into one cloud, a point seen by several cameras kept once (same
  LiDAR, same timestamp and the same position to 1 mm); reflectance 0..255 -> [0, 1].
- views: per camera the image and class map, undistorted (bilinear / nearest) with the lens
  model (pinhole or fisheye) so `camera_matrix` (A2D2's CamMatrix) projects into them. Colours
  map to training classes through config/a2d2/semantic_classes.yaml; unknown colours -> 255.
- boxes: label3D of every camera that has one (real A2D2: front center only), centre/size/
  axis-angle in that camera's view frame; yaw_view = axis[2] * rot_angle (both axis signs
  occur); then centre and heading are transformed to the vehicle frame. A box seen by two
  cameras is kept once (same class and the same track ID, or without track IDs centres within
  BOX_MERGE_DISTANCE_M). Classes are grouped by config/a2d2/box_classes.yaml; unlisted
  classes are dropped.

Frames with missing or broken parts of the reference camera are skipped or degraded and counted
by reason in `reader.stats` (see SKIP_REASONS / DEGRADE_REASONS); a broken part of another
camera only drops that part (`camera_part_dropped`). Reading never raises for one bad frame.
"""
from __future__ import annotations

import json
import logging
import os
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from mtl_perception_ros.core.boxes import transform_boxes
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import (CAMERA_NAMES, A2D2Camera, a2d2_camera, camera_file_token,
                                            camera_folder, load_calibration)
from training.data.frame import CameraView, Frame
from training.data.label_mapping import (DEFAULT_BOX_CLASSES, DEFAULT_CLASS_LIST, DEFAULT_SEMANTIC_CLASSES,
                                         DROPPED, BoxClassMapping, SemanticMapping)

LOGGER = logging.getLogger(__name__)

DEFAULT_CAMERAS = ('front_center',)
ALL_CAMERAS = 'all'                  # `cameras='all'`: every camera that has a folder in the set
GROUP_TOLERANCE_US = 20_000          # > half the 33 ms period of A2D2's 30 Hz cameras
BOX_MERGE_DISTANCE_M = 1.0
POINT_MERGE_RESOLUTION_M = 1e-3
# kind -> (folder under the scene, file-name kind token, extension)
KINDS = {
    'image': ('camera', 'camera', 'png'),
    'camera_json': ('camera', 'camera', 'json'),
    'lidar': ('lidar', 'lidar', 'npz'),
    'label': ('label', 'label', 'png'),
    'label3d': ('label3D', 'label3D', 'json'),
}
FILE_NAME = re.compile(r'^(?P<stamp>\d+)_(?P<kind>[A-Za-z0-9]+)_(?P<camera>[a-z]+)_(?P<id>\d{9})\.(?P<ext>[a-z0-9]+)$')

SKIP_REASONS = {
    'missing_lidar': 'no LiDAR npz (the model needs points)',
    'missing_image': 'no camera PNG',
    'missing_camera_json': 'no camera JSON (cam_tstamp)',
    'missing_label3d': 'no label3D JSON in a set with 3D boxes',
    'corrupt_lidar': 'LiDAR npz unreadable or without points/reflectance of matching shapes',
    'empty_lidar': 'LiDAR npz without finite points',
    'corrupt_image': 'camera PNG unreadable',
    'corrupt_label': 'label PNG unreadable or not a colour image',
    'corrupt_camera_json': 'camera JSON unreadable or without cam_name / cam_tstamp',
    'wrong_camera': "camera JSON cam_name is not the camera of its folder",
    'corrupt_label3d': 'label3D JSON unreadable or a box without center/size/axis/rot_angle/class',
    'wrong_image_size': 'image or label size differs from cams_lidars.json Resolution',
}
DEGRADE_REASONS = {
    'no_label3d': 'kept without boxes (set has no 3D boxes)',
    'missing_label': 'kept without class map (no label PNG)',
    'rgba_label': 'label PNG had an alpha channel (dropped)',
    'lidar_without_row': 'LiDAR npz without `row` (not needed)',
    'lidar_without_timestamp': 'LiDAR npz without `timestamp` (lidar_timestamp_us = -1)',
    'nonfinite_points': 'non-finite LiDAR points removed',
    'duplicate_file': 'two files of one kind with the same ID (first by name used)',
    'camera_part_dropped': "a part of a camera other than the reference one is broken; that part left out",
    'duplicate_points': 'points seen by two cameras, kept once',
    'duplicate_boxes': 'boxes labelled in two cameras, kept once',
}
MAX_EXAMPLES = 5


class FrameSkipped(Exception):
    """Raised inside the reader for a frame that cannot be used; `reason` is a SKIP_REASONS key."""

    def __init__(self, reason: str, path, detail: str = ''):
        super().__init__(f'{reason}: {path}: {detail}')
        self.reason, self.path, self.detail = reason, path, detail


# Everything that reading a damaged npz / PNG / JSON can raise.
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, IndexError,
               zipfile.BadZipFile, zlib.error, cv2.error)


@dataclass
class ReadStats:
    """Counts of frames read, skipped and degraded, by reason, with a few example paths."""

    frames_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    degraded: Counter = field(default_factory=Counter)
    dropped_boxes: Counter = field(default_factory=Counter)   # A2D2 box class -> count
    examples: dict = field(default_factory=dict)               # reason -> ['path: detail', ...]

    def skip(self, reason: str, path, detail: str = '') -> None:
        self.skipped[reason] += 1
        self._example(reason, path, detail)

    def degrade(self, reason: str, path, detail: str = '') -> None:
        self.degraded[reason] += 1
        self._example(reason, path, detail)

    def _example(self, reason, path, detail):
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f'{path}: {detail}' if detail else str(path))

    @property
    def frames_skipped(self) -> int:
        return sum(self.skipped.values())

    def merge(self, other: 'ReadStats') -> None:
        self.frames_read += other.frames_read
        self.skipped.update(other.skipped)
        self.degraded.update(other.degraded)
        self.dropped_boxes.update(other.dropped_boxes)
        for reason, examples in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(examples[:MAX_EXAMPLES - len(mine)])

    def to_dict(self) -> dict:
        return {'frames_read': self.frames_read, 'frames_skipped': self.frames_skipped,
                'skipped': dict(sorted(self.skipped.items())),
                'degraded': dict(sorted(self.degraded.items())),
                'dropped_boxes': dict(sorted(self.dropped_boxes.items())),
                'examples': {k: list(v) for k, v in sorted(self.examples.items())}}

    @classmethod
    def from_dict(cls, values: dict) -> 'ReadStats':
        return cls(frames_read=int(values.get('frames_read', 0)),
                   skipped=Counter(values.get('skipped', {})),
                   degraded=Counter(values.get('degraded', {})),
                   dropped_boxes=Counter(values.get('dropped_boxes', {})),
                   examples={k: list(v) for k, v in values.get('examples', {}).items()})

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [f'{self.frames_read} frames read, {self.frames_skipped} skipped']
        for reason, count in sorted(self.skipped.items()):
            lines.append(f'  skipped {count:6d} {reason}: {SKIP_REASONS.get(reason, "")}')
        for reason, count in sorted(self.degraded.items()):
            lines.append(f'  degraded {count:5d} {reason}: {DEGRADE_REASONS.get(reason, "")}')
        if self.dropped_boxes:
            lines.append('  boxes dropped by class: ' + ', '.join(
                f'{name} {count}' for name, count in sorted(self.dropped_boxes.items())))
        return '\n'.join(lines)


@dataclass
class CameraFiles:
    """The files of one camera frame (None where that kind is missing)."""

    camera: str
    frame_id: str                       # 9 digits, this camera's own counter
    image: Path | None = None
    camera_json: Path | None = None
    lidar: Path | None = None
    label: Path | None = None
    label3d: Path | None = None
    duplicates: list = field(default_factory=list)   # extra files with the same kind and ID


@dataclass
class FrameFiles:
    """The files of one frame: its reference camera's and those of the cameras grouped with it."""

    scene: str
    frame_id: str                       # the reference camera's ID
    views: dict = field(default_factory=dict)   # camera name -> CameraFiles, the reference camera first

    @property
    def name(self) -> str:
        return f'{self.scene}/{self.frame_id}'

    @property
    def reference(self) -> CameraFiles:
        return next(iter(self.views.values()))


def _json_file(path: Path):
    with open(path, encoding='utf-8') as stream:
        return json.load(stream)


class A2D2Reader:
    """Frames of an A2D2 labelled set, in scene and reference-camera ID order.

    root: the folder holding cams_lidars.json, class_list.json and the scene folders.
    cameras: A2D2 camera names (CAMERA_NAMES), the reference camera first, or 'all' (every
      camera with a folder in the set, front_center first).
    group_tolerance_us: how far another camera's cam_tstamp may be from the reference camera's.
    keep_frames_without_boxes: None = decide by the set (keep when no scene has a label3D
      folder, i.e. `camera_lidar_semantic`; skip frames without label3D otherwise).
    calibration_path / class_list_path: default to the files in `root`, falling back to the
      copies in config/a2d2 (noted in `notes`) when `root` lacks them.
    """

    def __init__(self, root, semantic_classes=DEFAULT_SEMANTIC_CLASSES,
                 box_classes=DEFAULT_BOX_CLASSES, keep_frames_without_boxes: bool | None = None,
                 calibration_path=None, class_list_path=None, cameras=DEFAULT_CAMERAS,
                 group_tolerance_us: int = GROUP_TOLERANCE_US):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f'{self.root}: A2D2 root is not a directory')
        if group_tolerance_us < 0:
            raise ValueError(f'group_tolerance_us must be >= 0, got {group_tolerance_us}')
        self.group_tolerance_us = int(group_tolerance_us)
        self.notes: list[str] = []
        calibration_path = self._root_file(calibration_path, 'cams_lidars.json',
                                           DEFAULT_CLASS_LIST.parent / 'cams_lidars.json')
        class_list_path = self._root_file(class_list_path, 'class_list.json', DEFAULT_CLASS_LIST)
        self.calibration_path, self.class_list_path = calibration_path, class_list_path
        names = self._camera_names(cameras)
        calibration = load_calibration(calibration_path)
        # One A2D2Camera per camera for the reader's life: each caches its undistortion tables.
        self.cameras: dict[str, A2D2Camera] = {name: a2d2_camera(calibration, name, str(calibration_path))
                                               for name in names}
        self.camera = self.cameras[names[0]]                   # the reference camera
        self.vehicle_to_camera = self.camera.vehicle_to_camera
        self.semantic = SemanticMapping.from_files(semantic_classes, class_list_path)
        self.box_mapping = BoxClassMapping.from_yaml(box_classes)
        self.scenes = self._find_scenes()
        if not self.scenes:
            folder = camera_folder(names[0])
            raise ValueError(f'{self.root}: no scene folders with */{folder}/ found; expected <root>/<scene>/'
                             f'camera/{folder}/*_camera_{camera_file_token(names[0])}_<ID9>.png')
        has_boxes = any((self.root / scene / 'label3D' / camera_folder(name)).is_dir()
                        for scene in self.scenes for name in self.cameras)
        self.keep_frames_without_boxes = (not has_boxes if keep_frames_without_boxes is None
                                          else bool(keep_frames_without_boxes))
        self.stats = ReadStats()
        self.grouping: dict[str, Counter] = {name: Counter() for name in names[1:]}
        self._files: dict[str, list[FrameFiles]] = {}

    def _camera_names(self, cameras) -> list[str]:
        if isinstance(cameras, str):
            if cameras != ALL_CAMERAS:
                cameras = [cameras]
            else:
                cameras = [name for name in CAMERA_NAMES if any(
                    (Path(entry.path) / 'camera' / camera_folder(name)).is_dir()
                    for entry in os.scandir(self.root) if entry.is_dir())]
                if not cameras:
                    raise ValueError(f'{self.root}: no camera folders (camera/cam_<name>/) in any scene')
        names = [str(name) for name in cameras]
        unknown = [name for name in names if name not in CAMERA_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f'cameras must be distinct A2D2 camera names from {list(CAMERA_NAMES)} '
                             f'(or {ALL_CAMERAS!r}); got {names}')
        return names

    @property
    def camera_names(self) -> list[str]:
        """The cameras read, the reference camera first."""
        return list(self.cameras)

    def _root_file(self, given, name: str, fallback: Path) -> Path:
        if given is not None:
            return Path(given)
        if (self.root / name).is_file():
            return self.root / name
        self.notes.append(f'{self.root / name} not found; using {fallback}')
        return fallback

    def _find_scenes(self) -> list[str]:
        scenes = []
        reference = camera_folder(self.camera.name)
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_dir() and any(os.path.isdir(os.path.join(entry.path, folder, reference))
                                      for folder in ('camera', 'lidar', 'label', 'label3D')):
                scenes.append(entry.name)
        return scenes

    # ---- listing -------------------------------------------------------------------------

    def _camera_files(self, scene: str, camera: str) -> dict[str, CameraFiles]:
        """ID -> CameraFiles of one camera in `scene` (no file is read)."""
        by_id: dict[str, CameraFiles] = {}
        folder_name, token = camera_folder(camera), camera_file_token(camera)
        for attribute, (folder, kind, ext) in KINDS.items():
            directory = self.root / scene / folder / folder_name
            if not directory.is_dir():
                continue
            for file_name in sorted(os.listdir(directory)):
                match = FILE_NAME.match(file_name)
                if match is None or match['kind'] != kind or match['ext'] != ext or match['camera'] != token:
                    continue
                files = by_id.setdefault(match['id'], CameraFiles(camera, match['id']))
                if getattr(files, attribute) is None:
                    setattr(files, attribute, directory / file_name)
                else:
                    files.duplicates.append(directory / file_name)
        return by_id

    def frame_files(self, scene: str) -> list[FrameFiles]:
        """The frames of `scene` (every ID of the reference camera), sorted by ID (cached).

        With several cameras, the other cameras' frames are grouped in by cam_tstamp (this reads
        their camera JSONs once; the counts go to `self.grouping`).
        """
        if scene not in self._files:
            reference = self._camera_files(scene, self.camera.name)
            frames = [FrameFiles(scene, frame_id, {self.camera.name: reference[frame_id]})
                      for frame_id in sorted(reference)]
            if len(self.cameras) > 1:
                stamps = np.array([_camera_stamp(f.reference.camera_json) for f in frames], dtype=np.int64)
                for camera in list(self.cameras)[1:]:
                    self._group_camera(scene, camera, frames, stamps)
            self._files[scene] = frames
        return self._files[scene]

    def _group_camera(self, scene: str, camera: str, frames: list[FrameFiles], stamps: np.ndarray) -> None:
        """Add camera `camera`'s frame nearest in time (within the tolerance) to each frame."""
        counts = self.grouping[camera]
        others = [files for _, files in sorted(self._camera_files(scene, camera).items())]
        other_stamps = np.array([_camera_stamp(files.camera_json) for files in others], dtype=np.int64)
        counts['unreadable_camera_json'] += int((other_stamps < 0).sum())
        pairs = []   # (|dt|, frame index, other index) of every pair within the tolerance
        valid = np.flatnonzero(other_stamps >= 0)
        if len(valid):
            order = valid[np.argsort(other_stamps[valid], kind='stable')]
            sorted_stamps = other_stamps[order]
            for index in np.flatnonzero(stamps >= 0):
                low = np.searchsorted(sorted_stamps, stamps[index] - self.group_tolerance_us, side='left')
                high = np.searchsorted(sorted_stamps, stamps[index] + self.group_tolerance_us, side='right')
                pairs.extend((abs(int(sorted_stamps[k]) - int(stamps[index])), int(index), int(order[k]))
                             for k in range(low, high))
        used_frames, used_others = set(), set()
        for _, index, other in sorted(pairs):   # nearest pairs first; each frame used once
            if index in used_frames or other in used_others:
                continue
            used_frames.add(index)
            used_others.add(other)
            frames[index].views[camera] = others[other]
        counts['grouped'] += len(used_frames)
        counts['frames_without_this_camera'] += len(frames) - len(used_frames)
        counts['left_over'] += int((other_stamps >= 0).sum()) - len(used_others)

    def grouping_report(self) -> dict:
        """Per camera (other than the reference one): frames grouped, frames without it, its
        frames in no group (left over), and its camera JSONs without a readable cam_tstamp."""
        return {camera: dict(sorted(counts.items())) for camera, counts in self.grouping.items()}

    def missing_reason(self, files: FrameFiles) -> str | None:
        """The SKIP_REASONS key when a file the frame needs is absent, else None (no I/O)."""
        reference = files.reference
        views = files.views.values()
        if all(view.lidar is None for view in views):
            return 'missing_lidar'
        if reference.image is None:
            return 'missing_image'
        if reference.camera_json is None:
            return 'missing_camera_json'
        if all(view.label3d is None for view in views) and not self.keep_frames_without_boxes:
            return 'missing_label3d'
        return None

    # ---- reading -------------------------------------------------------------------------

    def frames(self, scenes: Iterable[str] | None = None) -> Iterator[Frame]:
        """Yield the usable frames of `scenes` (default all), counting skips in `self.stats`."""
        for scene in (self.scenes if scenes is None else scenes):
            for files in self.frame_files(scene):
                frame = self.load(files)
                if frame is not None:
                    yield frame
        LOGGER.info('A2D2 %s: %s', self.root, self.stats.summary())

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def report(self) -> dict:
        """Counts by reason (JSON-serialisable), grouping counts, and notes on fallbacks used."""
        values = self.stats.to_dict()
        values['cameras'] = self.camera_names
        values['grouping'] = self.grouping_report()
        values['notes'] = list(self.notes)
        return values

    def load(self, files: FrameFiles, stats: ReadStats | None = None) -> Frame | None:
        """Read one frame; None (counted in `stats`, default `self.stats`) when it is unusable."""
        stats = self.stats if stats is None else stats
        reason = self.missing_reason(files)
        if reason is not None:
            stats.skip(reason, files.name)
            return None
        degraded: list[tuple[str, object, str]] = []
        dropped: Counter = Counter()
        try:
            frame = self._read(files, degraded, dropped)
        except FrameSkipped as skipped:
            stats.skip(skipped.reason, skipped.path, skipped.detail)
            return None
        for reason, path, detail in degraded:
            stats.degrade(reason, path, detail)
        stats.dropped_boxes.update(dropped)
        stats.frames_read += 1
        return frame

    def _read(self, files: FrameFiles, degraded: list, dropped: Counter) -> Frame:
        reference = files.reference
        for view in files.views.values():
            if view.duplicates:
                degraded.append(('duplicate_file', view.duplicates[0], ''))
        camera_timestamp_us = self._read_camera_json(reference.camera_json, reference.camera)

        def part(view: CameraFiles, read, *args):
            """A part of `view`: the reference camera's failures skip the frame, others' drop the part."""
            try:
                return read(*args)
            except FrameSkipped as skipped:
                if view is reference:
                    raise
                degraded.append(('camera_part_dropped', skipped.path, f'{view.camera}: {skipped.reason}'))
                return None

        clouds = [cloud for view in files.views.values() if view.lidar is not None
                  for cloud in [part(view, self._read_lidar, view.lidar, self.cameras[view.camera], degraded)]
                  if cloud is not None]
        if not clouds:
            raise FrameSkipped('empty_lidar', files.name, 'no readable LiDAR file of any camera')
        points, lidar_timestamp_us = merge_clouds(clouds, files.name, degraded)

        box_sets = [boxes for view in files.views.values() if view.label3d is not None
                    for boxes in [part(view, self._read_boxes, view.label3d, self.cameras[view.camera], dropped)]
                    if boxes is not None]
        if not box_sets:
            degraded.append(('no_label3d', files.name, ''))
        boxes, box_classes, track_ids = merge_boxes(box_sets, files.name, degraded)

        views = []
        for view in files.views.values():
            camera = self.cameras[view.camera]
            if view is reference:
                timestamp_us = camera_timestamp_us
            else:
                timestamp_us = part(view, self._read_camera_json, view.camera_json, view.camera)
                if timestamp_us is None:
                    continue
            image = part(view, self._read_image, view.image, camera) if view.image is not None else None
            if image is None:
                if view.image is None:
                    degraded.append(('camera_part_dropped', f'{files.name}:{view.camera}', 'no camera PNG'))
                continue
            if view.label is None:
                where = files.name if view is reference else f'{files.name}:{view.camera}'
                degraded.append(('missing_label', where, ''))
                class_map = None
            else:
                class_map = part(view, self._read_class_map, view.label, camera, degraded)
            views.append(CameraView(name=view.camera, image=image, class_map=class_map,
                                    camera_matrix=camera.camera_matrix.copy(),
                                    vehicle_to_camera=camera.vehicle_to_camera.copy(), timestamp_us=timestamp_us))
        first = views[0]
        return Frame(name=files.name, scene=files.scene, points=points, image=first.image,
                     class_map=first.class_map, boxes=boxes, box_classes=box_classes, track_ids=track_ids,
                     camera_matrix=first.camera_matrix, vehicle_to_camera=first.vehicle_to_camera,
                     camera_timestamp_us=camera_timestamp_us, lidar_timestamp_us=lidar_timestamp_us,
                     camera_name=first.name, extra_views=tuple(views[1:]))

    def _read_camera_json(self, path: Path, camera: str) -> int:
        try:
            doc = _json_file(path)
            cam_name, cam_tstamp = doc['cam_name'], doc['cam_tstamp']
            camera_timestamp_us = int(cam_tstamp)
        except READ_ERRORS as error:
            raise FrameSkipped('corrupt_camera_json', path,
                               f'needs cam_name and integer cam_tstamp ({type(error).__name__}: {error})') from None
        if cam_name != camera:
            raise FrameSkipped('wrong_camera', path, f'cam_name {cam_name!r}, expected {camera!r}')
        return camera_timestamp_us

    def _read_lidar(self, path: Path, camera: A2D2Camera, degraded: list) -> 'LidarPart':
        """One camera's LiDAR file as vehicle-frame points (x, y, z, reflectance/255) with stamps."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                missing = {'points', 'reflectance'} - keys
                if missing:
                    raise KeyError(f'missing keys {sorted(missing)}')
                points_view = np.asarray(npz['points'], dtype=np.float64)
                reflectance = np.asarray(npz['reflectance'], dtype=np.float64)
                timestamps = np.asarray(npz['timestamp']) if 'timestamp' in keys else None
                lidar_ids = np.asarray(npz['lidar_id']) if 'lidar_id' in keys else None
        except READ_ERRORS as error:
            raise FrameSkipped('corrupt_lidar', path, f'{type(error).__name__}: {error}') from None
        count = len(points_view)
        if (points_view.ndim != 2 or points_view.shape[1] != 3 or reflectance.shape != (count,)
                or (timestamps is not None and timestamps.shape != (count,))):
            raise FrameSkipped('corrupt_lidar', path,
                               f'expected points (N, 3), reflectance (N,), timestamp (N,); got '
                               f'{points_view.shape}, {reflectance.shape}, '
                               f'{None if timestamps is None else timestamps.shape}')
        if lidar_ids is not None and lidar_ids.shape != (count,):
            lidar_ids = None   # only used to tell apart points of two cameras
        if 'row' not in keys:
            degraded.append(('lidar_without_row', path, ''))
        finite = np.isfinite(points_view).all(axis=1) & np.isfinite(reflectance)
        if not finite.all():
            degraded.append(('nonfinite_points', path, f'{int((~finite).sum())} of {count}'))
            points_view, reflectance = points_view[finite], reflectance[finite]
            timestamps = None if timestamps is None else timestamps[finite]
            lidar_ids = None if lidar_ids is None else lidar_ids[finite]
        if len(points_view) == 0:
            raise FrameSkipped('empty_lidar', path, 'no finite points')
        points = np.empty((len(points_view), 4), dtype=np.float32)
        vehicle = transform_points(points_view, camera.view_to_vehicle)
        points[:, :3] = vehicle
        points[:, 3] = np.clip(reflectance / 255.0, 0.0, 1.0)
        if timestamps is None:
            degraded.append(('lidar_without_timestamp', path, ''))
        return LidarPart(points, vehicle, None if timestamps is None else timestamps.astype(np.int64),
                         None if lidar_ids is None else lidar_ids.astype(np.float64))

    def _read_boxes(self, path: Path, camera: A2D2Camera, dropped: Counter):
        """label3D JSON -> vehicle-frame (M, 7) float32 boxes, (M,) class ids, (M,) track ids."""
        try:
            doc = _json_file(path)
            if not isinstance(doc, dict):
                raise TypeError('expected an object {"box_0": {...}, ...}')
            rows, classes, track_ids = [], [], []
            for key, box in doc.items():
                name = str(box['class'])
                class_id = self.box_mapping.class_id(name)
                center = np.asarray(box['center'], dtype=np.float64).reshape(3)
                size = np.asarray(box['size'], dtype=np.float64).reshape(3)
                axis = np.asarray(box['axis'], dtype=np.float64).reshape(3)
                yaw_view = float(axis[2]) * float(box['rot_angle'])
                row = np.concatenate([center, size, [yaw_view]])
                if not np.isfinite(row).all():
                    raise ValueError(f'{key}: non-finite values')
                if class_id == DROPPED:
                    dropped[name] += 1
                    continue
                rows.append(row)
                classes.append(class_id)
                track_id = box.get('track_id')   # not in real A2D2 (its `id` is an index)
                track_ids.append(-1 if track_id is None else int(track_id))
        except READ_ERRORS as error:
            raise FrameSkipped('corrupt_label3d', path, f'{type(error).__name__}: {error}') from None
        boxes_view = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
        boxes = transform_boxes(boxes_view, camera.view_to_vehicle).astype(np.float32)
        return boxes, np.asarray(classes, dtype=np.int64), np.asarray(track_ids, dtype=np.int64)

    @staticmethod
    def _check_size(image: np.ndarray, path: Path, camera: A2D2Camera) -> None:
        if image.shape[:2] != tuple(camera.image_size_hw):
            raise FrameSkipped('wrong_image_size', path,
                               f'{image.shape[:2]} (rows, cols), expected {camera.image_size_hw}')

    def _read_image(self, path: Path, camera: A2D2Camera) -> np.ndarray:
        """Undistorted (H, W, 3) uint8 RGB."""
        try:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as error:
            raise FrameSkipped('corrupt_image', path, str(error)) from None
        if bgr is None:
            raise FrameSkipped('corrupt_image', path, 'OpenCV cannot decode it')
        self._check_size(bgr, path, camera)
        return cv2.cvtColor(camera.undistort_image(bgr), cv2.COLOR_BGR2RGB)

    def _read_class_map(self, path: Path, camera: A2D2Camera, degraded: list) -> np.ndarray:
        """Undistorted (H, W) uint8 training class ids (255 = ignore)."""
        try:
            label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error as error:
            raise FrameSkipped('corrupt_label', path, str(error)) from None
        if label is None:
            raise FrameSkipped('corrupt_label', path, 'OpenCV cannot decode it')
        if label.dtype != np.uint8 or label.ndim != 3 or label.shape[2] not in (3, 4):
            raise FrameSkipped('corrupt_label', path,
                               f'expected 8-bit RGB(A), got shape {label.shape} {label.dtype}')
        if label.shape[2] == 4:
            degraded.append(('rgba_label', path, ''))
        self._check_size(label, path, camera)
        # Map colours first, then undistort the single-channel map (nearest keeps ids exact).
        class_map = self.semantic.colors_to_classes(label[..., 2::-1])   # BGR(A) -> RGB view
        return camera.undistort_label(class_map)


def _camera_stamp(path: Path | None) -> int:
    """cam_tstamp of a camera JSON, -1 when it is missing or unreadable (for grouping only)."""
    if path is None:
        return -1
    try:
        return int(_json_file(path)['cam_tstamp'])
    except READ_ERRORS + (json.JSONDecodeError,):
        return -1


@dataclass
class LidarPart:
    """One camera's LiDAR file in the vehicle frame."""

    points: np.ndarray                  # (N, 4) float32 x, y, z, reflectance [0, 1]
    vehicle_xyz: np.ndarray             # (N, 3) float64, the same positions before rounding to float32
    timestamps: np.ndarray | None       # (N,) int64 TAI µs, None when the file has none
    lidar_ids: np.ndarray | None        # (N,) float64 A2D2 LiDAR index, None when the file has none


def merge_clouds(parts: list[LidarPart], name: str, degraded: list) -> tuple[np.ndarray, int]:
    """One cloud from the cameras' LiDAR files: (N, 4) float32 and the sweep's last stamp (-1 unknown).

    A point in two files (two cameras see it) has the same LiDAR, timestamp and vehicle-frame
    position (to POINT_MERGE_RESOLUTION_M): it is kept once, at its first occurrence.
    """
    stamps = [part.timestamps for part in parts if part.timestamps is not None and len(part.timestamps)]
    last_stamp = int(max(int(s.max()) for s in stamps)) if len(stamps) == len(parts) else -1
    if len(parts) == 1:
        return parts[0].points, last_stamp
    points = np.concatenate([part.points for part in parts])
    key = [np.rint(np.concatenate([part.vehicle_xyz for part in parts]) / POINT_MERGE_RESOLUTION_M)]
    if all(part.timestamps is not None for part in parts):
        key.append(np.concatenate([part.timestamps for part in parts])[:, None].astype(np.float64))
    if all(part.lidar_ids is not None for part in parts):
        key.append(np.concatenate([part.lidar_ids for part in parts])[:, None])
    _, first = np.unique(np.concatenate(key, axis=1), axis=0, return_index=True)
    if len(first) < len(points):
        degraded.append(('duplicate_points', name, f'{len(points) - len(first)} of {len(points)}'))
        points = points[np.sort(first)]
    return points, last_stamp


def merge_boxes(box_sets: list, name: str, degraded: list):
    """The boxes of several cameras' label3D as one set: (M, 7) float32, (M,) classes, (M,) track ids.

    A box is a duplicate of an earlier one (camera order) when both have the same class and the
    same track ID, or, when either has none (-1, real A2D2), their centres lie within
    BOX_MERGE_DISTANCE_M in x-y.
    """
    if not box_sets:
        return np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    boxes = np.concatenate([b[0] for b in box_sets]).reshape(-1, 7)
    classes = np.concatenate([b[1] for b in box_sets])
    track_ids = np.concatenate([b[2] for b in box_sets])
    if len(box_sets) == 1 or len(boxes) < 2:
        return boxes, classes, track_ids
    same_class = classes[:, None] == classes[None, :]
    tracked = (track_ids[:, None] >= 0) & (track_ids[None, :] >= 0)
    near = np.hypot(boxes[:, None, 0] - boxes[None, :, 0], boxes[:, None, 1] - boxes[None, :, 1]) \
        < BOX_MERGE_DISTANCE_M
    duplicate = same_class & np.where(tracked, track_ids[:, None] == track_ids[None, :], near)
    keep = np.ones(len(boxes), dtype=bool)
    for index in range(1, len(boxes)):   # a few dozen boxes: greedy in camera order
        keep[index] = not (duplicate[index, :index] & keep[:index]).any()
    if not keep.all():
        degraded.append(('duplicate_boxes', name, f'{int((~keep).sum())} of {len(boxes)}'))
    return boxes[keep], classes[keep], track_ids[keep]
