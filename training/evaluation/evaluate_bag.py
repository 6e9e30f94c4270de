"""Evaluate perception over a rosbag2 bag: offline (the node's code path, no ROS) or the outputs a live node recorded.

    python -m training.evaluation.evaluate_bag --bag BAG --checkpoint CKPT [--params config/mtl_perception.yaml]
        [--calibration params|camera_info|bag] --out REPORT_DIR
    python -m training.evaluation.evaluate_bag --bag BAG --recorded RECORDED_BAG [--checkpoint CKPT] --out REPORT_DIR
        [--tracking-json output/tracking.json --track-plots output/tracks]

BAG is a bag written by `python -m training.export.to_bag` (/points, /camera/image_raw,
/camera/camera_info, /tf_static, /gt/detections, /gt/semantic; mtl_perception_ros.bags.topics).
Its camera is the params YAML's first camera (`cameras`). A bag with several cameras (custom_data
`mtl_perception.cameras`, per-camera topics /NAME/image_raw, /gt/NAME/semantic) is read for every
camera of the YAML's `cameras` (each must be in the bag); its default calibration source is
`bag`, and segmentation is scored per camera and pooled.

Offline (`--checkpoint`): the bag's /points and /camera/image_raw messages are read in recorded
order and go through the node's own frame path, mtl_perception_ros.core.frame_pipeline.FramePipeline,
with the node's settings from the params YAML (slop_s, queue_size, the camera's time_offset_s,
points_min_interval_s, camera_timeout_s, time_jump_threshold_s, future_stamp_tolerance_s), the
bag's receive times as the clock: the same pairing, camera timeout (header stamps and clock),
time policy, image preparation with the calibration and PerceptionInference with
score_threshold / max_detections / nms_radius_m from the YAML, the cloud's point_fields read with
intensity_scale. Calibration: `params` (the YAML's
<camera>.lidar_to_camera, camera_matrix, distortion, calibration_image_size), `camera_info` (K, D
and size from the bag's camera_info, the transform from the YAML: what the node does when the
camera_info is played; the default when the bag has it), or `bag` (camera_info plus the
extrinsics from /tf_static, in recorded order, through core.transform_buffer.TransformBuffer:
the node's TF lookup of cloud frame -> image frame at the cloud's stamp, the YAML's transform as
the fallback). Unlike the node, every pair is processed (no drops for a
busy worker) and there is no tracking (training.evaluation.evaluate_tracking scores it).

Recorded (`--recorded`): the node's outputs recorded with mtl_bag_record while BAG played:
`.../detections` (vision_msgs/Detection2DArray, the cloud's header) and `.../semantic/labels`
(mono8, the image's header), plus `/diagnostics` when recorded (the node's sync/drop counts and
latency p50/p95, its last report). The BEV grid that bounds the ground truth is the one of the
checkpoint the node ran: `--checkpoint`, else the params YAML's model_path.

Scoring (both modes, so that they agree when the node processed every pair):
- Detection: every /gt/detections frame (matched to predictions by the cloud's header stamp; a
  frame without output counts with no predictions), GT boxes with centres inside the model's BEV
  grid; training.evaluation.detection_metrics.DetectionAccumulator (BEV centre distance 0.5/1/2/4 m,
  nuScenes AP) over the detections that passed the node's score_threshold. Per-class AP and mAP.
- Segmentation: each predicted class map against /gt/semantic of the same image stamp
  (255 ignored); training.evaluation.segmentation_metrics: IoU per class, mIoU, pixel accuracy.
- Latency: per stage p50/p95 (offline: the inference core's timings_ms plus preparation).
The report (training.evaluation.report) goes to REPORT_DIR: report.md, metrics.json and PNGs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mtl_perception_ros.bags import topics as bt
from mtl_perception_ros.bags.reader import BagReader
from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.boxes import BOX_DIM
from mtl_perception_ros.core.camera_calibration import CalibrationError
from mtl_perception_ros.core import pipeline_parameters
from mtl_perception_ros.core.frame_pipeline import FramePipeline
from mtl_perception_ros.core.transform_buffer import TransformBuffer
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.latency import latency_summary
from mtl_perception_ros.core.parameters import ParameterError, flatten_parameters, validate_all
from training.evaluation.detection_metrics import DetectionAccumulator
from training.evaluation.segmentation_metrics import SegmentationAccumulator
from training.paths import NODE_PARAMS_PATH

CALIBRATION_SOURCES = ('params', 'camera_info', 'bag')


# ----------------------------------------------------------------------------- parameters
def load_node_params(path) -> dict:
    """The node's parameters from a ROS params YAML (`/**:` or `<node name>:` -> `ros__parameters:`)
    over the schema's defaults, validated as the node validates them (mtl_perception_ros.core.parameters;
    model_path may stay empty: offline evaluation takes --checkpoint). A bad file or value: ValueError
    naming the file and the parameter."""
    path = Path(path)
    with open(path, encoding='utf-8') as stream:
        try:
            document = yaml.safe_load(stream) or {}
        except yaml.YAMLError as error:
            raise ValueError(f'{path}: not a valid YAML file: {error}') from None
    blocks = [value['ros__parameters'] for value in document.values()
              if isinstance(value, dict) and isinstance(value.get('ros__parameters'), dict)] \
        if isinstance(document, dict) else []
    if not blocks:
        raise ValueError(f'{path}: no `ros__parameters` block (expected the node YAML format '
                         '"/**: ros__parameters: {...}")')
    values = {}
    for block in blocks:
        values.update(flatten_parameters(block))
    try:
        return validate_all(values, required=False)
    except ParameterError as error:
        raise ParameterError(f'{path}: {error}', error.name, error.problems) from None


# ----------------------------------------------------------------------------- predictions
@dataclass
class FramePrediction:
    """One processed cloud: boxes (N, 7) vehicle frame, classes (N,) int64, scores (N,);
    class_map (H, W) uint8 at the image's size or None (LiDAR-only / not recorded) and its image's
    stamp, of the first camera; class_maps: {(camera, image stamp): class map} of every camera
    (camera None in a one-camera bag)."""

    cloud_stamp_ns: int
    image_stamp_ns: int | None
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    class_map: np.ndarray | None
    lidar_only: bool = False
    class_maps: dict = field(default_factory=dict)


@dataclass
class BagPredictions:
    """Predictions of a bag plus how they came about. latency_samples: stage -> per-frame ms;
    latency_summary: stage -> (p50, p95) ms (computed from the samples, or the node's diagnostics);
    counts: received / synchronized / dropped / skipped counts by name."""

    source: str
    frames: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    latency_samples: dict = field(default_factory=dict)
    latency_summary: dict = field(default_factory=dict)
    class_maps: dict | None = None   # recorded: (camera, image stamp) -> class map (offline: in the frames)


def bag_cameras(reader: BagReader) -> list[str] | None:
    """The cameras of a several-camera bag (custom_data mtl_perception.cameras), None for one camera."""
    raw = reader.custom_data.get('mtl_perception.cameras')
    return None if raw is None else [str(name) for name in json.loads(raw)]


def camera_keys(params: dict, cameras: list[str] | None, bag) -> dict:
    """{node camera: (key in the scores, its bags.topics.CameraTopics)}: one camera (key None) in a
    one-camera bag, else every camera of the YAML's `cameras` (ValueError naming one the bag lacks)."""
    if cameras is None:
        return {params['cameras'][0]: (None, bt.camera_topics(None))}
    missing = [name for name in params['cameras'] if name not in cameras]
    if missing:
        raise ValueError(f'{bag} has the cameras {cameras}; the params YAML names {missing} too '
                         '(set `cameras` to the bag\'s cameras)')
    return {name: (name, bt.camera_topics(name)) for name in params['cameras']}


def predict_offline(bag, inference, params: dict, calibration_source: str | None = None,
                    log=print) -> BagPredictions:
    """Run `inference` (PerceptionInference) over the bag's pairs as the node would (module doc)."""
    if calibration_source is not None and calibration_source not in CALIBRATION_SOURCES:
        raise ValueError(f'calibration source {calibration_source!r}: expected one of {CALIBRATION_SOURCES}')
    calibrations = pipeline_parameters.camera_calibrations(params)
    out = BagPredictions(source=f'offline: {getattr(inference, "checkpoint_path", "checkpoint")}')
    counts = out.counts
    samples: dict[str, list] = {}

    def process(pipeline: FramePipeline, frame):
        cloud = frame.points
        images = {camera: frame.images.get(camera) for camera in keys}
        result = pipeline.process(frame, cloud.data, {c: None if i is None else i.data for c, i in images.items()},
                                  cloud_frame=cloud.frame_id,
                                  image_frames={c: i.frame_id for c, i in images.items() if i is not None})
        if result is None:
            return
        for stage, value in result.timings_ms.items():
            samples.setdefault(stage, []).append(float(value))
        maps = {(keys[c][0], result.image_stamps_ns[c]): m for c, m in result.class_maps.items()
                if m is not None and c in result.image_stamps_ns}
        first = next(iter(keys))
        out.frames.append(FramePrediction(
            cloud.stamp_ns, result.image_stamps_ns.get(first), np.asarray(result.boxes, np.float64),
            np.asarray(result.classes, np.int64), np.asarray(result.scores, np.float64), result.class_maps.get(first),
            result.lidar_only, maps))

    with BagReader(bag) as reader:
        cameras = bag_cameras(reader)
        keys = camera_keys(params, cameras, bag)
        image_topics, info_topics = {}, {}
        for camera, (_, topics) in keys.items():
            image_topics[topics.compressed_image if topics.compressed_image in reader.topics else topics.image] = camera
            info_topics[topics.camera_info] = camera
        topics = [bt.POINTS_TOPIC, *image_topics]
        has_info = any(t in reader.topics for t in info_topics)
        if calibration_source is None:
            calibration_source = 'params' if not has_info else ('bag' if cameras is not None else 'camera_info')
        if calibration_source in ('camera_info', 'bag'):
            topics += [t for t in info_topics if t in reader.topics]
        transforms = None
        if calibration_source == 'bag' and bt.TF_STATIC_TOPIC in reader.topics:
            transforms = TransformBuffer()
            topics.append(bt.TF_STATIC_TOPIC)
        # The node's frame path; the clock is the bag's receive time. No tracker (evaluate_tracking
        # scores tracking), and every pair is processed (no drops for a busy worker).
        pipeline = FramePipeline(inference, {camera: calibrations[camera] for camera in keys},
                                 pipeline_parameters.pipeline_config(params),
                                 transforms=None if transforms is None else transforms.lookup)
        for message in reader.decoded(topics, intensity_scale=float(params['intensity_scale']),
                                      point_fields=tuple(params['point_fields'])):
            if message.topic == bt.TF_STATIC_TOPIC:
                for item in message.data:     # bags.reader.StaticTransform
                    transforms.set_matrix(item.parent, item.child, item.stamp_ns, item.parent_from_child, static=True)
                continue
            if message.topic in info_topics:
                info = message.data          # messages.camera_info.CameraInfoData
                pipeline.apply_camera_info(info_topics[message.topic], info.camera_matrix, info.distortion,
                                           info.distortion_model, info.image_size_wh)
                continue
            key = f'received.{message.topic.strip("/")}'
            counts[key] = counts.get(key, 0) + 1
            receipt_s = message.timestamp_ns * 1e-9
            if message.topic == bt.POINTS_TOPIC:
                frames = pipeline.add_points(message.stamp_ns, message, receipt_s)
            else:
                frames = pipeline.add_image(image_topics[message.topic], message.stamp_ns, message, receipt_s)
            for frame in frames:
                process(pipeline, frame)
    counts.update(pipeline.counts())
    stats = pipeline.sync_stats()
    counts['sync.emitted_pairs'] = stats['emitted_sets']
    for name, pending in zip(stats['stream_names'], stats['pending']):
        counts[f'sync.pending.{name}'] = pending
    for reason, per_stream in stats['dropped'].items():
        for name, value in zip(stats['stream_names'], per_stream):
            if value:
                counts[f'sync.dropped.{reason}.{name}'] = value
    out.latency_samples = samples
    out.latency_summary = latency_summary(samples)
    return out


def find_topic(reader: BagReader, msgtype: str, suffix: str) -> str | None:
    """The recorded topic of `msgtype` whose name ends with `suffix` (ground-truth topics excluded)."""
    found = [t for t, (kind, _) in reader.topics.items()
             if kind == msgtype and t.endswith(suffix) and not t.startswith('/gt/')]
    return sorted(found)[0] if found else None


def diagnostics_values(reader: BagReader, topic: str = '/diagnostics') -> dict[str, str]:
    """key -> value of the last mtl_perception status on the recorded /diagnostics ({} when none)."""
    if topic not in reader.topics:
        return {}
    values = {}
    for _, _, _, msg in reader.messages([topic]):
        for status in msg.status:
            if 'mtl_perception' in status.name:
                values = {item.key: item.value for item in status.values}
    return values


def read_recorded(recorded, detection_names, detections_topic: str | None = None,
                  labels_topic: str | None = None, cameras: list[str] | None = None) -> BagPredictions:
    """The node's recorded outputs as BagPredictions (module doc). Class names -> ids by `detection_names`.
    cameras: the source bag's cameras (None: one camera, its `.../semantic/labels`), each read from
    the node's `.../<camera>/semantic/labels`."""
    out = BagPredictions(source=f'recorded: {recorded}')
    names = list(detection_names)
    with BagReader(recorded) as reader:
        detections_topic = detections_topic or find_topic(reader, bt.DETECTION2D_ARRAY, '/detections')
        if detections_topic is None:
            raise ValueError(f'{recorded}: no .../detections topic (vision_msgs/msg/Detection2DArray); '
                             f'the bag has {sorted(reader.topics)}')
        if cameras is None:
            labels = {None: labels_topic or find_topic(reader, bt.IMAGE, '/semantic/labels')}
        else:
            labels = {camera: find_topic(reader, bt.IMAGE, f'/{camera}/semantic/labels') for camera in cameras}
        class_maps = {}
        for camera, topic in labels.items():
            if topic is not None:
                class_maps.update({(camera, m.stamp_ns): m.data for m in reader.decoded([topic])})
        for message in reader.decoded([detections_topic]):
            data = message.data
            unknown = sorted(set(data.class_names) - set(names))
            if unknown:
                raise ValueError(f'{recorded} {detections_topic}: classes {unknown} are not among {names}')
            out.frames.append(FramePrediction(message.stamp_ns, None, bev_to_boxes(data.boxes),
                                              np.array([names.index(n) for n in data.class_names], np.int64),
                                              data.scores.astype(np.float64), None))
        out.class_maps = class_maps
        diagnostics = diagnostics_values(reader)
    out.counts = {'recorded.detections': len(out.frames), 'recorded.semantic_labels': len(class_maps)}
    for key, value in diagnostics.items():
        if key.startswith(('received', 'processed', 'dropped', 'skipped', 'sync.', 'synced')):
            out.counts[f'node.{key}'] = value
    stages = sorted({k[len('latency_ms.'):-len('.p50')] for k in diagnostics if k.startswith('latency_ms.')
                     and k.endswith('.p50')})
    out.latency_summary = {s: (float(diagnostics[f'latency_ms.{s}.p50']), float(diagnostics[f'latency_ms.{s}.p95']))
                           for s in stages if f'latency_ms.{s}.p95' in diagnostics}
    return out


# ----------------------------------------------------------------------------- ground truth and scoring
def bev_to_boxes(bev: np.ndarray) -> np.ndarray:
    """(M, 5) x, y, length, width, yaw (metric BEV messages) -> (M, 7) boxes with z = 0, height = 1
    (BEV centre-distance matching uses x, y only)."""
    bev = np.asarray(bev, dtype=np.float64).reshape(-1, 5)
    boxes = np.zeros((len(bev), BOX_DIM))
    boxes[:, [0, 1, 3, 4, 6]] = bev
    boxes[:, 5] = 1.0
    return boxes


@dataclass
class GroundTruth:
    """detections: cloud stamp ns -> (boxes (M, 7), classes (M,)) inside the grid; semantic:
    (camera, image stamp ns) -> (H, W) uint8 (camera None in a one-camera bag); cameras: the bag's
    cameras (None: one camera)."""

    detections: dict
    semantic: dict
    outside_grid: int = 0
    cameras: list | None = None


def read_ground_truth(bag, detection_names, grid: BevGrid) -> GroundTruth:
    names = list(detection_names)
    detections, outside = {}, 0
    with BagReader(bag) as reader:
        for stamp, message in sorted(reader.by_stamp(bt.GT_DETECTIONS_TOPIC).items()):
            data = message.data
            unknown = sorted(set(data.class_names) - set(names))
            if unknown:
                raise ValueError(f'{bag} {bt.GT_DETECTIONS_TOPIC}: classes {unknown} are not among {names}')
            boxes = bev_to_boxes(data.boxes)
            classes = np.array([names.index(n) for n in data.class_names], np.int64)
            inside = ((boxes[:, 0] >= grid.x_min_m) & (boxes[:, 0] < grid.x_max_m)
                      & (boxes[:, 1] >= grid.y_min_m) & (boxes[:, 1] < grid.y_max_m))
            outside += int(np.count_nonzero(~inside))
            detections[stamp] = (boxes[inside], classes[inside])
        cameras = bag_cameras(reader)
        semantic = {}
        for camera in ([None] if cameras is None else cameras):
            topic = bt.camera_topics(camera).gt_semantic
            if topic in reader.topics:
                semantic.update({(camera, m.stamp_ns): m.data for m in reader.decoded([topic])})
    return GroundTruth(detections, semantic, outside, cameras)


@dataclass
class BagEvaluation:
    detection: object            # training.evaluation.detection_metrics.DetectionMetrics
    segmentation: dict           # SegmentationAccumulator.compute()
    counts: dict
    predictions: BagPredictions
    truth: GroundTruth
    segmentation_by_camera: dict = field(default_factory=dict)   # camera -> metrics (several-camera bags)


def class_maps_by_stamp(predictions: BagPredictions) -> dict:
    """(camera, image stamp) -> predicted class map (recorded: the labels topics; offline: from the
    frames); camera None in a one-camera bag."""
    if predictions.class_maps is not None:
        return predictions.class_maps
    return {key: class_map for f in predictions.frames for key, class_map in f.class_maps.items()}


def score(predictions: BagPredictions, truth: GroundTruth, detection_labels: LabelSet,
          semantic_labels: LabelSet) -> BagEvaluation:
    """Detection AP over every GT frame and segmentation over predicted maps with GT (module doc)."""
    by_stamp = {f.cloud_stamp_ns: f for f in predictions.frames}
    detection = DetectionAccumulator(detection_labels.names)
    missing = 0
    for stamp, (gt_boxes, gt_classes) in sorted(truth.detections.items()):
        frame = by_stamp.get(stamp)
        if frame is None:
            missing += 1
            detection.update(np.zeros((0, BOX_DIM)), np.zeros(0, np.int64), np.zeros(0), gt_boxes, gt_classes)
        else:
            detection.update(frame.boxes, frame.classes, frame.scores, gt_boxes, gt_classes)
    segmentation = SegmentationAccumulator(len(semantic_labels), semantic_labels.names)
    by_camera: dict = {}
    maps = class_maps_by_stamp(predictions)
    scored_maps = 0
    for (camera, stamp), class_map in sorted(maps.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        label = truth.semantic.get((camera, stamp))
        if label is not None:
            segmentation.update(class_map, label)
            if camera is not None:
                by_camera.setdefault(camera, SegmentationAccumulator(len(semantic_labels), semantic_labels.names))
                by_camera[camera].update(class_map, label)
            scored_maps += 1
    counts = {'gt_frames': len(truth.detections), 'gt_frames_without_prediction': missing,
              'predictions_without_gt': sum(1 for s in by_stamp if s not in truth.detections),
              'gt_boxes_outside_grid': truth.outside_grid, 'gt_images': len(truth.semantic),
              'class_maps_scored': scored_maps, 'gt_images_without_class_map': len(set(truth.semantic) - set(maps))}
    counts.update(predictions.counts)
    order = truth.cameras or []
    return BagEvaluation(detection.compute(), segmentation.compute(), counts, predictions, truth,
                         {camera: by_camera[camera].compute() for camera in order if camera in by_camera})


# ----------------------------------------------------------------------------- samples for the report
def sample_frames(bag, evaluation: BagEvaluation, count: int = 4, intensity_scale: float = bt.DEFAULT_INTENSITY_SCALE):
    """Up to `count` report.SampleFrame, evenly spaced over the GT frames: camera, points, GT and predictions."""
    from training.evaluation.report import SampleFrame
    stamps = sorted(evaluation.truth.detections)
    if not stamps or count <= 0:
        return []
    chosen = [stamps[i] for i in sorted(set(np.linspace(0, len(stamps) - 1, count).round().astype(int).tolist()))]
    predictions = {f.cloud_stamp_ns: f for f in evaluation.predictions.frames}
    camera = evaluation.truth.cameras[0] if evaluation.truth.cameras else None   # the first camera's pictures
    maps = {stamp: m for (key, stamp), m in class_maps_by_stamp(evaluation.predictions).items() if key == camera}
    semantic = {stamp: m for (key, stamp), m in evaluation.truth.semantic.items() if key == camera}
    image_stamps = sorted(semantic)
    wanted = {}          # cloud stamp -> image stamp: the one the prediction used, else the nearest GT image
    for stamp in chosen:
        frame = predictions.get(stamp)
        if frame is not None and frame.image_stamp_ns is not None:
            wanted[stamp] = frame.image_stamp_ns
        elif image_stamps:
            wanted[stamp] = min(image_stamps, key=lambda s: abs(s - stamp))
    clouds, images = {}, {}
    with BagReader(bag) as reader:
        topics = bt.camera_topics(camera)
        camera_topics = [t for t in (topics.image, topics.compressed_image) if t in reader.topics]
        for message in reader.decoded([bt.POINTS_TOPIC, *camera_topics], intensity_scale=intensity_scale):
            if message.topic == bt.POINTS_TOPIC and message.stamp_ns in wanted:
                clouds[message.stamp_ns] = message.data
            elif message.topic in camera_topics and message.stamp_ns in wanted.values():
                images[message.stamp_ns] = message.data
    samples = []
    for stamp in chosen:
        frame = predictions.get(stamp)
        image_stamp = wanted.get(stamp)
        gt_boxes, gt_classes = evaluation.truth.detections[stamp]
        empty = (np.zeros((0, BOX_DIM)), np.zeros(0, np.int64), np.zeros(0))
        boxes, classes, scores = (frame.boxes, frame.classes, frame.scores) if frame is not None else empty
        samples.append(SampleFrame(
            stamp_ns=stamp, image=images.get(image_stamp), points=clouds.get(stamp),
            gt_class_map=semantic.get(image_stamp), pred_class_map=maps.get(image_stamp),
            gt_boxes=gt_boxes, gt_classes=gt_classes, pred_boxes=boxes, pred_classes=classes, pred_scores=scores))
    return samples


# ----------------------------------------------------------------------------- CLI
def bag_label_sets(bag) -> tuple[LabelSet | None, LabelSet | None]:
    """(detection, semantic) class names from the bag's custom_data (export_bag), as LabelSets with
    the default colours of config/a2d2 where the names agree; None when absent."""
    from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
    with BagReader(bag) as reader:
        custom = reader.custom_data
    result = []
    for key, default in (('box_classes', DEFAULT_BOX_CLASSES), ('semantic_classes', DEFAULT_SEMANTIC_CLASSES)):
        raw = custom.get(f'mtl_perception.{key}')
        if raw is None:
            result.append(None)
            continue
        names = json.loads(raw)
        labels = LabelSet.from_yaml(default)
        if tuple(labels.names) != tuple(names):     # other classes: fixed pseudo-random colours
            rng = np.random.default_rng(0)
            labels = LabelSet(names=tuple(names), name=key,
                              colors=tuple(tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in names))
        result.append(labels)
    return result[0], result[1]


def recorded_grid(checkpoint, params: dict) -> BevGrid:
    """Recorded mode: the BEV grid of the checkpoint the node ran (`checkpoint`, else the YAML's model_path)."""
    path = checkpoint or params.get('model_path')
    if not path:
        raise ValueError('recorded mode needs the checkpoint the node ran, for its BEV grid (ground truth outside '
                         'it is not scored): give --checkpoint CKPT, or a --params YAML that sets model_path')
    from mtl_perception_ros.core.checkpoint import read_checkpoint
    return read_checkpoint(path)[1].bev_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.evaluation.evaluate_bag', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--bag', required=True, help='source bag with /points, /camera/image_raw and /gt/* (training.export.to_bag)')
    parser.add_argument('--checkpoint', help='offline: run this checkpoint over the bag as the node would; '
                        "with --recorded: the checkpoint the node ran (its BEV grid; default the YAML's model_path)")
    parser.add_argument('--recorded', help="score a live node's recorded outputs instead (mtl_bag_record bag)")
    parser.add_argument('--params', default=str(NODE_PARAMS_PATH), help='node parameters YAML (default %(default)s)')
    parser.add_argument('--calibration', choices=CALIBRATION_SOURCES, default=None,
                        help='offline calibration source (default: camera_info when the bag has it, '
                             'else params)')
    parser.add_argument('--device', default='cpu', help='offline: cpu (default), cuda, auto')
    parser.add_argument('--detections-topic', default=None, help='recorded: default the .../detections topic')
    parser.add_argument('--labels-topic', default=None, help='recorded: default the .../semantic/labels topic')
    parser.add_argument('--tracking-json', default=None, help='training.evaluation.evaluate_tracking --json output to include')
    parser.add_argument('--track-plots', default=None, help='training.evaluation.evaluate_tracking --plots folder to include')
    parser.add_argument('--samples', type=int, default=4, help='sample frames drawn in the report (default 4)')
    parser.add_argument('--out', required=True, help='report folder (report.md, metrics.json, PNGs)')
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.recorded:
        parser.error('give --checkpoint (offline) or --recorded (recorded outputs)')

    from training.evaluation.report import write_report
    try:
        params = load_node_params(args.params)
        bag_detection, bag_semantic = bag_label_sets(args.bag)
        if not args.recorded:
            from mtl_perception_ros.core.onnx_inference import open_inference
            inference, note = open_inference(
                args.checkpoint, device=args.device, **pipeline_parameters.inference_backend(params),
                **pipeline_parameters.decoding(params), max_views=len(params['cameras']))
            if note:
                print(f'note: {note}')
            inference.checkpoint_path = args.checkpoint
            detection_labels, semantic_labels, grid = (inference.detection_labels, inference.semantic_labels,
                                                       inference.grid)
            if bag_detection is not None and tuple(bag_detection.names) != tuple(detection_labels.names):
                raise ValueError(f"the checkpoint's detection classes {list(detection_labels.names)} differ from "
                                 f"the bag's {list(bag_detection.names)} ({args.bag})")
            started = time.monotonic()
            predictions = predict_offline(args.bag, inference, params, args.calibration)
            print(f'offline: {len(predictions.frames)} frames processed in {time.monotonic() - started:.1f} s')
        else:
            if bag_detection is None or bag_semantic is None:
                raise ValueError(f'{args.bag}: metadata.yaml custom_data has no mtl_perception.box_classes / '
                                 'semantic_classes (export the bag with training.export.to_bag)')
            detection_labels, semantic_labels = bag_detection, bag_semantic
            grid = recorded_grid(args.checkpoint, params)
            with BagReader(args.bag) as source:
                cameras = bag_cameras(source)
            predictions = read_recorded(args.recorded, detection_labels.names, args.detections_topic,
                                        args.labels_topic, cameras)
        truth = read_ground_truth(args.bag, detection_labels.names, grid)
        evaluation = score(predictions, truth, detection_labels, semantic_labels)
        samples = sample_frames(args.bag, evaluation, args.samples, float(params['intensity_scale']))
        tracking = None
        if args.tracking_json and Path(args.tracking_json).is_file():
            tracking = json.loads(Path(args.tracking_json).read_text())
        plots = sorted(Path(args.track_plots).glob('*.png')) if args.track_plots else []
        report = write_report(args.out, evaluation, detection_labels, semantic_labels, grid, samples,
                              tracking=tracking, track_plots=plots, params_file=args.params)
    except (FileNotFoundError, KeyError, ValueError, CalibrationError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(evaluation.detection.format_table())
    seg = evaluation.segmentation
    print(f"mIoU {seg['miou']:.4f}  pixel accuracy {seg['pixel_accuracy']:.4f}  "
          f"({evaluation.counts['class_maps_scored']} class maps)")
    for camera, metrics in evaluation.segmentation_by_camera.items():
        print(f"  {camera}: mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}")
    print(f'report: {report}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
