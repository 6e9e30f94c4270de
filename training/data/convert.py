"""Convert an A2D2 labelled set into NPZ chunks (training.data.chunks) with a manifest.

    python -m training.data.convert --root A2D2_ROOT --out CHUNK_DIR [--frames-per-chunk 32]
        [--val-fraction 0.2 | --val-scenes SCENE ...] [--test-fraction 0.2 | --test-scenes SCENE ...]
        [--seed 0] [--workers 1] [--cameras front_center | all | NAME ...] [--group-tolerance-ms 20]

- Train / validation / test split BY SCENE (no scene in two splits), deterministic: the scenes
  are shuffled with --seed and taken into validation until it holds --val-fraction of the
  frames, then (the same shuffle, on) into test until it holds --test-fraction; --val-scenes /
  --test-scenes name them instead. At least one scene always stays for training. Validation is
  for choices (best checkpoint, tuning); test only for the figures you report.
- Cameras: --cameras names the A2D2 cameras to read (default front_center; `all`: every camera
  of the set); the first is the reference camera whose frames are the frames, the others join
  by cam_tstamp within --group-tolerance-ms (training.data.a2d2_reader).
- Scenes are processed in name order, frames in ID order; each split is cut into chunks of
  --frames-per-chunk listed frames: CHUNK_DIR/train_0000.npz, ..., val_0000.npz, test_0000.npz ... A chunk
  holds fewer frames when some fail to read (bad files are skipped and counted, never fatal).
- Resumable: a chunk already on disk is kept when the manifest has an entry for it with the
  same fingerprint (root, frame list, label sets, calibration, chunk version), the same size
  and it opens as a chunk with the recorded frame count; anything else is (re)written. A chunk
  just written is read back from disk and checked against its members' CRC-32 before it counts.
- CHUNK_DIR/manifest.json (written atomically after every chunk; `complete` at the end):
    manifest_version, chunk_version, root, settings {frames_per_chunk, val_fraction,
    val_scenes, test_fraction, test_scenes, seed, keep_frames_without_boxes, cameras,
    group_tolerance_us},
    semantic_classes / box_classes (label sets with their A2D2 source names),
    scenes {scene: {split, frames (listed)}},
    chunks [{file, split, index, listed, frames, scenes, fingerprint, bytes, stats,
             class_pixel_counts (K), ignored_pixels, box_class_counts (C), objects}],
    splits {train|val|test: {chunks, frames, scenes, class_pixel_counts, ignored_pixels,
            box_class_counts, object_counts (C), untracked_boxes}}  (train's counts are the
            ones for class weights; object_counts = distinct objects (scene, track ID) per class,
            untracked_boxes = boxes without a track ID, which no object count includes),
    report (ReadStats: frames read, skipped / degraded by reason, dropped boxes, examples;
            files missing at listing time included), grouping (per camera other than the
            reference one: grouped, frames_without_this_camera, left_over,
            unreadable_camera_json), notes, complete.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.a2d2_calibration import CAMERA_NAMES
from training.data.a2d2_reader import (ALL_CAMERAS, DEFAULT_CAMERAS, GROUP_TOLERANCE_US, A2D2Reader, FrameFiles,
                                       ReadStats)
from mtl_perception_ros.core.atomic_file import atomic_write_json
from training.data.chunks import CHUNK_VERSION, ChunkError, ChunkReader, write_chunk
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
from training.data.manifest import MANIFEST_NAME, SPLITS, load_manifest

MANIFEST_VERSION = 1
CHUNK_FILE = re.compile(r'^(train|val|test)_\d{4,}\.npz$')   # SPLITS' chunk files


@dataclass
class ChunkJob:
    """One chunk to write: its listed frames (some may still fail to read)."""

    split: str
    index: int
    files: list[FrameFiles]
    fingerprint: str

    @property
    def file_name(self) -> str:
        return f'{self.split}_{self.index:04d}.npz'


def split_scenes(frame_counts: dict[str, int], val_fraction: float = 0.2,
                 val_scenes: list[str] | None = None, seed: int = 0, test_fraction: float = 0.0,
                 test_scenes: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(train scenes, val scenes, test scenes), each sorted; deterministic in its arguments.

    Named scenes (`val_scenes`, `test_scenes`) go to their split. A split not named is filled from
    the scenes left, shuffled with `seed`: validation first, until it holds `val_fraction` of all
    frames, then test until it holds `test_fraction`, always keeping at least one scene for training.
    """
    scenes = sorted(frame_counts)
    for name, named in (('--val-scenes', val_scenes), ('--test-scenes', test_scenes)):
        unknown = sorted(set(named or ()) - set(scenes))
        if unknown:
            raise ValueError(f'{name} {unknown} are not scenes with frames; scenes: {scenes}')
    both = sorted(set(val_scenes or ()) & set(test_scenes or ()))
    if both:
        raise ValueError(f'scenes {both} are named for both validation and test')
    for name, fraction in (('--val-fraction', val_fraction), ('--test-fraction', test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f'{name} must be in [0, 1), got {fraction}')
    total = sum(frame_counts.values())
    taken = set(val_scenes or ()) | set(test_scenes or ())
    order = [scenes[i] for i in np.random.default_rng(seed).permutation(len(scenes)) if scenes[i] not in taken]
    chosen = {}
    for split, named, fraction in (('val', val_scenes, val_fraction), ('test', test_scenes, test_fraction)):
        if named is not None:
            chosen[split] = sorted(set(named))
            continue
        picked, frames, target = [], 0, fraction * total
        while order and frames < target and len(taken) + 1 < len(scenes):
            scene = order.pop(0)
            picked.append(scene)
            taken.add(scene)
            frames += frame_counts[scene]
        chosen[split] = sorted(picked)
    train = [scene for scene in scenes if scene not in taken]
    return train, chosen['val'], chosen['test']


def _file_sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _settings_key(reader: A2D2Reader) -> str:
    """What, besides the frame list, decides a chunk's contents."""
    return json.dumps({
        'root': str(reader.root.resolve()),   # another set may reuse scene names and IDs
        'chunk_version': CHUNK_VERSION,
        'semantic_classes': reader.semantic.to_dict(),
        'box_classes': reader.box_mapping.to_dict(),
        'keep_frames_without_boxes': reader.keep_frames_without_boxes,
        'cameras': reader.camera_names, 'group_tolerance_us': reader.group_tolerance_us,
        'calibration_sha1': _file_sha1(reader.calibration_path),
        'class_list_sha1': _file_sha1(reader.class_list_path),
    }, sort_keys=True)


def plan_chunks(reader: A2D2Reader, frames_per_chunk: int, val_fraction: float,
                val_scenes: list[str] | None, seed: int, test_fraction: float = 0.0,
                test_scenes: list[str] | None = None):
    """Listing only (no file is read): (jobs, {scene: split}, {scene: usable frames}, listing stats)."""
    if frames_per_chunk < 1:
        raise ValueError(f'--frames-per-chunk must be >= 1, got {frames_per_chunk}')
    listing = ReadStats()
    usable: dict[str, list[FrameFiles]] = {}
    for scene in reader.scenes:
        usable[scene] = []
        for files in reader.frame_files(scene):
            reason = reader.missing_reason(files)
            if reason is None:
                usable[scene].append(files)
            else:
                listing.skip(reason, files.name)
    counts = {scene: len(files) for scene, files in usable.items() if files}
    scenes_of = dict(zip(SPLITS, split_scenes(counts, val_fraction, val_scenes, seed, test_fraction, test_scenes)))
    settings = _settings_key(reader)
    jobs = []
    for split, scenes in scenes_of.items():
        files = [f for scene in scenes for f in usable[scene]]
        for index, start in enumerate(range(0, len(files), frames_per_chunk)):
            part = files[start:start + frames_per_chunk]
            digest = hashlib.sha1(settings.encode())
            digest.update('\n'.join(f.name for f in part).encode())
            jobs.append(ChunkJob(split, index, part, digest.hexdigest()))
    scene_split = {scene: split for split, scenes in scenes_of.items() for scene in scenes}
    return jobs, scene_split, counts, listing


def _convert_chunk(reader: A2D2Reader, job: ChunkJob, out_dir: Path) -> dict:
    """Read the job's frames, write its chunk, return its manifest entry."""
    stats = ReadStats()
    frames = (reader.load(files, stats) for files in job.files)
    path = write_chunk(out_dir / job.file_name, (frame for frame in frames if frame is not None))
    try:   # re-read from disk: a chunk is kept only when every member matches its checksum
        chunk = ChunkReader(path, verify=True)   # and the counts come from the file as written
    except ChunkError as error:
        path.unlink(missing_ok=True)
        raise ChunkError(f'the chunk just written does not read back, so it was removed (disk or memory '
                         f'fault?): {error}') from None
    num_classes, num_box_classes = len(reader.semantic.label_set), len(reader.box_mapping.label_set)
    pixel_counts = chunk.class_pixel_counts.sum(axis=0)
    offsets = chunk.array('box_offsets')
    box_scenes = np.repeat(np.asarray(chunk.scene_names), np.diff(offsets))
    classes, track_ids = chunk.array('box_classes'), chunk.array('track_ids')
    tracked = track_ids >= 0
    objects = sorted({(str(scene), int(track), int(cls)) for scene, track, cls
                      in zip(box_scenes[tracked], track_ids[tracked], classes[tracked])})
    return {'file': job.file_name, 'split': job.split, 'index': job.index,
            'listed': len(job.files), 'frames': len(chunk),
            'scenes': sorted({f.scene for f in job.files}),
            'fingerprint': job.fingerprint, 'bytes': path.stat().st_size,
            'stats': stats.to_dict(),
            'class_pixel_counts': pixel_counts[:num_classes].tolist(),
            'ignored_pixels': int(pixel_counts[num_classes:].sum()),
            'box_class_counts': chunk.box_class_counts(num_box_classes).tolist(),
            # distinct (scene, track ID, class) of the chunk; a scene's objects span its chunks
            'objects': [list(obj) for obj in objects], 'untracked_boxes': int((~tracked).sum())}


def chunk_is_complete(out_dir: Path, job: ChunkJob, entry: dict | None) -> bool:
    """A chunk on disk matches its manifest entry (fingerprint, size, opens, frame count)."""
    if not entry or entry.get('fingerprint') != job.fingerprint or entry.get('file') != job.file_name:
        return False
    path = out_dir / job.file_name
    try:
        if path.stat().st_size != entry.get('bytes'):
            return False
        return len(ChunkReader(path)) == entry.get('frames')
    except (OSError, ChunkError):
        return False


def _split_summary(entries: list[dict], split: str, scenes: list[str], num_classes: int,
                   num_box_classes: int) -> dict:
    entries = [e for e in entries if e['split'] == split]
    pixels = np.zeros(num_classes, dtype=np.int64)
    boxes = np.zeros(num_box_classes, dtype=np.int64)
    objects = set()
    for entry in entries:
        pixels += np.asarray(entry['class_pixel_counts'], dtype=np.int64)
        boxes += np.asarray(entry['box_class_counts'], dtype=np.int64)
        objects.update(map(tuple, entry.get('objects', [])))
    object_counts = np.zeros(num_box_classes, dtype=np.int64)
    for _, _, cls in objects:
        if 0 <= cls < num_box_classes:
            object_counts[cls] += 1
    return {'chunks': len(entries), 'frames': sum(e['frames'] for e in entries), 'scenes': scenes,
            'class_pixel_counts': pixels.tolist(),
            'ignored_pixels': sum(e['ignored_pixels'] for e in entries),
            'box_class_counts': boxes.tolist(), 'object_counts': object_counts.tolist(),
            'untracked_boxes': sum(e.get('untracked_boxes', 0) for e in entries)}


_WORKER_READER: A2D2Reader | None = None


def _init_worker(reader_args: dict) -> None:
    global _WORKER_READER
    import cv2
    cv2.setNumThreads(1)   # parallelism comes from the processes
    _WORKER_READER = A2D2Reader(**reader_args)


def _worker_convert(job: ChunkJob, out_dir: Path) -> dict:
    return _convert_chunk(_WORKER_READER, job, out_dir)


def convert(root, out_dir, frames_per_chunk: int = 32, val_fraction: float = 0.2,
            val_scenes: list[str] | None = None, seed: int = 0, workers: int = 1,
            semantic_classes=DEFAULT_SEMANTIC_CLASSES, box_classes=DEFAULT_BOX_CLASSES,
            keep_frames_without_boxes: bool | None = None, progress: bool = True,
            test_fraction: float = 0.2, test_scenes: list[str] | None = None,
            cameras=DEFAULT_CAMERAS, group_tolerance_us: int = GROUP_TOLERANCE_US) -> dict:
    """Convert (or finish converting) `root` into chunks in `out_dir`; returns the manifest."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reader_args = dict(root=str(root), semantic_classes=str(semantic_classes),
                       box_classes=str(box_classes), keep_frames_without_boxes=keep_frames_without_boxes,
                       cameras=cameras if isinstance(cameras, str) else list(cameras),
                       group_tolerance_us=int(group_tolerance_us))
    reader = A2D2Reader(**reader_args)
    jobs, scene_split, scene_frames, listing = plan_chunks(reader, frames_per_chunk, val_fraction,
                                                           val_scenes, seed, test_fraction, test_scenes)
    num_classes, num_box_classes = len(reader.semantic.label_set), len(reader.box_mapping.label_set)
    previous = load_manifest(out_dir) or {}
    old_entries = {e.get('file'): e for e in previous.get('chunks', []) if isinstance(e, dict)}
    planned = {job.file_name for job in jobs}
    for stale in sorted(set(old_entries) - planned):   # our own chunks from an earlier plan
        if isinstance(stale, str) and CHUNK_FILE.match(stale) and (out_dir / stale).is_file():
            (out_dir / stale).unlink()

    manifest = {
        'manifest_version': MANIFEST_VERSION, 'chunk_version': CHUNK_VERSION,
        'root': str(Path(root).resolve()),
        'settings': {'frames_per_chunk': frames_per_chunk,
                     'val_fraction': None if val_scenes is not None else val_fraction,
                     'val_scenes': val_scenes,
                     'test_fraction': None if test_scenes is not None else test_fraction,
                     'test_scenes': test_scenes, 'seed': seed,
                     'keep_frames_without_boxes': reader.keep_frames_without_boxes,
                     'cameras': reader.camera_names, 'group_tolerance_us': reader.group_tolerance_us},
        'semantic_classes': reader.semantic.to_dict(),
        'box_classes': reader.box_mapping.to_dict(),
        'scenes': {scene: {'split': scene_split[scene], 'frames': scene_frames[scene]}
                   for scene in sorted(scene_split)},
        'chunks': [], 'splits': {}, 'report': {}, 'grouping': reader.grouping_report(),
        'notes': list(reader.notes), 'complete': False,
    }
    entries: dict[str, dict] = {}

    def save(complete: bool) -> None:
        chunks = [entries[job.file_name] for job in jobs if job.file_name in entries]
        report = ReadStats()
        report.merge(listing)
        for entry in chunks:
            report.merge(ReadStats.from_dict(entry['stats']))
        manifest['chunks'] = chunks
        manifest['splits'] = {split: _split_summary(chunks, split, sorted(s for s, v in scene_split.items()
                                                                          if v == split),
                                                    num_classes, num_box_classes) for split in SPLITS}
        manifest['report'] = report.to_dict()
        manifest['complete'] = complete
        atomic_write_json(out_dir / MANIFEST_NAME, manifest)

    todo = []
    for job in jobs:
        if chunk_is_complete(out_dir, job, old_entries.get(job.file_name)):
            entries[job.file_name] = old_entries[job.file_name]
        else:
            todo.append(job)
    save(complete=not todo)
    total = sum(len(job.files) for job in jobs)
    done = sum(len(job.files) for job in jobs if job.file_name in entries)
    with tqdm(total=total, initial=done, unit='frame', desc='A2D2 -> chunks', disable=not progress) as bar:
        if workers <= 1:
            for job in todo:
                entries[job.file_name] = _convert_chunk(reader, job, out_dir)
                save(complete=False)
                bar.update(len(job.files))
        else:
            # spawn, not fork: a child forked after OpenCV started its thread pool can deadlock.
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'),
                                     initializer=_init_worker, initargs=(reader_args,)) as pool:
                futures = {pool.submit(_worker_convert, job, out_dir): job for job in todo}
                for future in as_completed(futures):
                    job = futures[future]
                    entries[job.file_name] = future.result()
                    save(complete=False)
                    bar.update(len(job.files))
    save(complete=True)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.data.convert', description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', required=True, help='A2D2 set folder (holds cams_lidars.json and scenes)')
    parser.add_argument('--out', required=True, help='chunk folder (created; resumed when it has a manifest)')
    parser.add_argument('--frames-per-chunk', type=int, default=32)
    split = parser.add_mutually_exclusive_group()
    split.add_argument('--val-fraction', type=float, default=0.2,
                       help='fraction of frames, taken by whole scenes, for validation')
    split.add_argument('--val-scenes', nargs='+', default=None, help='scene folders for validation')
    test = parser.add_mutually_exclusive_group()
    test.add_argument('--test-fraction', type=float, default=0.2,
                      help='fraction of frames, taken by whole scenes, for test (0: no test split)')
    test.add_argument('--test-scenes', nargs='+', default=None, help='scene folders for test')
    parser.add_argument('--seed', type=int, default=0, help='seed of the scene shuffle for the fractions')
    parser.add_argument('--workers', type=int, default=1, help='processes converting chunks in parallel')
    parser.add_argument('--semantic-classes', default=str(DEFAULT_SEMANTIC_CLASSES))
    parser.add_argument('--box-classes', default=str(DEFAULT_BOX_CLASSES))
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument('--keep-frames-without-boxes', dest='keep_frames_without_boxes',
                       action='store_true', default=None,
                       help='keep frames without label3D (empty boxes); default: only when no scene has label3D')
    boxes.add_argument('--skip-frames-without-boxes', dest='keep_frames_without_boxes', action='store_false',
                       help='skip frames without label3D even in a set without 3D boxes')
    parser.add_argument('--cameras', nargs='+', default=list(DEFAULT_CAMERAS),
                        help=f'A2D2 cameras to read, the reference camera first, or `{ALL_CAMERAS}` '
                             f'(from {", ".join(CAMERA_NAMES)})')
    parser.add_argument('--group-tolerance-ms', type=float, default=GROUP_TOLERANCE_US / 1000,
                        help="how far another camera's cam_tstamp may be from the reference camera's")
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        manifest = convert(args.root, args.out, args.frames_per_chunk, args.val_fraction, args.val_scenes,
                           args.seed, args.workers, args.semantic_classes, args.box_classes,
                           args.keep_frames_without_boxes, progress=not args.no_progress,
                           test_fraction=args.test_fraction, test_scenes=args.test_scenes,
                           cameras=args.cameras[0] if args.cameras == [ALL_CAMERAS] else args.cameras,
                           group_tolerance_us=int(round(args.group_tolerance_ms * 1000)))
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    report = ReadStats.from_dict(manifest['report'])
    print(report.summary())
    for split in SPLITS:
        summary = manifest['splits'][split]
        objects = ', '.join(f'{name} {count}' for name, count
                            in zip(manifest['box_classes']['names'], summary['object_counts']))
        untracked = f', {summary["untracked_boxes"]} boxes without a track ID' if summary['untracked_boxes'] else ''
        print(f'{split}: {summary["frames"]} frames in {summary["chunks"]} chunks from '
              f'{len(summary["scenes"])} scenes; distinct objects: {objects}{untracked}')
    for camera, counts in manifest['grouping'].items():
        print(f'{camera}: {counts["grouped"]} frames grouped, {counts["frames_without_this_camera"]} frames '
              f'without it, {counts["left_over"]} of its frames in no group, '
              f'{counts["unreadable_camera_json"]} camera JSONs without a readable cam_tstamp')
    for note in manifest['notes']:
        print(f'note: {note}')
    print(f'manifest: {Path(args.out) / MANIFEST_NAME}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
