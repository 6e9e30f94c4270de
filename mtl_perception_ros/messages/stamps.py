"""builtin_interfaces/Time <-> integer nanoseconds, and std_msgs/Header (duck-typed: rclpy or rosbags)."""
from __future__ import annotations

from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message

__all__ = ['stamp_to_ns', 'ns_to_time', 'header_msg']

_NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (e.g. `msg.header.stamp`, of either world) -> integer nanoseconds."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_time(stamp_ns: int, new: MessageFactory = ros_message):
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f'stamp {stamp_ns} ns is negative; ROS times are >= 0')
    sec, nanosec = divmod(stamp_ns, _NS_PER_S)
    return new('builtin_interfaces/msg/Time', sec=sec, nanosec=nanosec)


def header_msg(stamp_ns: int, frame_id: str, new: MessageFactory = ros_message):
    """std_msgs/Header at `stamp_ns` in `frame_id`."""
    return new('std_msgs/msg/Header', stamp=ns_to_time(stamp_ns, new), frame_id=str(frame_id))
