"""Offered QoS profiles stored in the bags (what `ros2 bag play` / `mtl_bag_play` offer on replay)."""
from __future__ import annotations

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from mtl_perception_ros.bags.topics import TF_STATIC_TOPIC, is_latched_topic

__all__ = ['qos_profile', 'SENSOR_QOS', 'LATCHED_QOS', 'GROUND_TRUTH_QOS', 'default_qos']


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


def default_qos(topic: str) -> Qos:
    """LATCHED_QOS for /tf_static, GROUND_TRUTH_QOS for the other latched topics (/gt/...), else SENSOR_QOS."""
    if topic == TF_STATIC_TOPIC:
        return LATCHED_QOS
    return GROUND_TRUTH_QOS if is_latched_topic(topic) else SENSOR_QOS
