"""Reading rosbag2 folders (any recorder's; sqlite3 or MCAP) as numpy, without ROS.

`BagReader` yields `DecodedMessage`s in receive-time order with numpy payloads:
PointCloud2 -> (N, 4) float32 x, y, z, intensity scaled to [0, 1]; Image -> (H, W, 3) uint8 RGB,
mono8 -> (H, W) uint8; CameraInfo -> messages.camera_info.CameraInfoData; Detection2DArray ->
`BevDetections`; TFMessage -> list of `StaticTransform`; other types -> the rosbags message
object. The conversions are the node's own (pointcloud2_to_array, image_to_rgb / image_to_mono8,
...), which accept rosbags messages as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos

from mtl_perception_ros.bags.topics import (CAMERA_FRAME, CAMERA_INFO, COMPRESSED_IMAGE, DEFAULT_INTENSITY_SCALE,
                                            DETECTION2D_ARRAY, IMAGE, POINT_FIELDS, POINTCLOUD2, TF_MESSAGE, TF_STATIC_TOPIC,
                                            VEHICLE_FRAME)
from mtl_perception_ros.bags.typestore import bag_typestore
from mtl_perception_ros.core.camera import invert_rigid
from mtl_perception_ros.messages.camera_info import camera_info_data
from mtl_perception_ros.messages.compressed_image import compressed_image_to_rgb
from mtl_perception_ros.messages.image import image_to_mono8, image_to_rgb
from mtl_perception_ros.messages.pointcloud2 import pointcloud2_to_array
from mtl_perception_ros.messages.stamps import stamp_to_ns
from mtl_perception_ros.messages.transforms import transform_to_matrix

__all__ = ['BagError', 'BevDetections', 'StaticTransform', 'DecodedMessage', 'bev_detections',
           'static_transforms', 'decode_message', 'BagReader']


class BagError(ValueError):
    """A rosbag2 folder that cannot be read (broken metadata.yaml, cut or damaged storage file);
    the message, one line, names the folder or file and what is wrong."""


def _one_line(error: BaseException) -> str:
    """The error's message on one line; prefixed by its type unless it is one of rosbags' own."""
    text = ' '.join(str(error).split())
    if type(error).__module__.startswith('rosbags') and text:
        return text
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


def read_metadata(path: Path) -> dict:
    """metadata.yaml's `rosbag2_bagfile_information` mapping; BagError when the file is not that."""
    try:
        with open(path, encoding='utf-8') as stream:
            document = yaml.safe_load(stream)
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
        problem = getattr(error, 'problem', None) or _one_line(error)
        raise BagError(f'{path}: not valid YAML ({where}{problem})') from None
    except (OSError, UnicodeDecodeError) as error:
        raise BagError(f'{path}: cannot be read ({_one_line(error)})') from None
    info = document.get('rosbag2_bagfile_information') if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise BagError(f'{path}: not rosbag2 metadata (expected a mapping `rosbag2_bagfile_information:`)')
    return info


@dataclass
class BevDetections:
    """Boxes of a Detection2DArray (metric BEV convention): boxes (M, 5) float64 x, y [m], length,
    width [m], yaw [rad]; class_names (M,) str; scores (M,) float64; track_ids (M,) int64, -1 = none."""

    boxes: np.ndarray
    class_names: list
    scores: np.ndarray
    track_ids: np.ndarray


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


def static_transforms(msg) -> list[StaticTransform]:
    """tf2_msgs/TFMessage -> StaticTransform per entry."""
    return [StaticTransform(item.header.frame_id, item.child_frame_id, transform_to_matrix(item.transform),
                            stamp_to_ns(item.header.stamp)) for item in msg.transforms]


def decode_message(topic: str, msgtype: str, timestamp_ns: int, msg,
                   intensity_scale: float = DEFAULT_INTENSITY_SCALE,
                   point_fields: Sequence[str] = POINT_FIELDS) -> DecodedMessage:
    """A rosbags message -> DecodedMessage with the numpy payload of its type (module docstring)."""
    header = getattr(msg, 'header', None)
    stamp_ns = stamp_to_ns(header.stamp) if header is not None else None
    frame_id = str(header.frame_id) if header is not None else ''
    if msgtype == POINTCLOUD2:
        scales = {'intensity': intensity_scale} if 'intensity' in point_fields else None
        data, _ = pointcloud2_to_array(msg, point_fields, scales=scales, drop_nonfinite=False)
    elif msgtype == IMAGE:
        data = np.array(image_to_mono8(msg)) if msg.encoding == 'mono8' else np.array(image_to_rgb(msg))
    elif msgtype == COMPRESSED_IMAGE:
        data = compressed_image_to_rgb(msg)
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

    Message types come from the bag's stored definitions, else from `bag_typestore()`. A broken
    metadata.yaml or a cut / damaged storage file raises BagError (a ValueError) on opening or
    while reading, naming the file.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / 'metadata.yaml').is_file():
            raise FileNotFoundError(f'{self.path}: not a rosbag2 folder (expected a folder with metadata.yaml)')
        self._metadata = read_metadata(self.path / 'metadata.yaml')
        self._reader = AnyReader([self.path], default_typestore=bag_typestore())
        try:
            self._reader.open()
        except Exception as error:   # rosbags, sqlite3, MCAP and YAML errors: all about the user's files
            reason = _one_line(error)
            # rosbags parses metadata.yaml while opening; its messages on it say "metadata"
            culprit = self.path / 'metadata.yaml' if 'metadata' in reason.lower() else self._files()
            raise BagError(f'{culprit}: cannot open the bag: {reason}') from None

    def _files(self) -> str:
        """The bag's storage file(s) as metadata.yaml lists them (for messages), else the folder."""
        names = self._metadata.get('relative_file_paths')
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return ', '.join(str(self.path / n) for n in names)
        return str(self.path)

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
    def metadata(self) -> dict:
        """metadata.yaml's `rosbag2_bagfile_information` (version, storage_identifier, custom_data, ...)."""
        return read_metadata(self.path / 'metadata.yaml')

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
        messages = self._reader.messages(connections=self._connections(topics))
        while True:
            try:   # only the bag's own reading is guarded: the consumer's errors never pass through here
                connection, timestamp, data = next(messages)
            except StopIteration:
                return
            except Exception as error:
                raise BagError(f'{self._files()}: cannot read the messages (cut or damaged?): '
                               f'{_one_line(error)}') from None
            yield connection.topic, connection.msgtype, int(timestamp), data

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, message type, receive time ns, rosbags message object) in receive-time order."""
        for topic, msgtype, timestamp, data in self.raw(topics):
            try:
                msg = self._reader.deserialize(data, msgtype)
            except Exception as error:
                raise BagError(f'{self._files()}: a {msgtype} message on {topic} at {timestamp} ns does not '
                               f'deserialize: {_one_line(error)}') from None
            yield topic, msgtype, timestamp, msg

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
