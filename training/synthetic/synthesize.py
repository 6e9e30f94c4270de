"""Write a synthetic data set in A2D2's on-disk layout (camera_lidar_semantic_bboxes, front center).

    python -m training.synthetic.synthesize --out ROOT --scenes S --frames F --seed N [--workers W]

Each scene is a street (synthetic_world) seen by the real front-center camera and three
real-pose LiDARs of A2D2 (config/a2d2/cams_lidars.json); frames are 0.1 s apart. The output
is read by the same reader as the real data set; boxes carry an extra `track_id`. Same seed ->
byte-identical files, whatever the number of worker processes (each scene has its own random
stream, so scenes can be written in parallel).
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtl_perception_ros.core.boxes import box_corners
from training.data.a2d2_calibration import DEFAULT_CALIBRATION_PATH, front_center_camera, load_calibration
from training.synthetic.geometry import SceneArrays, frame_geometry
from training.synthetic.ground import build_ground_map
from training.synthetic.lidar import LIDAR_IDS, LidarRig, cast_rays, to_a2d2_arrays
from training.synthetic.render import CameraRig, render_camera, scene_look
from training.synthetic.shapes import CLASS_LIST_PATH
from training.synthetic.world import FRAME_PERIOD_S, generate_scene
from mtl_perception_ros.core.atomic_file import atomic_write_bytes
from training.synthetic.writer import (camera_json, frame_paths, json_bytes, label3d_json,
                                       npz_bytes, png_bytes, scene_folder_name, tai_microseconds)

MIN_VISIBLE_PX = 30        # boxes are written for road users with at least this many visible pixels
MAX_BOX_RANGE_M = 120.0
FIRST_RECORDING = datetime(2018, 8, 7, 8, 0, 0)
CAMERA_FRAMES_PER_STEP = 3  # 30 Hz camera, one frame written every 0.1 s


@dataclass
class Summary:
    scenes: list = field(default_factory=list)
    frames: int = 0
    points: int = 0
    boxes: int = 0
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


class Synthesizer:
    """Holds the calibration-derived rigs; `write_scene` generates and writes one scene."""

    def __init__(self, calibration_path=DEFAULT_CALIBRATION_PATH):
        self.calibration_path = Path(calibration_path)
        calibration = load_calibration(self.calibration_path)
        self.camera = front_center_camera(calibration, str(self.calibration_path))
        self.camera_rig = CameraRig.build(self.camera)
        self.lidar_rig = LidarRig.build(calibration, self.camera)

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
        stopwatch = _Stopwatch(summary.stage_seconds)
        rng = np.random.default_rng([seed, scene_index])
        # scenes of one run start at distinct times on a day derived from the seed
        start = (FIRST_RECORDING + timedelta(days=int(seed) % 300, minutes=37 * scene_index)
                 + timedelta(seconds=int(rng.integers(0, 30 * 60))))
        first_frame_id = int(rng.integers(0, 3000))
        with stopwatch('scene_setup'):
            scene = generate_scene(rng, frame_count)
            ground = build_ground_map(scene.layout, scene.lighting, rng)
            arrays = SceneArrays.from_scene(scene)
            look = scene_look(self.camera_rig, arrays, scene.lighting, rng)
        base_tstamp = tai_microseconds(start) + int(rng.integers(0, 1_000_000))
        summary.scenes.append(scene_folder_name(start))
        annotated = [index for index, obj in enumerate(scene.objects) if obj.box_class is not None]
        for frame in range(frame_count):
            frame_rng = np.random.default_rng([seed, scene_index, frame, 1])
            frame_id = first_frame_id + CAMERA_FRAMES_PER_STEP * frame
            tstamp = base_tstamp + int(round(frame * FRAME_PERIOD_S * 1e6)) + int(frame_rng.integers(-200, 201))
            with stopwatch('render'):
                geometry = frame_geometry(scene, arrays, frame)
                rendered = render_camera(self.camera_rig, look, arrays, geometry, ground, frame_rng)
            with stopwatch('lidar'):
                scan = cast_rays(self.lidar_rig, arrays, geometry, ground, frame_rng)
                lidar = to_a2d2_arrays(scan, self.camera, tstamp)
            with stopwatch('encode'):
                boxes = self._boxes(scene, annotated, geometry, rendered)
                files = {'image': png_bytes(rendered.image_bgr), 'label': png_bytes(rendered.label_bgr),
                         'camera_json': json_bytes(camera_json(tstamp, LIDAR_IDS)), 'lidar': npz_bytes(lidar),
                         'label3d': json_bytes(boxes)}
            with stopwatch('write'):
                paths = frame_paths(root, start, frame_id)
                for key, data in files.items():
                    atomic_write_bytes(paths[key], data)
                    summary.bytes_written += len(data)
            summary.frames += 1
            summary.points += len(lidar['points'])
            summary.boxes += len(boxes)
            summary.box_classes.update(box['class'] for box in boxes.values())
            if progress is not None:
                progress.update(1)
        return scene_folder_name(start)

    def _boxes(self, scene, annotated: list, geometry, rendered) -> dict:
        """label3D content for the annotated road users that the camera sees."""
        to_view = self.camera.vehicle_to_view
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
                            [obj.track_id for obj in objects], self.camera, np.array(truncation),
                            np.array(occlusion))


def synthesize(out_root, scenes: int, frames: int, seed: int, show_progress: bool = True,
               workers: int = 1) -> Summary:
    """Generate `scenes` scenes of `frames` frames under `out_root`; returns what was written.

    workers > 1: scenes are written by that many processes (same files as with one).
    """
    if scenes < 1 or frames < 1:
        raise ValueError(f'need at least one scene and one frame, got scenes={scenes}, frames={frames}')
    if workers < 1:
        raise ValueError(f'--workers must be >= 1, got {workers}')
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = Summary()
    synthesizer = Synthesizer()
    summary.bytes_written += synthesizer.write_root_files(root)
    with tqdm(total=scenes * frames, unit='frame', disable=not show_progress, desc='synthesize') as progress:
        if workers == 1:
            for scene_index in range(scenes):
                synthesizer.write_scene(root, seed, scene_index, frames, summary, progress)
        else:
            # spawn, not fork: a child forked after OpenCV started its thread pool can deadlock
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn')) as pool:
                parts = [pool.submit(_write_scene_in_worker, root, seed, index, frames) for index in range(scenes)]
                for part in parts:   # in scene order, so the summary lists scenes as one process would
                    summary.merge(part.result())
                    progress.update(frames)
    summary.seconds = time.perf_counter() - started
    return summary


_WORKER_SYNTHESIZER: 'Synthesizer | None' = None


def _write_scene_in_worker(root: Path, seed: int, scene_index: int, frames: int) -> Summary:
    global _WORKER_SYNTHESIZER
    if _WORKER_SYNTHESIZER is None:
        import cv2
        cv2.setNumThreads(1)   # the parallelism comes from the processes
        _WORKER_SYNTHESIZER = Synthesizer()
    part = Summary()
    _WORKER_SYNTHESIZER.write_scene(root, seed, scene_index, frames, part)
    return part


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output root (created if missing)')
    parser.add_argument('--scenes', type=int, default=2, help='number of scenes')
    parser.add_argument('--frames', type=int, default=20, help='frames per scene (0.1 s apart)')
    parser.add_argument('--seed', type=int, default=0, help='random seed; same seed -> identical files')
    parser.add_argument('--workers', type=int, default=1, help='processes writing scenes in parallel')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    summary = synthesize(args.out, args.scenes, args.frames, args.seed, show_progress=not args.no_progress,
                         workers=args.workers)
    print(summary.report())


if __name__ == '__main__':
    main()
