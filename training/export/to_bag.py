"""Chunks -> rosbag2: replay the data set to the node as a vehicle would send it.

    python -m training.export.to_bag --chunks CHUNK_DIR [--split val] --out BAG_DIR
        [--storage sqlite3|mcap] [--scenes SCENE ...] [--max-frames N] [--scene-gap S] [--overwrite]

CHUNK_DIR is a chunk folder (training.data.convert's layout; `--split train|val|all` picks its files,
default val) or one chunk .npz file. Topics, types, frames and QoS are those of
mtl_perception_ros.bags.topics (its docstring is the reference): /points, /image, /camera_info,
/tf_static, /gt/detections, /gt/semantic. The bag is rosbag2 metadata version 8: `ros2 bag play`
on Humble and later, and `mtl_bag_play` here, play it.

Timing: frames of a scene play in LiDAR-stamp order (frame name order when stamps are unknown).
- LiDAR stamps are the recorded `lidar_timestamp_us` when every frame of the scene has one and
  they increase; otherwise frames are 0.1 s apart (10 Hz).
- Camera stamps keep the recorded offset `camera_timestamp_us - lidar_timestamp_us` when both
  are known, else equal the LiDAR stamp.
- The first scene keeps its recorded times (a synthetic first scene starts at
  `SYNTHETIC_START_NS`); each later scene is shifted to start `--scene-gap` seconds (default
  0.2) after the previous one ended, since A2D2 scenes lie minutes to days apart. The default
  stays below the node's `camera_timeout_s` (0.5 s) at rate 1, so the first cloud of a scene is
  still fused with its image. metadata.yaml's custom_data `mtl_perception.scenes` lists each
  scene's shift (bag stamp = recorded stamp + shift_ns).
- Receive timestamps equal header stamps; messages are stored in time order.

Cameras: chunks of the front-center camera alone give the one-camera layout (/camera/...); chunks
with other or several cameras (a surround rig) give per-camera topics (bags.topics.camera_topics:
/front_left/image_raw, /front_left/camera_info, /gt/front_left/semantic, frame front_left_optical),
each view stamped with its own recorded offset from the LiDAR, and custom_data
`mtl_perception.cameras` naming them; the node reads them with `cameras` set to those names.

custom_data also holds `mtl_perception.box_classes` / `.semantic_classes` (JSON name lists: the
class ids of /gt/semantic and the names in /gt/detections) and the source.
The bag is written into a temporary folder beside BAG_DIR and renamed into place when complete.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_perception_ros.bags import topics as bt
from mtl_perception_ros.bags.qos import GROUND_TRUTH_QOS, LATCHED_QOS, SENSOR_QOS
from mtl_perception_ros.bags.typestore import bag_message, serialize
from mtl_perception_ros.bags.writer import STORAGE_PLUGINS, BagWriter
from mtl_perception_ros.core.camera import invert_rigid
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.messages.camera_info import undistorted_camera_info
from mtl_perception_ros.messages.compressed_image import rgb_to_compressed_image
from mtl_perception_ros.messages.image import mono8_to_image, rgb_to_image
from mtl_perception_ros.messages.outputs import detection2d_array
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2
from mtl_perception_ros.messages.stamps import header_msg
from mtl_perception_ros.messages.transforms import transform_stamped
from training.data.a2d2_calibration import in_rig_order
from training.data.chunks import V1_CAMERA, ChunkReader
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
from training.data.manifest import SPLITS

LIDAR_PERIOD_NS = 100_000_000                   # 10 Hz when stamps are unknown
SCENE_GAP_S = 0.2                               # < the node's camera_timeout_s (0.5 s)
SYNTHETIC_START_NS = 1_600_000_000_000_000_000  # 2020-09-13: a plausible wall-clock time, not 0
CUSTOM_PREFIX = 'mtl_perception.'


@dataclass
class FrameRef:
    """Where a frame lives and its recorded stamps (TAI us, -1 unknown)."""

    chunk: Path
    index: int
    scene: str
    name: str
    lidar_us: int
    camera_us: int


@dataclass
class ScenePlan:
    """A scene's frames in play order with their bag stamps (ns)."""

    scene: str
    frames: list
    lidar_ns: np.ndarray
    camera_ns: np.ndarray
    timing: str          # 'recorded' or 'synthetic (10 Hz)'
    shift_ns: int        # bag stamp - recorded stamp ('recorded' timing), else 0


def chunk_files(chunks, split: str = 'val') -> tuple[list[Path], LabelSet, LabelSet]:
    """(chunk files, detection labels, semantic labels) of a chunk folder's split ('all' = every split)
    or of one .npz file (labels from its folder's manifest, else config/a2d2/)."""
    from training.engine.data_loading import read_chunk_folder

    path = Path(chunks)
    if path.is_file():
        try:
            folder = read_chunk_folder(path.parent, splits=())
            detection, semantic = folder.detection_labels, folder.semantic_labels
        except (FileNotFoundError, ValueError):
            detection, semantic = LabelSet.from_yaml(DEFAULT_BOX_CLASSES), LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
        return [path], detection, semantic
    splits = SPLITS if split == 'all' else (split,)
    folder = read_chunk_folder(path, splits=splits)
    files = [f for s in splits for f in folder.files[s]]
    if not files:
        raise FileNotFoundError(f'{path}: no chunk files of split {split!r} (expected {splits[0]}_*.npz '
                                'or manifest.json entries)')
    return files, folder.detection_labels, folder.semantic_labels


def plan_frames(files, scenes=None, max_frames: int | None = None) -> dict[str, list[FrameRef]]:
    """{scene: frames in play order} over `files`, restricted to `scenes` and `max_frames` per scene."""
    by_scene: dict[str, list[FrameRef]] = {}
    for path in files:
        reader = ChunkReader(path)
        lidar, camera = reader.array('lidar_timestamp_us'), reader.array('camera_timestamp_us')
        for i, (scene, name) in enumerate(zip(reader.scene_names, reader.frame_names)):
            if scenes is None or scene in scenes:
                ref = FrameRef(Path(path), i, scene, name, int(lidar[i]), int(camera[i]))
                by_scene.setdefault(scene, []).append(ref)
    if scenes is not None:
        missing = sorted(set(scenes) - set(by_scene))
        if missing:
            raise ValueError(f'scenes {missing} are not in {[str(f) for f in files]}; '
                             f'they have {sorted(by_scene) or "no frames"}')
    for scene, refs in by_scene.items():
        recorded = all(r.lidar_us >= 0 for r in refs)
        refs.sort(key=(lambda r: (r.lidar_us, r.name)) if recorded else (lambda r: r.name))
        if max_frames is not None:
            del refs[max_frames:]
    return {scene: by_scene[scene] for scene in sorted(by_scene)}


def scene_timeline(refs: list[FrameRef], start_ns: int | None) -> ScenePlan:
    """Bag stamps of a scene's frames (rules in the module doc); `start_ns` None keeps recorded times."""
    lidar_us = np.array([r.lidar_us for r in refs], dtype=np.int64)
    camera_us = np.array([r.camera_us for r in refs], dtype=np.int64)
    recorded = bool(len(refs)) and bool((lidar_us >= 0).all()) and bool((np.diff(lidar_us) > 0).all())
    if recorded:
        lidar_ns = lidar_us * 1000
        offset_ns = np.where(camera_us >= 0, camera_us * 1000 - lidar_ns, 0)
        shift = 0 if start_ns is None else int(start_ns - lidar_ns[0] + max(0, -int(offset_ns.min())))
        lidar_ns = lidar_ns + shift
        timing = 'recorded'
    else:
        base = SYNTHETIC_START_NS if start_ns is None else int(start_ns)
        lidar_ns = base + LIDAR_PERIOD_NS * np.arange(len(refs), dtype=np.int64)
        offset_ns = np.zeros(len(refs), dtype=np.int64)
        shift, timing = 0, 'synthetic (10 Hz)'
    return ScenePlan(refs[0].scene if refs else '', refs, lidar_ns, lidar_ns + offset_ns, timing, shift)


def plan_timeline(by_scene: dict[str, list[FrameRef]], scene_gap_s: float = SCENE_GAP_S) -> list[ScenePlan]:
    """ScenePlans in play order, each later scene starting `scene_gap_s` after the previous one ends."""
    if scene_gap_s < 0:
        raise ValueError(f'scene gap must be >= 0 s, got {scene_gap_s}')
    plans, start_ns = [], None
    for refs in by_scene.values():
        plan = scene_timeline(refs, start_ns)
        plans.append(plan)
        end = int(max(plan.lidar_ns.max(), plan.camera_ns.max()))
        start_ns = end + int(round(scene_gap_s * 1e9))
    return plans


def bag_cameras(files) -> list[str] | None:
    """The cameras of the chunks in rig order, or None when they hold the front-center camera alone
    (the one-camera layout)."""
    names = set()
    for path in files:
        names.update(str(name) for name in ChunkReader(path).array('camera_names'))
    return None if names <= {V1_CAMERA} else in_rig_order(names)


def _views_and_topics(frame, cameras: list[str] | None):
    """(CameraView, bags.topics.CameraTopics) of the frame's views that go into the bag: the first
    one on the one-camera topics (`cameras` None), else each view on its own camera's topics."""
    if cameras is None:
        return [(frame.views[0], bt.camera_topics(None))]
    return [(view, bt.camera_topics(view.name)) for view in frame.views]


def frame_messages(frame, class_names, lidar_ns: int, camera_ns: int, compressed: bool = False,
                   cameras: list[str] | None = None) -> list[tuple[int, str, object]]:
    """(receive time ns, topic, rosbags message) of one chunk Frame (no /tf_static); `compressed`:
    images as JPEG on the compressed topics; `cameras` None: the one-camera layout, else per-camera
    topics (each view at camera_ns plus its recorded offset from the frame's first camera)."""
    points = np.asarray(frame.points, dtype=np.float32).copy()
    points[:, 3] *= np.float32(bt.INTENSITY_SCALE_IN_BAG)
    boxes = np.asarray(frame.boxes, dtype=np.float64).reshape(-1, 7)
    lidar_header = header_msg(lidar_ns, bt.VEHICLE_FRAME, new=bag_message)
    messages = [
        (lidar_ns, bt.POINTS_TOPIC, array_to_pointcloud2(points, bt.POINT_FIELDS, lidar_header, new=bag_message)),
        (lidar_ns, bt.GT_DETECTIONS_TOPIC, detection2d_array(boxes, class_names, frame.box_classes, np.ones(len(boxes)),
                                                             lidar_header, frame.track_ids, new=bag_message))]
    for view, topics in _views_and_topics(frame, cameras):
        view_ns = camera_ns
        if view.timestamp_us >= 0 and frame.camera_timestamp_us >= 0:
            view_ns += (int(view.timestamp_us) - int(frame.camera_timestamp_us)) * 1000
        header = header_msg(view_ns, topics.frame, new=bag_message)
        # camera_info first: a node then knows the intrinsics when the image completes a frame
        messages.append((view_ns, topics.camera_info, undistorted_camera_info(view.camera_matrix, view.image.shape[:2],
                                                                              header, new=bag_message)))
        messages.append((view_ns, topics.compressed_image, rgb_to_compressed_image(view.image, header, new=bag_message))
                        if compressed else (view_ns, topics.image, rgb_to_image(view.image, header, new=bag_message)))
        if view.class_map is not None:
            messages.append((view_ns, topics.gt_semantic, mono8_to_image(view.class_map, header, new=bag_message)))
    return messages


def sensor_transforms(vehicle_to_camera, stamp_ns: int):
    """tf2_msgs/TFMessage: vehicle -> lidar (identity) and vehicle -> each camera's optical frame.

    vehicle_to_camera: one 4x4 (the one-camera layout: frame camera_front) or {camera frame: 4x4}."""
    if not isinstance(vehicle_to_camera, dict):
        vehicle_to_camera = {bt.CAMERA_FRAME: vehicle_to_camera}
    header = header_msg(stamp_ns, bt.VEHICLE_FRAME, new=bag_message)
    transforms = [transform_stamped(np.eye(4), bt.LIDAR_FRAME, header, new=bag_message)]
    for frame_id, matrix in vehicle_to_camera.items():
        camera_pose = invert_rigid(np.asarray(matrix, dtype=np.float64))
        transforms.append(transform_stamped(camera_pose, frame_id, header, new=bag_message))
    return bag_message(bt.TF_MESSAGE, transforms=transforms)


def _declare_topics(bag: BagWriter, compressed: bool = False, cameras: list[str] | None = None) -> None:
    """Topics in a fixed order with their QoS, so every export lists them alike."""
    bag.add_topic(bt.TF_STATIC_TOPIC, bt.TF_MESSAGE, LATCHED_QOS)
    bag.add_topic(bt.POINTS_TOPIC, bt.POINTCLOUD2, SENSOR_QOS)
    per_camera = [bt.camera_topics(None)] if cameras is None else [bt.camera_topics(c) for c in cameras]
    for topics in per_camera:
        if compressed:
            bag.add_topic(topics.compressed_image, bt.COMPRESSED_IMAGE, SENSOR_QOS)
        else:
            bag.add_topic(topics.image, bt.IMAGE, SENSOR_QOS)
        bag.add_topic(topics.camera_info, bt.CAMERA_INFO, SENSOR_QOS)
    bag.add_topic(bt.GT_DETECTIONS_TOPIC, bt.DETECTION2D_ARRAY, GROUND_TRUTH_QOS)
    for topics in per_camera:
        bag.add_topic(topics.gt_semantic, bt.IMAGE, GROUND_TRUTH_QOS)


def write_bag(plans: list[ScenePlan], out, box_labels: LabelSet, semantic_labels: LabelSet,
              storage: str = 'sqlite3', source: str = '', log=print, compressed: bool = False,
              cameras: list[str] | None = None) -> dict[str, int]:
    """Write the planned frames to a new bag at `out` (must not exist); returns messages per topic.
    `compressed`: images as JPEG CompressedImage; `cameras`: per-camera topics (None: one camera)."""
    refs = [(plan, i) for plan in plans for i in range(len(plan.frames))]
    starts = [int(min(plan.lidar_ns[i], plan.camera_ns[i])) for plan, i in refs]
    # watermark[k]: no message of frames k.. is older than this, so buffered older ones can be written
    watermark = np.minimum.accumulate(np.array(starts + [np.iinfo(np.int64).max], dtype=np.int64)[::-1])[::-1]
    readers: dict[Path, ChunkReader] = {}
    pending: list = []
    sequence = 0
    calibration: dict[str, np.ndarray] = {}     # camera frame -> vehicle_to_camera published so far
    with BagWriter(out, storage=storage) as bag:
        _declare_topics(bag, compressed, cameras)
        if cameras is not None:
            bag.set_custom_data(CUSTOM_PREFIX + 'cameras', json.dumps(list(cameras)))
        bag.set_custom_data(CUSTOM_PREFIX + 'box_classes', json.dumps(list(box_labels.names)))
        bag.set_custom_data(CUSTOM_PREFIX + 'semantic_classes', json.dumps(list(semantic_labels.names)))
        bag.set_custom_data(CUSTOM_PREFIX + 'source', str(source))
        bag.set_custom_data(CUSTOM_PREFIX + 'scenes', json.dumps([
            {'scene': p.scene, 'frames': len(p.frames), 'start_ns': int(p.lidar_ns[0]), 'timing': p.timing,
             'shift_ns': p.shift_ns} for p in plans if len(p.frames)]))
        for k, (plan, i) in enumerate(refs):
            ref = plan.frames[i]
            reader = readers.get(ref.chunk) or readers.setdefault(ref.chunk, ChunkReader(ref.chunk))
            frame = reader.frame(ref.index)
            messages = frame_messages(frame, box_labels.names, int(plan.lidar_ns[i]), int(plan.camera_ns[i]),
                                      compressed, cameras)
            changed = False
            for view, topics in _views_and_topics(frame, cameras):
                matrix = np.asarray(view.vehicle_to_camera, dtype=np.float64)
                if topics.frame not in calibration or not np.array_equal(calibration[topics.frame], matrix):
                    calibration[topics.frame], changed = matrix, True
            if changed:   # every camera known so far, so the latest /tf_static message holds the whole rig
                messages.insert(0, (starts[k], bt.TF_STATIC_TOPIC, sensor_transforms(dict(calibration), starts[k])))
            for timestamp, topic, msg in messages:
                heapq.heappush(pending, (timestamp, sequence, topic, serialize(msg), msg.__msgtype__))
                sequence += 1
            while pending and pending[0][0] < watermark[k + 1]:
                timestamp, _, topic, data, msgtype = heapq.heappop(pending)
                bag.write_raw(topic, msgtype, data, timestamp)
            if i == len(plan.frames) - 1:
                log(f'  {plan.scene}: {len(plan.frames)} frames, {plan.timing} timing, '
                    f'{(plan.lidar_ns[-1] - plan.lidar_ns[0]) / 1e9:.2f} s')
        while pending:
            timestamp, _, topic, data, msgtype = heapq.heappop(pending)
            bag.write_raw(topic, msgtype, data, timestamp)
        return dict(bag.counts)


def export_bag(chunks, out, split: str = 'val', storage: str = 'sqlite3', scenes=None,
               max_frames: int | None = None, overwrite: bool = False, scene_gap_s: float = SCENE_GAP_S,
               log=print, compressed: bool = False) -> dict[str, int]:
    """Chunks -> a rosbag2 folder at `out`, written beside it and renamed into place; returns messages per topic."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f'{out} exists: remove it, choose another --out, or pass --overwrite')
        if not (out / 'metadata.yaml').is_file():
            raise FileExistsError(f'{out} exists and is not a rosbag2 folder (no metadata.yaml): not overwriting it')
    files, box_labels, semantic_labels = chunk_files(chunks, split)
    cameras = bag_cameras(files)
    plans = plan_timeline(plan_frames(files, scenes, max_frames), scene_gap_s)
    if not any(len(p.frames) for p in plans):
        raise ValueError(f'{chunks}: no frames to export (split {split!r}, scenes {scenes})')
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.partial-', dir=out.parent))
    try:
        log(f'writing {sum(len(p.frames) for p in plans)} frames of {len(plans)} scenes to {out} ({storage})')
        counts = write_bag(plans, staging / out.name, box_labels, semantic_labels, storage,
                           source=str(Path(chunks).resolve()), log=log, compressed=compressed, cameras=cameras)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log('messages: ' + ', '.join(f'{topic} {count}' for topic, count in counts.items()))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.export.to_bag', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--chunks', required=True, help='chunk folder, or one chunk .npz file')
    parser.add_argument('--split', default='val', choices=(*SPLITS, 'all'),
                        help='which chunk files of a folder (default val)')
    parser.add_argument('--out', required=True, help='rosbag2 folder to create')
    parser.add_argument('--storage', default='sqlite3', choices=sorted(STORAGE_PLUGINS))
    parser.add_argument('--scenes', nargs='+', help='only these scenes (default all)')
    parser.add_argument('--max-frames', type=int, help='at most this many frames per scene (the first ones)')
    parser.add_argument('--scene-gap', type=float, default=SCENE_GAP_S, metavar='S',
                        help=f'seconds between one scene\'s last message and the next scene (default {SCENE_GAP_S})')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag at --out')
    parser.add_argument('--compressed', action='store_true',
                        help='images as JPEG sensor_msgs/CompressedImage on /camera/image_raw/compressed, as '
                             "image_transport records them (the node: camera.image_transport:=compressed)")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error('--max-frames must be >= 1')
    try:
        export_bag(args.chunks, args.out, args.split, args.storage, args.scenes, args.max_frames, args.overwrite,
                   args.scene_gap, compressed=args.compressed)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
