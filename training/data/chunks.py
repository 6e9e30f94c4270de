"""NPZ chunk files: many training Frames in one uncompressed `.npz` (the only schema description).

Schema version 2 (`CHUNK_VERSION`). F = frames in the chunk, V = camera views over all frames
(a frame has one or more cameras: A2D2's front-center camera, or a surround rig). Ragged data
is concatenated and cut by offsets arrays: frame i owns rows offsets[i]:offsets[i + 1] of its
data (offsets[0] = 0, offsets[-1] = total, non-decreasing); views likewise own their PNG bytes.

| key                  | dtype   | shape          | meaning                                              |
|----------------------|---------|----------------|------------------------------------------------------|
| version              | int64   | ()             | CHUNK_VERSION                                        |
| frame_names          | <U      | (F,)           | "<scene>/<ID9>" (fixed-width unicode, no objects)    |
| scene_names          | <U      | (F,)           | A2D2 scene folder of each frame                      |
| camera_timestamp_us  | int64   | (F,)           | TAI microseconds of the frame's first camera, -1 unknown |
| lidar_timestamp_us   | int64   | (F,)           | TAI microseconds, -1 unknown                         |
| view_offsets         | int64   | (F + 1,)       | views of each frame (its first view: the reference camera) |
| camera_names         | <U      | (V,)           | A2D2 camera of each view (e.g. front_center)         |
| view_timestamp_us    | int64   | (V,)           | TAI microseconds of each view's image, -1 unknown    |
| image_hw             | int64   | (V, 2)         | rows, cols of the (undistorted) image                |
| camera_matrix        | float64 | (V, 3, 3)      | K of that image                                      |
| vehicle_to_camera    | float64 | (V, 4, 4)      | vehicle -> camera optical frame (x right, y down, z fwd) |
| points               | float32 | (sum N, 4)     | vehicle frame x, y, z [m], reflectance [0, 1]        |
| point_offsets        | int64   | (F + 1,)       | rows of `points` per frame                           |
| image_png            | uint8   | (sum bytes,)   | PNG (3-channel) of each view's RGB image             |
| image_offsets        | int64   | (V + 1,)       | bytes of `image_png` per view                        |
| class_map_png        | uint8   | (sum bytes,)   | PNG (1-channel uint8) class ids, 255 = ignore        |
| class_map_offsets    | int64   | (V + 1,)       | bytes per view; an empty span = no class map (None)  |
| class_pixel_counts   | int64   | (V, 256)       | pixels of each class id in the view's class map (0 if None) |
| boxes                | float32 | (sum M, 7)     | vehicle frame x, y, z, length, width, height, yaw    |
| box_classes          | int64   | (sum M,)       | detection class ids                                  |
| track_ids            | int64   | (sum M,)       | object identity within a scene, -1 unknown           |
| box_offsets          | int64   | (F + 1,)       | rows of `boxes` / `box_classes` / `track_ids`        |

Version 1 chunks (one front-center camera per frame; no view_offsets, camera_names,
view_timestamp_us; the per-view arrays per frame) are still read, as one view per frame.

Files are written atomically (temporary file in the same folder, then os.replace) and read with
`np.load(allow_pickle=False)`. Because members are stored uncompressed, `ChunkReader` maps
`points` and the PNG blobs straight from the file, so reading one frame touches only its bytes.
A file that is truncated, damaged, missing a key, holding pickled objects or of another version
raises ChunkError naming the file (and the member).

Checksums: every member carries the CRC-32 of its bytes in the zip headers (np.savez writes it;
chunks of every version have it, so the format did not change). CRC-32 because it is the fastest
check at hand (zlib, > 1 GB/s) and the aim is to catch damaged storage, not forgery. Loading the
small members checks theirs; the mapped members are checked only by `verify_chunk` /
`ChunkReader(path, verify=True)`, which reads the whole file once (the converter does it for
every chunk it writes, the evaluation CLI before it evaluates).
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from mtl_perception_ros.core.atomic_file import atomic_write
from training.data.frame import CameraView, Frame

CHUNK_VERSION = 2
READABLE_VERSIONS = (1, 2)
# PNG is lossless at any setting; zlib level 1 with the run-length strategy encodes a 1920x1208
# photo in ~0.1 s (default strategy: ~0.13 s and larger) and flat class maps very compactly.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]

_OFFSETS = {'point_offsets': 'points', 'image_offsets': 'image_png',
            'class_map_offsets': 'class_map_png', 'box_offsets': 'boxes'}
_PER_FRAME = ('frame_names', 'scene_names', 'camera_timestamp_us', 'lidar_timestamp_us')
_PER_VIEW = ('camera_names', 'view_timestamp_us', 'image_hw', 'camera_matrix', 'vehicle_to_camera',
             'class_pixel_counts')
_V2_ONLY = ('view_offsets', 'camera_names', 'view_timestamp_us')
KEYS = (('version',) + _PER_FRAME + _PER_VIEW + ('view_offsets',) + tuple(_OFFSETS) + tuple(_OFFSETS.values())
        + ('box_classes', 'track_ids'))
KEYS_V1 = tuple(key for key in KEYS if key not in _V2_ONLY)
_MAPPED = ('points', 'image_png', 'class_map_png')   # large members read lazily from the file
V1_CAMERA = 'front_center'                             # the camera of every version-1 frame


class ChunkError(ValueError):
    """A chunk file that cannot be used; the message names the file."""


def _offsets(lengths) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return offsets


def _encode_png(image: np.ndarray, what: str) -> np.ndarray:
    ok, encoded = cv2.imencode('.png', image, PNG_PARAMS)
    if not ok:
        raise ValueError(f'cannot PNG-encode {what} of shape {image.shape} {image.dtype}')
    return encoded.reshape(-1)


def _unicode(values) -> np.ndarray:
    values = [str(v) for v in values]
    width = max([1] + [len(v) for v in values])
    return np.array(values, dtype=f'<U{width}')


def _view_arrays(frame: Frame, view: CameraView) -> dict:
    """The per-view chunk values of one camera view (PNG-encoded image and class map)."""
    what = f'frame {frame.name} camera {view.name}'
    image = np.asarray(view.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'{what}: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}')
    if view.class_map is None:
        class_map_png = np.zeros(0, dtype=np.uint8)
        counts = np.zeros(256, dtype=np.int64)
    else:
        class_map = np.asarray(view.class_map)
        if class_map.shape != image.shape[:2] or class_map.dtype != np.uint8:
            raise ValueError(f'{what}: class_map must be {image.shape[:2]} uint8, '
                             f'got {class_map.shape} {class_map.dtype}')
        class_map_png = _encode_png(class_map, f'{what} class map')
        counts = np.bincount(class_map.reshape(-1), minlength=256).astype(np.int64)
    return {'camera_names': view.name, 'view_timestamp_us': int(view.timestamp_us),
            'image_hw': image.shape[:2],
            'camera_matrix': np.asarray(view.camera_matrix, dtype=np.float64).reshape(3, 3),
            'vehicle_to_camera': np.asarray(view.vehicle_to_camera, dtype=np.float64).reshape(4, 4),
            'class_pixel_counts': counts,
            'image_png': _encode_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), f'{what} image'),
            'class_map_png': class_map_png}


def frame_arrays(frames: Iterable[Frame]) -> dict[str, np.ndarray]:
    """The chunk arrays (schema above) of `frames`, PNG-encoding images and class maps.

    `frames` is consumed once, so a generator keeps only one decoded frame in memory.
    """
    parts: dict[str, list] = {key: [] for key in _PER_FRAME + _PER_VIEW + (
        'views', 'points', 'image_png', 'class_map_png', 'boxes', 'box_classes', 'track_ids')}
    for frame in frames:
        boxes = np.asarray(frame.boxes, dtype=np.float32).reshape(-1, 7)
        box_classes = np.asarray(frame.box_classes, dtype=np.int64).reshape(-1)
        track_ids = np.asarray(frame.track_ids, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(box_classes) == len(track_ids):
            raise ValueError(f'frame {frame.name}: {len(boxes)} boxes, {len(box_classes)} box_classes, '
                             f'{len(track_ids)} track_ids')
        views = [_view_arrays(frame, view) for view in frame.views]
        values = {
            'frame_names': frame.name, 'scene_names': frame.scene,
            'camera_timestamp_us': int(frame.camera_timestamp_us),
            'lidar_timestamp_us': int(frame.lidar_timestamp_us),
            'views': len(views),
            'points': np.asarray(frame.points, dtype=np.float32).reshape(-1, 4),
            'boxes': boxes, 'box_classes': box_classes, 'track_ids': track_ids}
        for key, value in values.items():
            parts[key].append(value)
        for view in views:
            for key, value in view.items():
                parts[key].append(value)

    def cat(key, dtype, tail=()):
        return np.concatenate(parts[key]) if parts[key] else np.zeros((0,) + tail, dtype=dtype)

    return {
        'version': np.array(CHUNK_VERSION, dtype=np.int64),
        'frame_names': _unicode(parts['frame_names']),
        'scene_names': _unicode(parts['scene_names']),
        'camera_timestamp_us': np.array(parts['camera_timestamp_us'], dtype=np.int64),
        'lidar_timestamp_us': np.array(parts['lidar_timestamp_us'], dtype=np.int64),
        'view_offsets': _offsets(parts['views']),
        'camera_names': _unicode(parts['camera_names']),
        'view_timestamp_us': np.array(parts['view_timestamp_us'], dtype=np.int64),
        'image_hw': np.array(parts['image_hw'], dtype=np.int64).reshape(-1, 2),
        'camera_matrix': np.array(parts['camera_matrix'], dtype=np.float64).reshape(-1, 3, 3),
        'vehicle_to_camera': np.array(parts['vehicle_to_camera'], dtype=np.float64).reshape(-1, 4, 4),
        'class_pixel_counts': np.array(parts['class_pixel_counts'], dtype=np.int64).reshape(-1, 256),
        'points': cat('points', np.float32, (4,)),
        'point_offsets': _offsets([len(p) for p in parts['points']]),
        'image_png': cat('image_png', np.uint8),
        'image_offsets': _offsets([len(p) for p in parts['image_png']]),
        'class_map_png': cat('class_map_png', np.uint8),
        'class_map_offsets': _offsets([len(p) for p in parts['class_map_png']]),
        'boxes': cat('boxes', np.float32, (7,)),
        'box_classes': cat('box_classes', np.int64),
        'track_ids': cat('track_ids', np.int64),
        'box_offsets': _offsets([len(b) for b in parts['boxes']]),
    }


def write_chunk(path, frames: Iterable[Frame]) -> Path:
    """Write `frames` (a list or a generator) to `path` atomically (temp file, then os.replace)."""
    arrays = frame_arrays(frames)
    return atomic_write(path, lambda stream: np.savez(stream, **arrays))


def verify_chunk(path) -> None:
    """Re-read every member of the chunk at `path` and check it against its stored CRC-32.

    Raises ChunkError naming the file and the first damaged member.
    """
    path = Path(path)
    faults = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)
    try:
        archive = zipfile.ZipFile(path)
    except faults as error:
        raise ChunkError(f'{path}: damaged or truncated chunk ({type(error).__name__}: {error})') from None
    with archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as stream:   # zipfile compares the CRC-32 at the member's end
                    while stream.read(1 << 24):
                        pass
            except faults as error:
                raise ChunkError(f'{path}: damaged chunk, member {info.filename} does not match its checksum '
                                 f'({type(error).__name__}: {error}); convert the data again') from None


def _member_dtype(archive: zipfile.ZipFile, key: str) -> np.dtype:
    """The dtype in the .npy header of member `key` (read without loading the array)."""
    with archive.open(f'{key}.npy') as stream:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        return read_header(stream)[2]


def _stored_member(path: Path, archive: zipfile.ZipFile, key: str):
    """np.memmap of an uncompressed npz member, or None when it cannot be mapped."""
    info = archive.getinfo(f'{key}.npy')
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, 'rb') as stream:
        stream.seek(info.header_offset)
        local = stream.read(30)
        if len(local) != 30 or local[:4] != b'PK\x03\x04':
            raise ValueError(f'bad zip local header of {key}')
        name_length = int.from_bytes(local[26:28], 'little')
        extra_length = int.from_bytes(local[28:30], 'little')
        stream.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            return None
        data_offset = stream.tell()
    if fortran or dtype.hasobject:
        return None
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_offset + size > os.path.getsize(path):
        raise ValueError(f'member {key} runs past the end of the file')
    if size == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode='r', offset=data_offset, shape=tuple(shape))


class ChunkReader:
    """Random access to the frames of one chunk file (version 1 or 2).

    Small arrays (names, stamps, calibration, boxes, offsets, class pixel counts) are loaded
    on opening; `points` and the PNG blobs are mapped from the file and sliced per frame.
    verify=True first checks every member's CRC-32 (`verify_chunk`: reads the whole file).
    A version-1 chunk reads as one front-center view per frame.
    """

    def __init__(self, path, verify: bool = False):
        self.path = Path(path)
        if verify:
            verify_chunk(self.path)
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                version = int(npz['version']) if 'version' in npz.files else None
                if version is not None and version not in READABLE_VERSIONS:
                    raise ChunkError(f'{self.path}: chunk version {version}, this code reads versions '
                                     f'{list(READABLE_VERSIONS)}; convert the data again')
                keys = KEYS_V1 if version == 1 else KEYS
                missing = sorted(set(keys) - set(npz.files))
                if missing:
                    raise ChunkError(f'{self.path}: not a chunk file, missing keys {missing}')
                for key in keys:
                    if _member_dtype(npz.zip, key).hasobject:
                        raise ChunkError(f'{self.path}: member {key} holds pickled Python objects; chunks hold '
                                         'plain arrays only and are never unpickled')
                arrays = {key: npz[key] for key in keys if key not in _MAPPED}
            with zipfile.ZipFile(self.path) as archive:
                for key in _MAPPED:
                    mapped = _stored_member(self.path, archive, key)
                    if mapped is None:   # compressed by someone else: load it whole
                        with np.load(self.path, allow_pickle=False) as npz:
                            mapped = npz[key]
                    arrays[key] = mapped
        except ChunkError:
            raise
        except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
            raise ChunkError(f'{self.path}: damaged or truncated chunk ({type(error).__name__}: {error})') from None
        self.version = version
        if version == 1:   # one front-center view per frame
            count = len(arrays['frame_names'])
            arrays['view_offsets'] = np.arange(count + 1, dtype=np.int64)
            arrays['camera_names'] = np.full(count, V1_CAMERA)
            arrays['view_timestamp_us'] = np.asarray(arrays['camera_timestamp_us'], dtype=np.int64)
        self._check(arrays)
        self._arrays = arrays

    def _check(self, arrays: dict) -> None:
        count = len(arrays['frame_names'])
        view_offsets = arrays['view_offsets']
        if (view_offsets.shape != (count + 1,) or view_offsets[0] != 0 or np.any(np.diff(view_offsets) < 1)):
            raise ChunkError(f'{self.path}: view_offsets must be {count + 1} increasing offsets from 0 '
                             '(every frame has at least one view)')
        views = int(view_offsets[-1])
        expected = {'scene_names': (count,), 'camera_timestamp_us': (count,), 'lidar_timestamp_us': (count,),
                    'camera_names': (views,), 'view_timestamp_us': (views,), 'image_hw': (views, 2),
                    'camera_matrix': (views, 3, 3), 'vehicle_to_camera': (views, 4, 4),
                    'class_pixel_counts': (views, 256), 'points': (None, 4), 'boxes': (None, 7)}
        for key, shape in expected.items():
            actual = arrays[key].shape
            if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
                raise ChunkError(f'{self.path}: {key} has shape {actual}, expected {shape} (None = any)')
        for offsets_key, data_key in _OFFSETS.items():
            offsets = arrays[offsets_key]
            rows = views if offsets_key in ('image_offsets', 'class_map_offsets') else count
            if (offsets.shape != (rows + 1,) or offsets[0] != 0 or offsets[-1] != len(arrays[data_key])
                    or np.any(np.diff(offsets) < 0)):
                raise ChunkError(f'{self.path}: {offsets_key} must be {rows + 1} non-decreasing offsets '
                                 f'from 0 to len({data_key}) = {len(arrays[data_key])}')
        for key in ('box_classes', 'track_ids'):
            if arrays[key].shape != (len(arrays['boxes']),):
                raise ChunkError(f'{self.path}: {key} has shape {arrays[key].shape}, '
                                 f'expected ({len(arrays["boxes"])},)')

    def __len__(self) -> int:
        return len(self._arrays['frame_names'])

    @property
    def frame_names(self) -> list[str]:
        return [str(name) for name in self._arrays['frame_names']]

    @property
    def scene_names(self) -> list[str]:
        return [str(name) for name in self._arrays['scene_names']]

    @property
    def class_pixel_counts(self) -> np.ndarray:
        """(F, 256) int64 pixels per class id (255 = ignore) of each frame's class maps (all its views)."""
        counts = self._arrays['class_pixel_counts']
        return np.add.reduceat(counts, self._arrays['view_offsets'][:-1], axis=0) if len(self) else counts

    @property
    def view_class_pixel_counts(self) -> np.ndarray:
        """(V, 256) int64 pixels per class id of each view's class map."""
        return self._arrays['class_pixel_counts']

    def array(self, key: str) -> np.ndarray:
        """A whole schema array (mapped arrays are returned as read-only maps)."""
        return self._arrays[key]

    def _frame_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f'{self.path}: frame {index} out of range 0..{len(self) - 1}')
        return index % len(self)

    def _span(self, offsets_key: str, index: int) -> slice:
        offsets = self._arrays[offsets_key]
        return slice(int(offsets[index]), int(offsets[index + 1]))

    def view_span(self, index: int) -> slice:
        """The view rows (of camera_names, image_hw, ...) of frame `index`."""
        return self._span('view_offsets', self._frame_index(index))

    def camera_names(self, index: int) -> list[str]:
        """Cameras of frame `index`, its reference camera first."""
        return [str(name) for name in self._arrays['camera_names'][self.view_span(index)]]

    def points(self, index: int) -> np.ndarray:
        """(N, 4) float32 points of frame `index` (a copy)."""
        return np.array(self._arrays['points'][self._span('point_offsets', self._frame_index(index))])

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M, 7) float32 boxes, (M,) int64 classes, (M,) int64 track ids of frame `index`."""
        span = self._span('box_offsets', self._frame_index(index))
        return (self._arrays['boxes'][span].copy(), self._arrays['box_classes'][span].copy(),
                self._arrays['track_ids'][span].copy())

    def _view_row(self, index: int, view: int) -> int:
        span = self.view_span(index)
        if not 0 <= view < span.stop - span.start:
            raise IndexError(f'{self.path}: frame {index} has {span.stop - span.start} views, no view {view}')
        return span.start + view

    def _decode(self, key: str, row: int, flags: int) -> np.ndarray | None:
        span = self._span(key.replace('_png', '_offsets'), row)
        if span.stop == span.start:
            return None
        blob = np.asarray(self._arrays[key][span])
        decoded = cv2.imdecode(blob, flags)
        expected = tuple(int(v) for v in self._arrays['image_hw'][row])
        if decoded is None or decoded.shape[:2] != expected:
            raise ChunkError(f'{self.path}: {key} of view {row} does not decode to {expected} pixels')
        return decoded

    def image(self, index: int, view: int = 0) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of view `view` (0: the reference camera) of frame `index`."""
        bgr = self._decode('image_png', self._view_row(index, view), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ChunkError(f'{self.path}: frame {index} view {view} has no image')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def class_map(self, index: int, view: int = 0) -> np.ndarray | None:
        """(H, W) uint8 class ids of view `view` of frame `index`, or None when it has none."""
        return self._decode('class_map_png', self._view_row(index, view), cv2.IMREAD_UNCHANGED)

    def views(self, index: int, decode_images: bool = True) -> list[CameraView]:
        """The camera views of frame `index` (decode_images=False: image and class_map None)."""
        arrays = self._arrays
        span = self.view_span(index)
        views = []
        for view, row in enumerate(range(span.start, span.stop)):
            image, class_map = ((self.image(index, view), self.class_map(index, view)) if decode_images
                                else (None, None))
            views.append(CameraView(name=str(arrays['camera_names'][row]), image=image, class_map=class_map,
                                    camera_matrix=arrays['camera_matrix'][row].copy(),
                                    vehicle_to_camera=arrays['vehicle_to_camera'][row].copy(),
                                    timestamp_us=int(arrays['view_timestamp_us'][row])))
        return views

    def frame(self, index: int, decode_images: bool = True) -> Frame:
        """Frame `index` with its images and class maps decoded (decode_images=False: all None, for a
        caller that has them already, e.g. training.data.frame_cache)."""
        arrays = self._arrays
        index = self._frame_index(index)
        boxes, box_classes, track_ids = self.boxes(index)
        views = self.views(index, decode_images)
        first = views[0]
        return Frame(name=str(arrays['frame_names'][index]), scene=str(arrays['scene_names'][index]),
                     points=self.points(index), image=first.image, class_map=first.class_map,
                     boxes=boxes, box_classes=box_classes, track_ids=track_ids,
                     camera_matrix=first.camera_matrix, vehicle_to_camera=first.vehicle_to_camera,
                     camera_timestamp_us=int(arrays['camera_timestamp_us'][index]),
                     lidar_timestamp_us=int(arrays['lidar_timestamp_us'][index]),
                     camera_name=first.name, extra_views=tuple(views[1:]))

    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def box_class_counts(self, num_classes: int) -> np.ndarray:
        """(num_classes,) int64 boxes per detection class over the chunk."""
        classes = self._arrays['box_classes']
        return np.bincount(classes[(classes >= 0) & (classes < num_classes)],
                           minlength=num_classes).astype(np.int64)
