"""Write a synthetic data set in A2D2's on-disk layout (camera_lidar_semantic_bboxes).

    python -m training.synthetic.synthesize --out ROOT --scenes S --frames F --seed N [--workers W]
                                            [--rig front|surround]

Each scene is a street (synthetic_world) seen by real-pose cameras and LiDARs of A2D2
(config/a2d2/cams_lidars.json); frames are 0.1 s apart. The output is read by the same reader
as the real data set; boxes carry an extra `track_id`. Same seed -> byte-identical files,
whatever the number of worker processes (each scene has its own random stream, so scenes can
be written in parallel).

Rigs:
- front (default): the front-center camera and three front LiDARs (the files are unchanged
  from before the surround rig existed).
- surround: all six cameras (front_center, front_left, front_right, side_left, side_right,
  rear_center; the five non-front ones are fisheyes) and all five LiDARs over 360 degrees, in a
  street modelled all around the car. Per camera and frame: distorted image, camera JSON (its
  cam_name; cam_tstamp = frame time + a per-scene offset of that camera within +-8 ms, 0 for
  front_center, + the same small jitter as the front rig), the LiDAR points that camera sees
  (in its view frame), the label image and its label3D boxes. Frame IDs count per camera from
  a random start, 3 per written frame (30 Hz). Simplification: the geometry of all six
  cameras and of the LiDAR scan is taken at the frame time (the few ms between cameras are not
  modelled as motion).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections import Counter
from contextlib import nullcontext
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtl_perception_ros.core.boxes import box_corners
from training.data.a2d2_calibration import CAMERA_NAMES, DEFAULT_CALIBRATION_PATH, a2d2_camera, load_calibration
from training.synthetic.geometry import SceneArrays, frame_geometry
from training.synthetic.ground import GroundMap, build_ground_map
from training.synthetic.lidar import LIDAR_IDS, LidarRig, cast_rays, to_a2d2_arrays
from training.synthetic.render import CameraRig, render_camera, scene_look
from training.synthetic.shapes import CLASS_LIST_PATH
from training.synthetic.world import FRAME_PERIOD_S, Scene, generate_scene
from mtl_perception_ros.core.atomic_file import atomic_write_bytes
from training.synthetic.writer import (camera_json, frame_paths, json_bytes, label3d_json,
                                       npz_bytes, png_bytes, scene_folder_name, tai_microseconds)

MIN_VISIBLE_PX = 30        # boxes are written for road users with at least this many visible pixels
MAX_BOX_RANGE_M = 120.0
FIRST_RECORDING = datetime(2018, 8, 7, 8, 0, 0)
CAMERA_FRAMES_PER_STEP = 3  # 30 Hz camera, one frame written every 0.1 s
FRAME_ID_RANGE = 3000       # first frame IDs are drawn from [0, FRAME_ID_RANGE)
TSTAMP_JITTER_US = 200      # cam_tstamp jitter per camera and frame, +-µs
CAMERA_OFFSET_US = 8000     # surround: constant per-camera cam_tstamp offset per scene, within +-µs
RIGS = ('front', 'surround')


@dataclass
class Summary:
    scenes: list = field(default_factory=list)
    frames: int = 0
    points: int = 0       # summed over the cameras' LiDAR files
    boxes: int = 0        # summed over the cameras' label3D files
    box_classes: Counter = field(default_factory=Counter)
    bytes_written: int = 0
    seconds: float = 0.0
    stage_seconds: Counter = field(default_factory=Counter)   # scene_setup, render, lidar, encode, write

    def merge(self, other: 'Summary') -> None:
        """Add another Summary (one scene written by a worker process) to this one."""
        self.scenes += other.scenes
        self.frames += other.frames
        self.points += other.points
        self.boxes += other.boxes
        self.box_classes.update(other.box_classes)
        self.bytes_written += other.bytes_written
        self.stage_seconds.update(other.stage_seconds)

    def report(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else float('nan')
        lines = [f'wrote {self.frames} frames in {len(self.scenes)} scenes ({", ".join(self.scenes)})',
                 f'  {self.points / max(self.frames, 1):.0f} LiDAR points and {self.boxes / max(self.frames, 1):.1f} '
                 f'boxes per frame; boxes by class: {dict(sorted(self.box_classes.items()))}',
                 f'  {self.bytes_written / 1e6:.1f} MB in {self.seconds:.1f} s ({fps:.2f} frames/s)']
        if self.stage_seconds and self.frames:
            stages = ', '.join(f'{name} {seconds / self.frames * 1e3:.0f}'
                               for name, seconds in self.stage_seconds.items())
            lines.append(f'  ms per frame: {stages}')
        return '\n'.join(lines)


class _Stopwatch:
    """Adds the time spent in `with stopwatch('stage'):` blocks to a Counter."""

    def __init__(self, totals: Counter):
        self.totals, self.stage, self.started = totals, None, 0.0

    def __call__(self, stage: str) -> '_Stopwatch':
        self.stage = stage
        return self

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.totals[self.stage] += time.perf_counter() - self.started


@dataclass
class _SceneState:
    """What every frame of a scene being written needs (built by Synthesizer.write_scene)."""

    seed: int
    scene_index: int
    start: datetime              # scene start (UTC): folder and file names
    first_frame_ids: list        # per camera
    scene: Scene
    ground: GroundMap
    arrays: SceneArrays
    looks: list                  # per camera: SceneLook
    base_tstamp: int             # TAI µs of frame 0
    camera_offsets: list         # per camera: cam_tstamp - frame time, µs (before jitter)
    annotated: list              # indices of the scene's road users (objects with a 3D box)


class Synthesizer:
    """Holds the calibration-derived rigs; `write_scene` generates and writes one scene.

    rig: 'front' (front-center camera, three front LiDARs) or 'surround' (all six cameras, all
    five LiDARs over 360 degrees); see the module docstring.
    """

    def __init__(self, calibration_path=DEFAULT_CALIBRATION_PATH, rig: str = 'front'):
        if rig not in RIGS:
            raise ValueError(f'unknown rig {rig!r}; expected one of {list(RIGS)}')
        self.rig = rig
        self.calibration_path = Path(calibration_path)
        calibration = load_calibration(self.calibration_path)
        names = CAMERA_NAMES if self.surround else ('front_center',)
        self.cameras = [a2d2_camera(calibration, name, str(self.calibration_path)) for name in names]
        self.camera_rigs = [CameraRig.build(camera) for camera in self.cameras]
        self.camera, self.camera_rig = self.cameras[0], self.camera_rigs[0]     # front_center
        self.lidar_rig = (LidarRig.build_surround(calibration) if self.surround
                          else LidarRig.build(calibration, self.camera))
        # threads encoding the cameras' files of a frame (1 in worker processes: they are the parallelism)
        self.encode_threads = min(len(self.cameras), os.cpu_count() or 1)

    @property
    def surround(self) -> bool:
        return self.rig == 'surround'

    def write_root_files(self, root: Path) -> int:
        """cams_lidars.json and class_list.json, copied byte for byte."""
        size = 0
        for source, name in ((self.calibration_path, 'cams_lidars.json'), (CLASS_LIST_PATH, 'class_list.json')):
            data = Path(source).read_bytes()
            atomic_write_bytes(Path(root) / name, data)
            size += len(data)
        return size

    def write_scene(self, root: Path, seed: int, scene_index: int, frame_count: int, summary: Summary,
                    progress=None) -> str:
        """Generate scene `scene_index` of run `seed` and write its frames for every camera of the rig."""
        stopwatch = _Stopwatch(summary.stage_seconds)
        rng = np.random.default_rng([seed, scene_index])
        # scenes of one run start at distinct times on a day derived from the seed
        start = (FIRST_RECORDING + timedelta(days=int(seed) % 300, minutes=37 * scene_index)
                 + timedelta(seconds=int(rng.integers(0, 30 * 60))))
        first_frame_ids = self._first_frame_ids(rng)
        with stopwatch('scene_setup'):
            scene = generate_scene(rng, frame_count, surround=self.surround)
            ground = build_ground_map(scene.layout, scene.lighting, rng)
            arrays = SceneArrays.from_scene(scene)
            looks = [scene_look(camera_rig, arrays, scene.lighting, rng) for camera_rig in self.camera_rigs]
        base_tstamp = tai_microseconds(start) + int(rng.integers(0, 1_000_000))
        state = _SceneState(seed=seed, scene_index=scene_index, start=start, first_frame_ids=first_frame_ids,
                            scene=scene, ground=ground, arrays=arrays, looks=looks, base_tstamp=base_tstamp,
                            camera_offsets=self._camera_offsets_us(rng),
                            annotated=[index for index, obj in enumerate(scene.objects) if obj.box_class is not None])
        summary.scenes.append(scene_folder_name(start))
        threads = min(self.encode_threads, len(self.cameras))
        with ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as encoder:
            for frame in range(frame_count):
                self._write_frame(root, state, frame, summary, stopwatch, encoder)
                if progress is not None:
                    progress.update(1)
        return scene_folder_name(start)

    def _write_frame(self, root: Path, state: '_SceneState', frame: int, summary: Summary, stopwatch: '_Stopwatch',
                     encoder: 'ThreadPoolExecutor | None') -> None:
        """Render, cast, encode and write one frame of every camera of the rig."""
        frame_rng = np.random.default_rng([state.seed, state.scene_index, frame, 1])
        frame_tstamp = state.base_tstamp + int(round(frame * FRAME_PERIOD_S * 1e6))
        tstamps = [frame_tstamp + offset + int(frame_rng.integers(-TSTAMP_JITTER_US, TSTAMP_JITTER_US + 1))
                   for offset in state.camera_offsets]
        with stopwatch('render'):
            geometry = frame_geometry(state.scene, state.arrays, frame)
            views = [render_camera(camera_rig, look, state.arrays, geometry, state.ground, frame_rng)
                     for camera_rig, look in zip(self.camera_rigs, state.looks)]
        with stopwatch('lidar'):
            scan = cast_rays(self.lidar_rig, state.arrays, geometry, state.ground, frame_rng)
            # front: point times count from the camera's stamp (as always); surround: from the
            # frame time, so that a point seen by two cameras carries one timestamp
            reference = frame_tstamp if self.surround else tstamps[0]
            lidars = [to_a2d2_arrays(scan, camera, reference) for camera in self.cameras]
        with stopwatch('encode'):
            boxes = [self._boxes(state.scene, state.annotated, geometry, view, camera)
                     for view, camera in zip(views, self.cameras)]
            jobs = list(zip(views, self.cameras, tstamps, lidars, boxes))
            if encoder is None:
                files = [_camera_files(*job) for job in jobs]
            else:   # PNG and zlib release the GIL: the cameras' files encode in parallel
                files = list(encoder.map(lambda job: _camera_files(*job), jobs))
        with stopwatch('write'):
            for camera, first_frame_id, camera_files in zip(self.cameras, state.first_frame_ids, files):
                paths = frame_paths(root, state.start, first_frame_id + CAMERA_FRAMES_PER_STEP * frame, camera.name)
                for key, data in camera_files.items():
                    atomic_write_bytes(paths[key], data)
                    summary.bytes_written += len(data)
        summary.frames += 1
        summary.points += sum(len(lidar['points']) for lidar in lidars)
        summary.boxes += sum(len(camera_boxes) for camera_boxes in boxes)
        summary.box_classes.update(box['class'] for camera_boxes in boxes for box in camera_boxes.values())

    def _first_frame_ids(self, rng: np.random.Generator) -> list[int]:
        """Per camera, the ID of its first frame in the scene (distinct between cameras)."""
        if not self.surround:
            return [int(rng.integers(0, FRAME_ID_RANGE))]
        return [int(v) for v in rng.choice(FRAME_ID_RANGE, size=len(self.cameras), replace=False)]

    def _camera_offsets_us(self, rng: np.random.Generator) -> list[int]:
        """Per camera, its constant cam_tstamp offset from the frame time in this scene (µs).

        front_center is the rig's reference (0: its stamps are the frame time plus jitter, as in
        the front rig); the other cameras are a few ms off it, within +-CAMERA_OFFSET_US.
        """
        others = rng.integers(-CAMERA_OFFSET_US, CAMERA_OFFSET_US + 1, len(self.cameras) - 1) if self.surround else []
        return [0] + [int(v) for v in others]

    def _boxes(self, scene, annotated: list, geometry, rendered, camera) -> dict:
        """label3D content for the annotated road users that `camera` sees (in its view frame)."""
        to_view = camera.vehicle_to_view
        keep, truncation, occlusion = [], [], []
        for index in annotated:
            box = geometry.object_boxes[index]
            if rendered.visible_px[index] < MIN_VISIBLE_PX or np.hypot(box[0], box[1]) > MAX_BOX_RANGE_M:
                continue
            corners_x = (box_corners(box[None])[0] @ to_view[:3, :3].T + to_view[:3, 3])[:, 0]
            if corners_x.min() <= 0.5:        # corners behind the camera have no meaningful 2d_bbox
                continue
            full, own = rendered.full_px[index], rendered.own_px[index]
            keep.append(index)
            truncation.append(np.clip(1.0 - own / full, 0.0, 1.0) if full > 0 else 1.0)
            occlusion.append(np.clip(1.0 - rendered.visible_px[index] / own, 0.0, 1.0) if own > 0 else 1.0)
        objects = [scene.objects[index] for index in keep]
        return label3d_json(geometry.object_boxes[keep].reshape(-1, 7), [obj.box_class for obj in objects],
                            [obj.track_id for obj in objects], camera, np.array(truncation),
                            np.array(occlusion))


def _camera_files(view, camera, tstamp_us: int, lidar: dict, boxes: dict) -> dict:
    """Encoded bytes of one camera's five files of a frame (keys as writer.frame_paths)."""
    return {'image': png_bytes(view.image_bgr), 'label': png_bytes(view.label_bgr),
            'camera_json': json_bytes(camera_json(tstamp_us, LIDAR_IDS, camera.name)),
            'lidar': npz_bytes(lidar), 'label3d': json_bytes(boxes)}


def synthesize(out_root, scenes: int, frames: int, seed: int, show_progress: bool = True,
               workers: int = 1, rig: str = 'front') -> Summary:
    """Generate `scenes` scenes of `frames` frames under `out_root`; returns what was written.

    workers > 1: scenes are written by that many processes (same files as with one).
    rig: 'front' or 'surround' (see the module docstring).
    """
    if scenes < 1 or frames < 1:
        raise ValueError(f'need at least one scene and one frame, got scenes={scenes}, frames={frames}')
    if workers < 1:
        raise ValueError(f'--workers must be >= 1, got {workers}')
    if rig not in RIGS:
        raise ValueError(f'--rig must be one of {list(RIGS)}, got {rig!r}')
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = Summary()
    synthesizer = Synthesizer(rig=rig)
    summary.bytes_written += synthesizer.write_root_files(root)
    with tqdm(total=scenes * frames, unit='frame', disable=not show_progress, desc='synthesize') as progress:
        if workers == 1:
            for scene_index in range(scenes):
                synthesizer.write_scene(root, seed, scene_index, frames, summary, progress)
        else:
            # spawn, not fork: a child forked after OpenCV started its thread pool can deadlock
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn')) as pool:
                parts = [pool.submit(_write_scene_in_worker, root, seed, index, frames, rig)
                         for index in range(scenes)]
                for part in parts:   # in scene order, so the summary lists scenes as one process would
                    summary.merge(part.result())
                    progress.update(frames)
    summary.seconds = time.perf_counter() - started
    return summary


_WORKER_SYNTHESIZERS: dict = {}    # rig -> Synthesizer, built once per worker process


def _write_scene_in_worker(root: Path, seed: int, scene_index: int, frames: int, rig: str = 'front') -> Summary:
    if rig not in _WORKER_SYNTHESIZERS:
        import cv2
        cv2.setNumThreads(1)   # the parallelism comes from the processes
        _WORKER_SYNTHESIZERS[rig] = Synthesizer(rig=rig)
        _WORKER_SYNTHESIZERS[rig].encode_threads = 1
    part = Summary()
    _WORKER_SYNTHESIZERS[rig].write_scene(root, seed, scene_index, frames, part)
    return part


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output root (created if missing)')
    parser.add_argument('--scenes', type=int, default=2, help='number of scenes')
    parser.add_argument('--frames', type=int, default=20, help='frames per scene (0.1 s apart)')
    parser.add_argument('--seed', type=int, default=0, help='random seed; same seed -> identical files')
    parser.add_argument('--workers', type=int, default=1, help='processes writing scenes in parallel')
    parser.add_argument('--rig', choices=RIGS, default='front',
                        help='front: front-center camera only; surround: all six cameras and five LiDARs')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    summary = synthesize(args.out, args.scenes, args.frames, args.seed, show_progress=not args.no_progress,
                         workers=args.workers, rig=args.rig)
    print(summary.report())


if __name__ == '__main__':
    main()
