"""Writing rosbag2 folders (metadata version 8, sqlite3 or MCAP) with rosbags, without ROS."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer

from mtl_perception_ros.bags.qos import default_qos
from mtl_perception_ros.bags.topics import BAG_VERSION
from mtl_perception_ros.bags.typestore import bag_typestore, msg_class, serialize

__all__ = ['STORAGE_PLUGINS', 'BagWriter']

STORAGE_PLUGINS = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}


class BagWriter:
    """A rosbag2 (metadata version 8) being written; topics are added on first use.

        with BagWriter(path, storage='mcap') as bag:
            header = header_msg(stamp_ns, 'vehicle', new=bag_message)
            bag.write(POINTS_TOPIC, array_to_pointcloud2(points, header=header, new=bag_message), stamp_ns)

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
        """Declare `topic` with its type and offered QoS (default: bags.qos.default_qos(topic)).
        Returns the rosbags connection."""
        if topic in self._connections:
            known = self._connections[topic].msgtype
            if known != msgtype:
                raise ValueError(f'topic {topic} was added as {known}, now written as {msgtype}')
            return self._connections[topic]
        msg_class(msgtype)   # registers types found in an installed prefix, or raises naming the type
        if qos is None:
            qos = default_qos(topic)
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
