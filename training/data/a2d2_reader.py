"""Read the real A2D2 layout (front-center camera) into training Frames.

Layout (see docs/a2d2_format.md): `<root>/cams_lidars.json`, `<root>/class_list.json`
and scene folders `<root>/<scene>/{camera,lidar,label,label3D}/cam_front_center/` holding
`<stamp>_<kind>_frontcenter_<ID9>.<ext>`. The stamp prefix differs between kinds, so the files
of one frame are paired by scene and 9-digit ID. Both labelled sets are read as they are:
`camera_lidar_semantic_bboxes` (all kinds) and `camera_lidar_semantic` (no label3D; some scenes
without LiDAR).

What a Frame gets (training.data.frame.Frame conventions):
- points: A2D2 stores them in the front-center camera *view* frame (x fwd, y left, z up);
  they are moved to the vehicle frame with `view_to_vehicle`; reflectance 0..255 -> [0, 1].
- image / class_map: the on-disk PNGs are distorted; both are undistorted (bilinear / nearest)
  so `camera_matrix` (A2D2's CamMatrix) projects into them. Colours map to training classes
  through config/a2d2/semantic_classes.yaml; unknown colours -> 255.
- boxes: label3D centre/size/axis-angle in the view frame; yaw_view = axis[2] * rot_angle
  (both axis signs occur); then centre and heading are transformed to the vehicle frame.
  Classes are grouped by config/a2d2/box_classes.yaml; unlisted classes are dropped.

Frames with missing or broken parts are skipped or degraded and counted by reason in
`reader.stats` (see SKIP_REASONS / DEGRADE_REASONS); reading never raises for one bad frame.
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
from training.data.a2d2_calibration import front_center_camera, load_calibration
from training.data.frame import Frame
from training.data.label_mapping import (DEFAULT_BOX_CLASSES, DEFAULT_CLASS_LIST, DEFAULT_SEMANTIC_CLASSES,
                                         DROPPED, BoxClassMapping, SemanticMapping)

LOGGER = logging.getLogger(__name__)

CAMERA_NAME = 'front_center'
CAMERA_DIR = 'cam_front_center'
FILE_TOKEN = 'frontcenter'
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
    'wrong_camera': 'camera JSON cam_name is not front_center',
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
class FrameFiles:
    """The files of one frame (None where that kind is missing)."""

    scene: str
    frame_id: str                       # 9 digits
    image: Path | None = None
    camera_json: Path | None = None
    lidar: Path | None = None
    label: Path | None = None
    label3d: Path | None = None
    duplicates: list = field(default_factory=list)   # extra files with the same kind and ID

    @property
    def name(self) -> str:
        return f'{self.scene}/{self.frame_id}'


def _json_file(path: Path):
    with open(path, encoding='utf-8') as stream:
        return json.load(stream)


class A2D2Reader:
    """Frames of an A2D2 labelled set (front-center camera), in scene and ID order.

    root: the folder holding cams_lidars.json, class_list.json and the scene folders.
    keep_frames_without_boxes: None = decide by the set (keep when no scene has a label3D
      folder, i.e. `camera_lidar_semantic`; skip frames without label3D otherwise).
    calibration_path / class_list_path: default to the files in `root`, falling back to the
      copies in config/a2d2 (noted in `notes`) when `root` lacks them.
    """

    def __init__(self, root, semantic_classes=DEFAULT_SEMANTIC_CLASSES,
                 box_classes=DEFAULT_BOX_CLASSES, keep_frames_without_boxes: bool | None = None,
                 calibration_path=None, class_list_path=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f'{self.root}: A2D2 root is not a directory')
        self.notes: list[str] = []
        calibration_path = self._root_file(calibration_path, 'cams_lidars.json',
                                           DEFAULT_CLASS_LIST.parent / 'cams_lidars.json')
        class_list_path = self._root_file(class_list_path, 'class_list.json', DEFAULT_CLASS_LIST)
        self.calibration_path, self.class_list_path = calibration_path, class_list_path
        # One camera per reader: it caches the undistortion remap tables.
        self.camera = front_center_camera(load_calibration(calibration_path), str(calibration_path))
        self.vehicle_to_camera = self.camera.vehicle_to_camera
        self.semantic = SemanticMapping.from_files(semantic_classes, class_list_path)
        self.box_mapping = BoxClassMapping.from_yaml(box_classes)
        self.scenes = self._find_scenes()
        if not self.scenes:
            raise ValueError(f'{self.root}: no scene folders with */{CAMERA_DIR}/ found; expected '
                             f'<root>/<scene>/camera/{CAMERA_DIR}/*_camera_{FILE_TOKEN}_<ID9>.png')
        has_boxes = any((self.root / scene / 'label3D' / CAMERA_DIR).is_dir() for scene in self.scenes)
        self.keep_frames_without_boxes = (not has_boxes if keep_frames_without_boxes is None
                                          else bool(keep_frames_without_boxes))
        self.stats = ReadStats()
        self._files: dict[str, list[FrameFiles]] = {}

    def _root_file(self, given, name: str, fallback: Path) -> Path:
        if given is not None:
            return Path(given)
        if (self.root / name).is_file():
            return self.root / name
        self.notes.append(f'{self.root / name} not found; using {fallback}')
        return fallback

    def _find_scenes(self) -> list[str]:
        scenes = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_dir() and any(os.path.isdir(os.path.join(entry.path, folder, CAMERA_DIR))
                                      for folder in ('camera', 'lidar', 'label', 'label3D')):
                scenes.append(entry.name)
        return scenes

    # ---- listing -------------------------------------------------------------------------

    def frame_files(self, scene: str) -> list[FrameFiles]:
        """All frame IDs seen in any kind of file of `scene`, sorted by ID (cached)."""
        if scene not in self._files:
            by_id: dict[str, FrameFiles] = {}
            for attribute, (folder, token, ext) in KINDS.items():
                directory = self.root / scene / folder / CAMERA_DIR
                if not directory.is_dir():
                    continue
                for file_name in sorted(os.listdir(directory)):
                    match = FILE_NAME.match(file_name)
                    if (match is None or match['kind'] != token or match['ext'] != ext
                            or match['camera'] != FILE_TOKEN):
                        continue
                    files = by_id.setdefault(match['id'], FrameFiles(scene, match['id']))
                    if getattr(files, attribute) is None:
                        setattr(files, attribute, directory / file_name)
                    else:
                        files.duplicates.append(directory / file_name)
            self._files[scene] = [by_id[frame_id] for frame_id in sorted(by_id)]
        return self._files[scene]

    def missing_reason(self, files: FrameFiles) -> str | None:
        """The SKIP_REASONS key when a file the frame needs is absent, else None (no I/O)."""
        if files.lidar is None:
            return 'missing_lidar'
        if files.image is None:
            return 'missing_image'
        if files.camera_json is None:
            return 'missing_camera_json'
        if files.label3d is None and not self.keep_frames_without_boxes:
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
        """Counts by reason (JSON-serialisable), plus notes on fallbacks used."""
        values = self.stats.to_dict()
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
        if files.duplicates:
            degraded.append(('duplicate_file', files.duplicates[0], ''))
        camera_timestamp_us = self._read_camera_json(files.camera_json)
        points, lidar_timestamp_us = self._read_lidar(files.lidar, degraded)
        if files.label3d is None:
            degraded.append(('no_label3d', files.name, ''))
            boxes = np.zeros((0, 7), dtype=np.float32)
            box_classes = np.zeros(0, dtype=np.int64)
            track_ids = np.zeros(0, dtype=np.int64)
        else:
            boxes, box_classes, track_ids = self._read_boxes(files.label3d, dropped)
        image = self._read_image(files.image)
        if files.label is None:
            degraded.append(('missing_label', files.name, ''))
            class_map = None
        else:
            class_map = self._read_class_map(files.label, degraded)
        return Frame(name=files.name, scene=files.scene, points=points, image=image,
                     class_map=class_map, boxes=boxes, box_classes=box_classes, track_ids=track_ids,
                     camera_matrix=self.camera.camera_matrix.copy(),
                     vehicle_to_camera=self.vehicle_to_camera.copy(),
                     camera_timestamp_us=camera_timestamp_us, lidar_timestamp_us=lidar_timestamp_us)

    def _read_camera_json(self, path: Path) -> int:
        try:
            doc = _json_file(path)
            cam_name, cam_tstamp = doc['cam_name'], doc['cam_tstamp']
            camera_timestamp_us = int(cam_tstamp)
        except READ_ERRORS as error:
            raise FrameSkipped('corrupt_camera_json', path,
                               f'needs cam_name and integer cam_tstamp ({type(error).__name__}: {error})') from None
        if cam_name != CAMERA_NAME:
            raise FrameSkipped('wrong_camera', path, f'cam_name {cam_name!r}, expected {CAMERA_NAME!r}')
        return camera_timestamp_us

    def _read_lidar(self, path: Path, degraded: list) -> tuple[np.ndarray, int]:
        """(N, 4) float32 vehicle-frame x, y, z, reflectance/255 and the sweep's last stamp."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                missing = {'points', 'reflectance'} - keys
                if missing:
                    raise KeyError(f'missing keys {sorted(missing)}')
                points_view = np.asarray(npz['points'], dtype=np.float64)
                reflectance = np.asarray(npz['reflectance'], dtype=np.float64)
                timestamps = np.asarray(npz['timestamp']) if 'timestamp' in keys else None
        except READ_ERRORS as error:
            raise FrameSkipped('corrupt_lidar', path, f'{type(error).__name__}: {error}') from None
        count = len(points_view)
        if (points_view.ndim != 2 or points_view.shape[1] != 3 or reflectance.shape != (count,)
                or (timestamps is not None and timestamps.shape != (count,))):
            raise FrameSkipped('corrupt_lidar', path,
                               f'expected points (N, 3), reflectance (N,), timestamp (N,); got '
                               f'{points_view.shape}, {reflectance.shape}, '
                               f'{None if timestamps is None else timestamps.shape}')
        if 'row' not in keys:
            degraded.append(('lidar_without_row', path, ''))
        finite = np.isfinite(points_view).all(axis=1) & np.isfinite(reflectance)
        if not finite.all():
            degraded.append(('nonfinite_points', path, f'{int((~finite).sum())} of {count}'))
            points_view, reflectance = points_view[finite], reflectance[finite]
            timestamps = None if timestamps is None else timestamps[finite]
        if len(points_view) == 0:
            raise FrameSkipped('empty_lidar', path, 'no finite points')
        points = np.empty((len(points_view), 4), dtype=np.float32)
        points[:, :3] = transform_points(points_view, self.camera.view_to_vehicle)
        points[:, 3] = np.clip(reflectance / 255.0, 0.0, 1.0)
        if timestamps is None:
            degraded.append(('lidar_without_timestamp', path, ''))
            return points, -1
        return points, int(timestamps.max())

    def _read_boxes(self, path: Path, dropped: Counter):
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
        boxes = transform_boxes(boxes_view, self.camera.view_to_vehicle).astype(np.float32)
        return boxes, np.asarray(classes, dtype=np.int64), np.asarray(track_ids, dtype=np.int64)

    def _check_size(self, image: np.ndarray, path: Path) -> None:
        if image.shape[:2] != tuple(self.camera.image_size_hw):
            raise FrameSkipped('wrong_image_size', path,
                               f'{image.shape[:2]} (rows, cols), expected {self.camera.image_size_hw}')

    def _read_image(self, path: Path) -> np.ndarray:
        """Undistorted (H, W, 3) uint8 RGB."""
        try:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as error:
            raise FrameSkipped('corrupt_image', path, str(error)) from None
        if bgr is None:
            raise FrameSkipped('corrupt_image', path, 'OpenCV cannot decode it')
        self._check_size(bgr, path)
        return cv2.cvtColor(self.camera.undistort_image(bgr), cv2.COLOR_BGR2RGB)

    def _read_class_map(self, path: Path, degraded: list) -> np.ndarray:
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
        self._check_size(label, path)
        # Map colours first, then undistort the single-channel map (nearest keeps ids exact).
        class_map = self.semantic.colors_to_classes(label[..., 2::-1])   # BGR(A) -> RGB view
        return self.camera.undistort_label(class_map)
