"""rosbag2 files <-> numpy, without ROS: message builders, a writer and a reader (the `rosbags` library).

The bags that `python -m training.export.to_bag` writes (and `mtl_bag_play` plays):

- /points, sensor_msgs/PointCloud2, frame `vehicle`, LiDAR stamp: x, y, z, intensity packed
  float32 (16-byte points); intensity = reflectance * 255, which the node's default
  `intensity_scale` 1/255 undoes.
- /image, sensor_msgs/Image rgb8, frame `camera_front`, camera stamp: the undistorted image.
- /camera_info, sensor_msgs/CameraInfo, the image's header: K, P = [K 0], D = 5 zeros
  (plumb_bob), R = I, width, height.
- /tf_static, tf2_msgs/TFMessage: vehicle -> lidar (identity: the merged cloud is in the vehicle
  frame) and vehicle -> camera_front (the optical frame; its pose = inverse of
  `vehicle_to_camera`); written at the start and again when the calibration changes.
- /gt/detections, vision_msgs/Detection2DArray, the cloud's header: ground-truth boxes in the
  metric BEV convention of output_messages.detection2d_array; score 1; `id` = track id ('' unknown).
- /gt/semantic, sensor_msgs/Image mono8, the image's header: class id per pixel (255 = ignore).

Receive timestamps (what `ros2 bag play` schedules by) equal the header stamps. /tf_static and
/gt/* are offered reliable + transient local (late subscribers get the latest), the sensor
topics reliable + volatile.

Files are rosbag2 metadata **version 8** (`BAG_VERSION`): ROS 2 Humble reads it (its reader
ignores the newer keys); version 9 writes `offered_qos_profiles` as a YAML list, which Humble's
reader cannot parse. Storage: sqlite3 (default) or MCAP.

Types come from `bag_typestore()`: rosbags' Humble store (sensor_msgs, geometry_msgs, tf2_msgs,
rosgraph_msgs, visualization_msgs, diagnostic_msgs, ...; the same definitions and type hashes as
Jazzy/Kilted for these) plus vision_msgs registered from its .msg files (third_party/vision_msgs
in the source tree, else an installed share/vision_msgs/msg). `ensure_msgtype` adds any other
type whose .msg file an installed ROS prefix has.

Reading (`BagReader`) yields `DecodedMessage`s in receive-time order with numpy payloads:
PointCloud2 -> (N, 4) float32 x, y, z, intensity scaled to [0, 1]; Image -> (H, W, 3) uint8 RGB,
mono8 -> (H, W) uint8; CameraInfo -> `CameraInfoData`; Detection2DArray -> `BevDetections`;
TFMessage -> list of `StaticTransform`; other types -> the rosbags message object. The
conversions are the node's own (pointcloud2_to_array, image_to_rgb / image_to_mono8), which
accept rosbags messages as they are.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

from mtl_perception_ros.core.camera import invert_rigid
from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.image import image_to_mono8, image_to_rgb
from mtl_perception_ros.messages.pointcloud2 import pointcloud2_to_array

BAG_VERSION = 8
STORAGE_PLUGINS = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}

POINTS_TOPIC = '/points'
IMAGE_TOPIC = '/image'
CAMERA_INFO_TOPIC = '/camera_info'
TF_STATIC_TOPIC = '/tf_static'
GT_DETECTIONS_TOPIC = '/gt/detections'
GT_SEMANTIC_TOPIC = '/gt/semantic'
VEHICLE_FRAME = 'vehicle'
LIDAR_FRAME = 'lidar'
CAMERA_FRAME = 'camera_front'
POINT_FIELDS = ('x', 'y', 'z', 'intensity')
INTENSITY_SCALE_IN_BAG = 255.0          # bag intensity = reflectance * 255
DEFAULT_INTENSITY_SCALE = 1.0 / 255.0   # the node's default `intensity_scale`

POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
DETECTION2D_ARRAY = 'vision_msgs/msg/Detection2DArray'

_REPO_VISION_MSGS = Path(__file__).resolve().parents[2] / 'third_party' / 'vision_msgs' / 'msg'
_FLOAT32 = 7   # sensor_msgs/PointField.FLOAT32


# ----------------------------------------------------------------------------- types
def ros_prefixes() -> list[Path]:
    """Install prefixes that may hold share/<package>/msg: AMENT_PREFIX_PATH, then this Python's prefix."""
    paths = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return paths + [Path(sys.prefix)]


def find_msg_file(msgtype: str) -> Path | None:
    """The .msg file of 'pkg/msg/Name' in an installed ROS prefix (vision_msgs: also third_party/), or None."""
    package, _, name = msgtype.split('/')
    candidates = [_REPO_VISION_MSGS / f'{name}.msg'] if package == 'vision_msgs' else []
    candidates += [prefix / 'share' / package / 'msg' / f'{name}.msg' for prefix in ros_prefixes()]
    return next((path for path in candidates if path.is_file()), None)


def _referenced_types(fields) -> set[str]:
    names = set()
    for _, (kind, detail) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, detail = detail[0]
        if kind == Nodetype.NAME:
            names.add(detail)
    return names


def ensure_msgtype(typestore, msgtype: str) -> bool:
    """Register `msgtype` (and the types it uses) from installed .msg files unless known; False when not found."""
    pending, found = [msgtype], {}
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs or name in found:
            continue
        path = find_msg_file(name) if name.count('/') == 2 else None
        if path is None:
            return False
        parsed = get_types_from_msg(path.read_text(), name)
        found.update(parsed)
        pending.extend(_referenced_types(parsed[name][1]))
    if found:
        typestore.register(found)
    return True


@functools.lru_cache(maxsize=1)
def bag_typestore():
    """rosbags' ROS 2 Humble typestore with vision_msgs registered (shared; `ensure_msgtype` extends it)."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg_dir = _REPO_VISION_MSGS if _REPO_VISION_MSGS.is_dir() else None
    if msg_dir is None:
        installed = find_msg_file('vision_msgs/msg/Detection2DArray')
        msg_dir = installed.parent if installed is not None else None
    if msg_dir is not None:
        types = {}
        for path in sorted(msg_dir.glob('*.msg')):
            types.update(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
        typestore.register(types)
    return typestore


def msg_class(msgtype: str):
    """The rosbags message class of 'pkg/msg/Name' (vision_msgs included)."""
    typestore = bag_typestore()
    if msgtype not in typestore.types and not ensure_msgtype(typestore, msgtype):
        raise KeyError(f'message type {msgtype} is unknown: no definition in rosbags and no {msgtype}.msg '
                       f'under {[str(p) for p in ros_prefixes()]}/share')
    return typestore.types[msgtype]


def serialize(msg) -> bytes:
    """A rosbags message -> CDR bytes (little endian, with the 4-byte encapsulation header, as rmw sends them)."""
    return bytes(bag_typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str):
    """CDR bytes -> rosbags message object."""
    msg_class(msgtype)
    return bag_typestore().deserialize_cdr(data, msgtype)


# ----------------------------------------------------------------------------- QoS
def qos_profile(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A rosbag2 offered QoS profile (deadline, lifespan and lease 0 = the rmw default)."""
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, int(depth),
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


SENSOR_QOS = qos_profile(reliable=True, transient_local=False, depth=10)
LATCHED_QOS = qos_profile(reliable=True, transient_local=True, depth=1)
GROUND_TRUTH_QOS = qos_profile(reliable=True, transient_local=True, depth=10)


def is_latched_topic(topic: str) -> bool:
    """/tf_static and the ground-truth topics (/gt/...) are offered transient local."""
    return topic == TF_STATIC_TOPIC or topic.startswith('/gt/')


# ----------------------------------------------------------------------------- builders: numpy -> rosbags messages
def _type(name: str):
    return bag_typestore().types[name]


def time_msg(stamp_ns: int):
    """builtin_interfaces/Time of integer nanoseconds (>= 0)."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f'stamp {stamp_ns} ns is negative; ROS times are >= 0')
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return _type('builtin_interfaces/msg/Time')(sec=sec, nanosec=nanosec)


def time_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rosbags or rclpy) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_msg(stamp_ns: int, frame_id: str):
    return _type('std_msgs/msg/Header')(stamp=time_msg(stamp_ns), frame_id=str(frame_id))


def pointcloud2_msg(points: np.ndarray, stamp_ns: int, frame_id: str, field_names: Sequence[str] = POINT_FIELDS):
    """(N, k) float -> sensor_msgs/PointCloud2 with k packed little-endian FLOAT32 fields.

    The layout array_to_pointcloud2 writes by default: offsets 0, 4, ..., point_step = 4 k,
    height 1, row_step = width * point_step, is_dense = all values finite.
    """
    field_names = tuple(field_names)
    values = np.asarray(points)
    if values.ndim != 2 or values.shape[1] != len(field_names):
        raise ConversionError(f'points has shape {values.shape}, expected (N, {len(field_names)}) '
                              f'for fields {list(field_names)}')
    packed = np.ascontiguousarray(values, dtype='<f4')
    point_field = _type('sensor_msgs/msg/PointField')
    fields = [point_field(name=name, offset=4 * j, datatype=_FLOAT32, count=1) for j, name in enumerate(field_names)]
    point_step = 4 * len(field_names)
    return _type(POINTCLOUD2)(
        header=header_msg(stamp_ns, frame_id), height=1, width=len(packed), fields=fields, is_bigendian=False,
        point_step=point_step, row_step=point_step * len(packed), data=packed.view(np.uint8).reshape(-1),
        is_dense=bool(np.isfinite(packed).all()))


def image_msg(pixels: np.ndarray, stamp_ns: int, frame_id: str):
    """(H, W, 3) uint8 -> Image rgb8, (H, W) uint8 -> Image mono8 (no row padding)."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ConversionError(f'image has shape {pixels.shape} {pixels.dtype}, expected (H, W, 3) uint8 (rgb8) '
                              'or (H, W) uint8 (mono8)')
    channels = 1 if pixels.ndim == 2 else 3
    return _type(IMAGE)(header=header_msg(stamp_ns, frame_id), height=pixels.shape[0], width=pixels.shape[1],
                        encoding='mono8' if channels == 1 else 'rgb8', is_bigendian=0,
                        step=pixels.shape[1] * channels, data=pixels.reshape(-1))


def camera_info_msg(camera_matrix: np.ndarray, image_hw: Sequence[int], stamp_ns: int, frame_id: str):
    """K (3, 3) of an undistorted image of image_hw (rows, cols) -> CameraInfo (D zeros, R = I, P = [K 0])."""
    k = np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    roi = _type('sensor_msgs/msg/RegionOfInterest')(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _type(CAMERA_INFO)(header=header_msg(stamp_ns, frame_id), height=int(image_hw[0]), width=int(image_hw[1]),
                              distortion_model='plumb_bob', d=np.zeros(5), k=k.reshape(-1).copy(),
                              r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method: stable for any angle)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_rotation(quaternion: Sequence[float]) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> 3x3 rotation."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def transform_stamped_msg(parent_frame: str, child_frame: str, parent_from_child: np.ndarray, stamp_ns: int):
    """geometry_msgs/TransformStamped: the pose of `child_frame` in `parent_frame` (4x4, child -> parent)."""
    matrix = np.asarray(parent_from_child, dtype=np.float64).reshape(4, 4)
    qx, qy, qz, qw = rotation_to_quaternion(matrix[:3, :3]).tolist()
    tx, ty, tz = matrix[:3, 3].tolist()
    transform = _type('geometry_msgs/msg/Transform')(
        translation=_type('geometry_msgs/msg/Vector3')(x=tx, y=ty, z=tz),
        rotation=_type('geometry_msgs/msg/Quaternion')(x=qx, y=qy, z=qz, w=qw))
    return _type('geometry_msgs/msg/TransformStamped')(header=header_msg(stamp_ns, parent_frame),
                                                       child_frame_id=child_frame, transform=transform)


def sensor_transforms_msg(vehicle_to_camera: np.ndarray, stamp_ns: int):
    """tf2_msgs/TFMessage: vehicle -> lidar (identity) and vehicle -> camera_front (optical frame)."""
    return _type(TF_MESSAGE)(transforms=[
        transform_stamped_msg(VEHICLE_FRAME, LIDAR_FRAME, np.eye(4), stamp_ns),
        transform_stamped_msg(VEHICLE_FRAME, CAMERA_FRAME, invert_rigid(np.asarray(vehicle_to_camera, float)),
                              stamp_ns)])


def detection2d_array_msg(boxes: np.ndarray, class_names: Sequence[str], classes, stamp_ns: int, frame_id: str,
                          track_ids=None, scores=None):
    """(M, 7) boxes -> vision_msgs/Detection2DArray in the metric BEV convention of
    output_messages.detection2d_array: centre x, y [m], theta = yaw, size_x = length, size_y = width;
    results[0] = (class name, score; 1 when `scores` is None); id = track id ('' for < 0 / None)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    count = len(boxes)
    scores = np.ones(count) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    ids = [''] * count if track_ids is None else ['' if int(t) < 0 else str(int(t)) for t in np.reshape(track_ids, -1)]
    if not len(classes) == len(scores) == len(ids) == count:
        raise ConversionError(f'{count} boxes, {len(classes)} classes, {len(scores)} scores, {len(ids)} track ids; '
                              'expected one each')
    if count and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise ConversionError(f'class ids {sorted(set(classes.tolist()))} outside 0..{len(class_names) - 1} '
                              f'(class names {list(class_names)})')
    header = header_msg(stamp_ns, frame_id)
    point, pose, quaternion = (_type(f'geometry_msgs/msg/{name}') for name in ('Point', 'Pose', 'Quaternion'))
    covariance = _type('geometry_msgs/msg/PoseWithCovariance')
    detections = []
    for (x, y, _, length, width, _, yaw), cls, score, track_id in zip(boxes.tolist(), classes.tolist(),
                                                                      scores.tolist(), ids):
        result = _type('vision_msgs/msg/ObjectHypothesisWithPose')(   # pose left default, as the node does
            hypothesis=_type('vision_msgs/msg/ObjectHypothesis')(class_id=class_names[cls], score=score),
            pose=covariance(pose=pose(position=point(x=0.0, y=0.0, z=0.0),
                                      orientation=quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
                            covariance=np.zeros(36)))
        bbox = _type('vision_msgs/msg/BoundingBox2D')(
            center=_type('vision_msgs/msg/Pose2D')(position=_type('vision_msgs/msg/Point2D')(x=x, y=y), theta=yaw),
            size_x=length, size_y=width)
        detections.append(_type('vision_msgs/msg/Detection2D')(header=header, results=[result], bbox=bbox,
                                                                id=track_id))
    return _type(DETECTION2D_ARRAY)(header=header, detections=detections)


# ----------------------------------------------------------------------------- writer
class BagWriter:
    """A rosbag2 (metadata version 8) being written; topics are added on first use.

        with BagWriter(path, storage='mcap') as bag:
            bag.write(POINTS_TOPIC, pointcloud2_msg(points, stamp_ns, 'vehicle'), stamp_ns)

    `path` must not exist (rosbags never overwrites). Nothing is readable until `close()`
    (leaving the `with` block) writes metadata.yaml.
    """

    def __init__(self, path, storage: str = 'sqlite3'):
        if storage not in STORAGE_PLUGINS:
            raise ValueError(f'storage {storage!r}: expected one of {sorted(STORAGE_PLUGINS)}')
        self.path = Path(path)
        self.typestore = bag_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> 'BagWriter':
        self._writer.open()
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Qos | Sequence[Qos] | None = None):
        """Declare `topic` with its type and offered QoS (default: LATCHED/GROUND_TRUTH for /tf_static
        and /gt/..., else SENSOR_QOS). Returns the rosbags connection."""
        if topic in self._connections:
            known = self._connections[topic].msgtype
            if known != msgtype:
                raise ValueError(f'topic {topic} was added as {known}, now written as {msgtype}')
            return self._connections[topic]
        msg_class(msgtype)   # registers types found in an installed prefix, or raises naming the type
        if qos is None:
            qos = (LATCHED_QOS if topic == TF_STATIC_TOPIC
                   else GROUND_TRUTH_QOS if is_latched_topic(topic) else SENSOR_QOS)
        profiles = [qos] if isinstance(qos, Qos) else list(qos)
        connection = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                 offered_qos_profiles=profiles)
        self._connections[topic] = connection
        self.counts[topic] = 0
        return connection

    def write(self, topic: str, msg, timestamp_ns: int) -> None:
        """Serialize a rosbags message and store it at receive time `timestamp_ns`."""
        self.write_raw(topic, msg.__msgtype__, serialize(msg), timestamp_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int) -> None:
        """Store CDR bytes (e.g. from an rclpy raw subscription) at receive time `timestamp_ns`."""
        connection = self.add_topic(topic, msgtype)
        self._writer.write(connection, int(timestamp_ns), data)
        self.counts[topic] += 1

    def set_custom_data(self, key: str, value: str) -> None:
        """A string in metadata.yaml's custom_data (e.g. class names as JSON)."""
        self._writer.set_custom_data(key, value)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> 'BagWriter':
        return self.open()

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.abort()


# ----------------------------------------------------------------------------- reader: rosbags messages -> numpy
@dataclass
class BevDetections:
    """Boxes of a Detection2DArray (metric BEV convention): boxes (M, 5) float64 x, y [m], length,
    width [m], yaw [rad]; class_names (M,) str; scores (M,) float64; track_ids (M,) int64, -1 = none."""

    boxes: np.ndarray
    class_names: list
    scores: np.ndarray
    track_ids: np.ndarray


@dataclass
class CameraInfoData:
    """camera_matrix (3, 3) float64, distortion (n,) float64, image_hw (rows, cols), model name."""

    camera_matrix: np.ndarray
    distortion: np.ndarray
    image_hw: tuple
    distortion_model: str


@dataclass
class StaticTransform:
    """parent_from_child (4, 4) float64 maps points in `child` to `parent`; stamp in ns."""

    parent: str
    child: str
    parent_from_child: np.ndarray
    stamp_ns: int


@dataclass
class DecodedMessage:
    """One bag message. timestamp_ns = receive time in the bag; stamp_ns / frame_id from the
    header (None / '' for headerless types); data = numpy payload (module docstring); msg = the
    rosbags message object."""

    topic: str
    msgtype: str
    timestamp_ns: int
    stamp_ns: int | None
    frame_id: str
    data: Any
    msg: Any = field(repr=False, default=None)


def bev_detections(msg) -> BevDetections:
    """vision_msgs/Detection2DArray (rosbags or rclpy) -> BevDetections."""
    rows = [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta)
            for d in msg.detections]
    names = [d.results[0].hypothesis.class_id if len(d.results) else '' for d in msg.detections]
    scores = [d.results[0].hypothesis.score if len(d.results) else 0.0 for d in msg.detections]
    ids = [int(d.id) if d.id.strip().lstrip('-').isdigit() else -1 for d in msg.detections]
    return BevDetections(np.array(rows, dtype=np.float64).reshape(-1, 5), names,
                         np.array(scores, dtype=np.float64), np.array(ids, dtype=np.int64))


def camera_info_data(msg) -> CameraInfoData:
    return CameraInfoData(np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy(),
                          np.asarray(msg.d, dtype=np.float64).copy(), (int(msg.height), int(msg.width)),
                          str(msg.distortion_model))


def static_transforms(msg) -> list[StaticTransform]:
    """tf2_msgs/TFMessage -> StaticTransform per entry."""
    out = []
    for item in msg.transforms:
        matrix = np.eye(4)
        rotation = item.transform.rotation
        translation = item.transform.translation
        matrix[:3, :3] = quaternion_to_rotation([rotation.x, rotation.y, rotation.z, rotation.w])
        matrix[:3, 3] = [translation.x, translation.y, translation.z]
        out.append(StaticTransform(item.header.frame_id, item.child_frame_id, matrix, time_to_ns(item.header.stamp)))
    return out


def decode_message(topic: str, msgtype: str, timestamp_ns: int, msg,
                   intensity_scale: float = DEFAULT_INTENSITY_SCALE,
                   point_fields: Sequence[str] = POINT_FIELDS) -> DecodedMessage:
    """A rosbags message -> DecodedMessage with the numpy payload of its type (module docstring)."""
    header = getattr(msg, 'header', None)
    stamp_ns = time_to_ns(header.stamp) if header is not None else None
    frame_id = str(header.frame_id) if header is not None else ''
    if msgtype == POINTCLOUD2:
        scales = {'intensity': intensity_scale} if 'intensity' in point_fields else None
        data, _ = pointcloud2_to_array(msg, point_fields, scales=scales, drop_nonfinite=False)
    elif msgtype == IMAGE:
        data = np.array(image_to_mono8(msg)) if msg.encoding == 'mono8' else np.array(image_to_rgb(msg))
    elif msgtype == CAMERA_INFO:
        data = camera_info_data(msg)
    elif msgtype == DETECTION2D_ARRAY:
        data = bev_detections(msg)
    elif msgtype == TF_MESSAGE:
        data = static_transforms(msg)
    else:
        data = msg
    return DecodedMessage(topic, msgtype, int(timestamp_ns), stamp_ns, frame_id, data, msg)


class BagReader:
    """Reads a rosbag2 folder (sqlite3 or MCAP; any recorder's, with or without stored definitions).

        reader = BagReader('bags/val')
        for m in reader.decoded([POINTS_TOPIC, IMAGE_TOPIC]):   # receive-time order
            sync.add(0 if m.topic == POINTS_TOPIC else 1, m.stamp_ns, m.data)
        truth = reader.by_stamp(GT_DETECTIONS_TOPIC)           # {cloud stamp ns: DecodedMessage}
        vehicle_to_camera = reader.vehicle_to_camera()          # from /tf_static

    Message types come from the bag's stored definitions, else from `bag_typestore()`.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / 'metadata.yaml').is_file():
            raise FileNotFoundError(f'{self.path}: not a rosbag2 folder (expected a folder with metadata.yaml)')
        self._reader = AnyReader([self.path], default_typestore=bag_typestore())
        self._reader.open()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """{topic: (message type, message count)}."""
        return {topic: (info.msgtype, info.msgcount) for topic, info in self._reader.topics.items()}

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        """Receive time of the last message + 1 ns (rosbags' convention)."""
        return int(self._reader.end_time)

    @property
    def metadata(self) -> dict:
        """metadata.yaml's `rosbag2_bagfile_information` (version, storage_identifier, custom_data, ...)."""
        with open(self.path / 'metadata.yaml', encoding='utf-8') as stream:
            return yaml.safe_load(stream)['rosbag2_bagfile_information']

    @property
    def custom_data(self) -> dict[str, str]:
        """metadata.yaml custom_data (empty when none)."""
        return dict(self.metadata.get('custom_data') or {})

    def offered_qos(self, topic: str) -> list[Qos]:
        """The QoS profiles recorded for `topic` (may be empty)."""
        return [qos for c in self._reader.connections if c.topic == topic
                for qos in getattr(c.ext, 'offered_qos_profiles', [])]

    def _connections(self, topics: Iterable[str] | None):
        connections = self._reader.connections
        if topics is None:
            return connections
        topics = list(topics)
        unknown = sorted(set(topics) - {c.topic for c in connections})
        if unknown:
            raise KeyError(f'{self.path}: no topics {unknown}; the bag has {sorted(self.topics)}')
        return [c for c in connections if c.topic in topics]

    def raw(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, message type, receive time ns, CDR bytes) in receive-time order."""
        for connection, timestamp, data in self._reader.messages(connections=self._connections(topics)):
            yield connection.topic, connection.msgtype, int(timestamp), data

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, message type, receive time ns, rosbags message object) in receive-time order."""
        for topic, msgtype, timestamp, data in self.raw(topics):
            yield topic, msgtype, timestamp, self._reader.deserialize(data, msgtype)

    def decoded(self, topics: Iterable[str] | None = None, intensity_scale: float = DEFAULT_INTENSITY_SCALE,
                point_fields: Sequence[str] = POINT_FIELDS) -> Iterator[DecodedMessage]:
        """DecodedMessage per message in receive-time order (numpy payloads, module docstring)."""
        for topic, msgtype, timestamp, msg in self.messages(topics):
            yield decode_message(topic, msgtype, timestamp, msg, intensity_scale, point_fields)

    def by_stamp(self, topic: str, **kwargs) -> dict[int, DecodedMessage]:
        """{header stamp ns: DecodedMessage} of one topic (e.g. ground truth to look up by cloud stamp)."""
        return {m.stamp_ns: m for m in self.decoded([topic], **kwargs)}

    def static_transform(self, parent: str, child: str) -> np.ndarray:
        """parent_from_child 4x4 from the bag's last /tf_static entry for the pair; KeyError when absent."""
        found = None
        if TF_STATIC_TOPIC in self.topics:
            for message in self.decoded([TF_STATIC_TOPIC]):
                for item in message.data:
                    if item.parent == parent and item.child == child:
                        found = item.parent_from_child
        if found is None:
            raise KeyError(f'{self.path}: no {parent} -> {child} transform on {TF_STATIC_TOPIC}')
        return found

    def vehicle_to_camera(self, camera_frame: str = CAMERA_FRAME, vehicle_frame: str = VEHICLE_FRAME) -> np.ndarray:
        """4x4 vehicle -> camera optical frame (the project's `vehicle_to_camera`) from /tf_static."""
        return invert_rigid(self.static_transform(vehicle_frame, camera_frame))
