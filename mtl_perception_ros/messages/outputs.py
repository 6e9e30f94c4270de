"""Detection results -> vision_msgs / visualization_msgs messages.

Metric BEV convention (what a subscriber can rely on):

- `header` is the point cloud's header: frame_id = the LiDAR / vehicle frame the boxes are in,
  stamp = the cloud's stamp. REP-103 axes: x forward, y left, z up; metres, radians.
- Boxes come in as (N, 7) arrays: x, y, z (centre), length, width, height, yaw
  (mtl_perception_ros.core.boxes); yaw is counter-clockwise about +z from +x.
- vision_msgs/Detection2D is a bird's-eye-view box in metres (not pixels):
  bbox.center.position.x, .y = box centre x, y [m]; bbox.center.theta = yaw [rad];
  bbox.size_x = length (along the heading) [m], bbox.size_y = width [m].
- vision_msgs/Detection3D: bbox.center.position = x, y, z [m]; bbox.center.orientation =
  quaternion of the yaw rotation about +z, (0, 0, sin(yaw/2), cos(yaw/2)); bbox.size.x = length,
  .y = width, .z = height [m]. results[0].pose.pose is the same pose (covariance left zero).
- Both: results[0].hypothesis.class_id = class name (e.g. 'car'), .score = detection score in
  [0, 1]; `id` = track id as a decimal string, or '' when not tracked (no track ids given, or a
  negative id / None for that box).
- vision_msgs/LabelInfo: class_map[i] = VisionClass(class_id=i, class_name=names[i]) for the
  label set the model was trained with; `threshold` = the score threshold in use.
- visualization_msgs/MarkerArray (for RViz): markers[0] is a DELETEALL for `namespace` (it
  clears the previous frame's markers in that namespace only), then per box in input order a
  LINE_LIST box outline (12 edges, class colour, 0.08 m lines), a TEXT_VIEW_FACING label
  "class score [track id]" 0.5 m above the box, and, when velocities are given, an ARROW from
  the box centre to where the box will be in 1 s (skipped for speeds < 0.05 m/s or non-finite
  velocities). All markers share `namespace`; ids count up from 0 in that order.
- Velocity: vision_msgs has no field for it, so it is only in the ARROW markers: points[0] is
  the box centre, points[1] the centre plus the velocity times 1 s, so points[1] - points[0] is
  (vx, vy) in m/s in the header frame (the node's `~/tracks` topic: one arrow per moving
  confirmed track, after its outline and label; docs/node.md "Tracking").

Numbers are computed with numpy for all boxes at once; only message objects are built per box.
The messages come from a message factory (`new`, messages.message_factory): rclpy messages by
default, rosbags ones (bags.typestore.bag_message) for bags, so both worlds get the same content.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mtl_perception_ros.core.boxes import BOX_DIM, box_corners
from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.message_factory import MessageFactory, message_maker, ros_message

__all__ = ['detection2d_array', 'detection3d_array', 'box_markers', 'label_info', 'BOX_EDGES',
           'LINE_WIDTH_M', 'TEXT_HEIGHT_M', 'MIN_ARROW_SPEED_MPS']

# Corner index pairs of the 12 box edges (corner order of boxes.box_corners): bottom, top, verticals.
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]])
LINE_WIDTH_M = 0.08
TEXT_HEIGHT_M = 0.8
TEXT_ABOVE_BOX_M = 0.5
ARROW_SHAFT_M, ARROW_HEAD_M = 0.15, 0.35
MIN_ARROW_SPEED_MPS = 0.05
# visualization_msgs/Marker constants (fixed by Marker.msg; the same in both worlds)
MARKER_ARROW, MARKER_LINE_LIST, MARKER_TEXT_VIEW_FACING = 0, 5, 9
MARKER_ADD, MARKER_DELETEALL = 0, 3


def _checked_inputs(boxes, class_names: Sequence[str], classes, scores, track_ids):
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM:
        raise ConversionError(f'boxes has shape {boxes.shape}, expected (N, {BOX_DIM}): '
                              'x, y, z, length, width, height, yaw')
    count = len(boxes)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(classes) != count or len(scores) != count:
        raise ConversionError(f'{count} boxes but {len(classes)} classes and {len(scores)} scores; expected one each')
    if count and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise ConversionError(f'class ids {sorted(set(classes.tolist()))} outside 0..{len(class_names) - 1} '
                              f'(class_names {list(class_names)})')
    if track_ids is None:
        ids = [''] * count
    else:
        if len(track_ids) != count:
            raise ConversionError(f'{count} boxes but {len(track_ids)} track ids')
        ids = [_track_id_string(t) for t in track_ids]
    names = [class_names[c] for c in classes.tolist()]
    return boxes, names, scores.tolist(), ids


def _track_id_string(track_id) -> str:
    if track_id is None:
        return ''
    if isinstance(track_id, str):
        return track_id
    value = int(track_id)
    return '' if value < 0 else str(value)


def _hypothesis(make_hypothesis, class_name: str, score: float):
    result = make_hypothesis()
    result.hypothesis.class_id = class_name
    result.hypothesis.score = score
    return result


# Per-box messages are made with message_maker(new, type)() and filled by attribute: for rclpy that
# is the generated class itself, as fast as hand-written code (measured: keyword construction and a
# per-call type lookup cost 10-20 % on 300 boxes).
def detection2d_array(boxes, class_names: Sequence[str], classes, scores, header, track_ids=None, *,
                      new: MessageFactory = ros_message):
    """(N, 7) boxes -> vision_msgs/Detection2DArray of metric BEV boxes (see the module docstring)."""
    boxes, names, scores, ids = _checked_inputs(boxes, class_names, classes, scores, track_ids)
    make_detection = message_maker(new, 'vision_msgs/msg/Detection2D')
    make_hypothesis = message_maker(new, 'vision_msgs/msg/ObjectHypothesisWithPose')
    detections = []
    for (x, y, _, length, width, _, yaw), name, score, track_id in zip(boxes.tolist(), names, scores, ids):
        detection = make_detection()
        detection.header = header
        bbox = detection.bbox
        bbox.center.position.x = x
        bbox.center.position.y = y
        bbox.center.theta = yaw
        bbox.size_x = length
        bbox.size_y = width
        detection.results = [_hypothesis(make_hypothesis, name, score)]
        detection.id = track_id
        detections.append(detection)
    return new('vision_msgs/msg/Detection2DArray', header=header, detections=detections)


def detection3d_array(boxes, class_names: Sequence[str], classes, scores, header, track_ids=None, *,
                      new: MessageFactory = ros_message):
    """(N, 7) boxes -> vision_msgs/Detection3DArray (see the module docstring)."""
    boxes, names, scores, ids = _checked_inputs(boxes, class_names, classes, scores, track_ids)
    half_yaw = boxes[:, 6] / 2
    rows = np.column_stack([boxes[:, :6], np.sin(half_yaw), np.cos(half_yaw)]).tolist()
    make_detection = message_maker(new, 'vision_msgs/msg/Detection3D')
    make_hypothesis = message_maker(new, 'vision_msgs/msg/ObjectHypothesisWithPose')
    detections = []
    for (x, y, z, length, width, height, qz, qw), name, score, track_id in zip(rows, names, scores, ids):
        detection = make_detection()
        detection.header = header
        pose = detection.bbox.center
        pose.position.x, pose.position.y, pose.position.z = x, y, z
        pose.orientation.z, pose.orientation.w = qz, qw
        size = detection.bbox.size
        size.x, size.y, size.z = length, width, height
        result = _hypothesis(make_hypothesis, name, score)
        result_pose = result.pose.pose  # same numbers, its own object (no aliasing between fields)
        result_pose.position.x, result_pose.position.y, result_pose.position.z = x, y, z
        result_pose.orientation.z, result_pose.orientation.w = qz, qw
        detection.results = [result]
        detection.id = track_id
        detections.append(detection)
    return new('vision_msgs/msg/Detection3DArray', header=header, detections=detections)


def _duration_parts(seconds: float) -> tuple[int, int]:
    """A marker lifetime in seconds -> (sec, nanosec); ConversionError unless finite and >= 0."""
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConversionError(f'lifetime_s is {seconds}, expected a finite number of seconds >= 0')
    sec, nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return sec, nanosec


def _duration(seconds: float, new: MessageFactory):
    sec, nanosec = _duration_parts(seconds)
    return new('builtin_interfaces/msg/Duration', sec=sec, nanosec=nanosec)


def _checked_marker_inputs(boxes, class_names: Sequence[str], classes, scores, track_ids, colors, velocities):
    """_checked_inputs, and a colour per class id and (N, 2) velocities or None: (boxes, names,
    scores, ids, class ids as a list, velocities float64 or None). Shared with
    messages.marker_serialization."""
    boxes, names, scores, ids = _checked_inputs(boxes, class_names, classes, scores, track_ids)
    class_ids = np.asarray(classes).reshape(-1).astype(np.int64).tolist()
    if class_ids and max(class_ids) >= len(colors):
        raise ConversionError(f'class id {max(class_ids)} has no colour: {len(colors)} colours given')
    if velocities is not None:
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != (len(boxes), 2):
            raise ConversionError(f'velocities has shape {velocities.shape}, expected ({len(boxes)}, 2): vx, vy in m/s')
    return boxes, names, scores, ids, class_ids, velocities


def _marker_geometry(boxes: np.ndarray, velocities: np.ndarray | None):
    """The numbers of the markers, all boxes at once: edges (N, 24, 3) outline end points,
    label_anchors (N, 3), drawn (N,) bool (a box moves fast enough for an arrow), arrows (N, 2, 3)
    from the centre to where the box will be in 1 s. Shared with messages.marker_serialization."""
    edges = box_corners(boxes)[:, BOX_EDGES.reshape(-1)]
    label_anchors = np.column_stack([boxes[:, :2], boxes[:, 2] + boxes[:, 5] / 2 + TEXT_ABOVE_BOX_M])
    drawn, arrows = np.zeros(len(boxes), dtype=bool), np.zeros((len(boxes), 2, 3))
    if velocities is not None:
        speed = np.hypot(velocities[:, 0], velocities[:, 1])
        drawn = np.isfinite(speed) & (speed >= MIN_ARROW_SPEED_MPS)
        ends = boxes[:, :2] + velocities * 1.0  # where the box will be in 1 s
        arrows = np.stack([boxes[:, :3], np.column_stack([ends, boxes[:, 2]])], axis=1)
    return edges, label_anchors, drawn, arrows


def label_text(name: str, score: float, track_id: str) -> str:
    """A box's marker label: 'class score [track id]' (no brackets without a track id)."""
    return f'{name} {score:.2f}' + (f' [{track_id}]' if track_id else '')


def box_markers(boxes, class_names: Sequence[str], classes, scores, header, colors, track_ids=None,
                velocities=None, namespace: str = 'detections', lifetime_s: float = 0.0, *,
                new: MessageFactory = ros_message):
    """(N, 7) boxes -> visualization_msgs/MarkerArray for RViz (layout in the module docstring).

    Args:
        colors: RGB 0..255 per class id (e.g. LabelSet.colors).
        velocities: optional (N, 2) vx, vy [m/s] in the header frame.
        lifetime_s: marker lifetime [s]; 0 = until the next DELETEALL.
    """
    boxes, names, scores, ids, class_ids, velocities = _checked_marker_inputs(
        boxes, class_names, classes, scores, track_ids, colors, velocities)
    count = len(boxes)

    edges, label_anchors, drawn, arrow_points = _marker_geometry(boxes, velocities)
    edges, label_anchors = edges.tolist(), label_anchors.tolist()
    arrows = [(tuple(start), tuple(end)) if keep else None
              for (start, end), keep in zip(arrow_points.tolist(), drawn.tolist())]

    make_point = message_maker(new, 'geometry_msgs/msg/Point')
    make_color = message_maker(new, 'std_msgs/msg/ColorRGBA')
    make_marker = message_maker(new, 'visualization_msgs/msg/Marker')

    def point(x: float, y: float, z: float):
        p = make_point()
        p.x, p.y, p.z = x, y, z
        return p

    def color(rgb: Sequence[int], alpha: float = 1.0):
        c = make_color()
        c.r, c.g, c.b, c.a = rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, alpha
        return c

    lifetime = _duration(lifetime_s, new)
    class_rgb = {c: tuple(int(v) for v in colors[c]) for c in set(class_ids)}
    clear = make_marker()
    clear.header = header
    clear.ns = namespace
    clear.action = MARKER_DELETEALL
    markers = [clear]

    def new_marker(marker_type: int):
        marker = make_marker()
        marker.header = header
        marker.ns = namespace
        marker.id = len(markers) - 1
        marker.type = marker_type
        marker.action = MARKER_ADD
        marker.pose.orientation.w = 1.0
        marker.lifetime = lifetime
        markers.append(marker)
        return marker

    for i in range(count):
        outline = new_marker(MARKER_LINE_LIST)
        outline.scale.x = LINE_WIDTH_M
        outline.color = color(class_rgb[class_ids[i]])
        outline.points = [point(*p) for p in edges[i]]

        label = new_marker(MARKER_TEXT_VIEW_FACING)
        label.pose.position = point(*label_anchors[i])
        label.scale.z = TEXT_HEIGHT_M
        label.color = color((255, 255, 255))
        label.text = label_text(names[i], scores[i], ids[i])

        if arrows[i] is not None:
            arrow = new_marker(MARKER_ARROW)
            arrow.points = [point(*arrows[i][0]), point(*arrows[i][1])]
            arrow.scale.x, arrow.scale.y, arrow.scale.z = ARROW_SHAFT_M, 2 * ARROW_SHAFT_M, ARROW_HEAD_M
            arrow.color = color(class_rgb[class_ids[i]])
    return new('visualization_msgs/msg/MarkerArray', markers=markers)


def label_info(label_set, header, threshold: float = 0.0, *, new: MessageFactory = ros_message):
    """mtl_perception_ros.core.labels.LabelSet -> vision_msgs/LabelInfo (class id = index in the set)."""
    class_map = [new('vision_msgs/msg/VisionClass', class_id=class_id, class_name=name)
                 for class_id, name in enumerate(label_set.names)]
    return new('vision_msgs/msg/LabelInfo', header=header, class_map=class_map, threshold=float(threshold))
