"""4x4 rigid transforms <-> geometry_msgs/Transform(Stamped), quaternions by scipy's `Rotation`.

Quaternions are (x, y, z, w) as in ROS, with w >= 0 (q and -q are the same rotation; one sign
makes written bags reproducible).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message

__all__ = ['rotation_to_quaternion', 'quaternion_to_rotation', 'transform_to_matrix', 'transform_stamped']


def rotation_to_quaternion(rotation) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    quaternion = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    return -quaternion if quaternion[3] < 0 else quaternion


def quaternion_to_rotation(quaternion: Sequence[float]) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> 3x3 rotation."""
    return Rotation.from_quat(np.asarray(quaternion, dtype=np.float64)).as_matrix()


def transform_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform (either world) -> 4x4 float64 (child -> parent)."""
    rotation, translation = transform.rotation, transform.translation
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_rotation([rotation.x, rotation.y, rotation.z, rotation.w])
    matrix[:3, 3] = [translation.x, translation.y, translation.z]
    return matrix


def transform_stamped(parent_from_child, child_frame: str, header, new: MessageFactory = ros_message):
    """geometry_msgs/TransformStamped: the pose of `child_frame` in header.frame_id (4x4, child -> parent)."""
    matrix = np.asarray(parent_from_child, dtype=np.float64).reshape(4, 4)
    qx, qy, qz, qw = rotation_to_quaternion(matrix[:3, :3]).tolist()
    tx, ty, tz = matrix[:3, 3].tolist()
    transform = new('geometry_msgs/msg/Transform',
                    translation=new('geometry_msgs/msg/Vector3', x=tx, y=ty, z=tz),
                    rotation=new('geometry_msgs/msg/Quaternion', x=qx, y=qy, z=qz, w=qw))
    return new('geometry_msgs/msg/TransformStamped', header=header, child_frame_id=str(child_frame),
               transform=transform)
