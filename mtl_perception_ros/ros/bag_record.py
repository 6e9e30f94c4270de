"""mtl_bag_record: record topics into a rosbag2 (rclpy + rosbags; for where `ros2 bag record` is missing).

    mtl_bag_record --topics T [T ...] --out BAG_DIR [--duration S] [--storage sqlite3|mcap]
        [--qos auto|reliable|best_effort] [--until TOPIC=N ... [--linger S]]

E.g. the node's outputs: `mtl_bag_record --topics /mtl_perception/detections
/mtl_perception/detections_3d /diagnostics --out runs/replay_out --duration 60`.

Each topic is subscribed as soon as a publisher for it appears (its type is taken from the
graph), with raw (serialized) delivery: the CDR bytes go into the bag unchanged, stamped with
the node clock's receive time (sim time under `--ros-args -p use_sim_time:=true`). QoS `auto`
(default) adapts to the publishers as `ros2 bag record` does: reliable when all of them are
reliable, transient local when all of them are (so latched topics such as LabelInfo are caught);
their offered profiles are stored in the bag. The bag is rosbag2 metadata version 8 (Humble and
later read it); types are rosbags' plus vision_msgs plus any .msg an installed ROS prefix has.
Stops after --duration seconds, on Ctrl-C (SIGINT) or SIGTERM, or (--until) once each listed
topic has N messages and --linger more seconds have passed (e.g. one answer per frame of a replayed
bag and one more /diagnostics); writes metadata.yaml and exits 0.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
try:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
except ImportError as error:   # rosbags has no rosdep key: say how to install it
    from mtl_perception_ros.bags.rosbags_requirement import report_missing_rosbags
    report_missing_rosbags(error)

from mtl_perception_ros.bags.typestore import msg_class
from mtl_perception_ros.bags.writer import BagWriter
from mtl_perception_ros.messages.message_factory import ros_message_class
from mtl_perception_ros.ros.shutdown_signals import init_ros, main_frame

DISCOVERY_PERIOD_S = 0.2
RECORD_DEPTH = 100          # subscriber queue: a busy recorder loses nothing in short bursts

_RELIABILITY = {ReliabilityPolicy.RELIABLE: QosReliability.RELIABLE,
                ReliabilityPolicy.BEST_EFFORT: QosReliability.BEST_EFFORT}
_DURABILITY = {DurabilityPolicy.TRANSIENT_LOCAL: QosDurability.TRANSIENT_LOCAL,
               DurabilityPolicy.VOLATILE: QosDurability.VOLATILE}
_HISTORY = {HistoryPolicy.KEEP_LAST: QosHistory.KEEP_LAST, HistoryPolicy.KEEP_ALL: QosHistory.KEEP_ALL}


def _duration(value) -> QosTime:
    nanoseconds = int(getattr(value, 'nanoseconds', 0) or 0)
    if nanoseconds <= 0 or nanoseconds >= 2 ** 63 - 1:    # unset or infinite -> the rmw default
        return QosTime(0, 0)
    return QosTime(*divmod(nanoseconds, 1_000_000_000))


def offered_qos(profile: QoSProfile) -> Qos:
    """rclpy QoSProfile -> the rosbags Qos that rosbag2 stores as an offered profile."""
    return Qos(_HISTORY.get(profile.history, QosHistory.SYSTEM_DEFAULT), int(profile.depth),
               _RELIABILITY.get(profile.reliability, QosReliability.SYSTEM_DEFAULT),
               _DURABILITY.get(profile.durability, QosDurability.SYSTEM_DEFAULT),
               _duration(profile.deadline), _duration(profile.lifespan), QosLiveliness.AUTOMATIC,
               _duration(profile.liveliness_lease_duration), False)


def subscription_qos(offered: list[QoSProfile], mode: str = 'auto') -> QoSProfile:
    """Subscriber QoS that matches every offered profile (auto), or the forced reliability."""
    if mode == 'auto':
        reliable = bool(offered) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    else:
        reliable = mode == 'reliable'
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def absolute_topic(name: str, namespace: str = '/') -> str:
    """'/a/b' as is; 'b' under the node's namespace."""
    if name.startswith('/'):
        return name
    return f'{namespace.rstrip("/")}/{name}'


class BagRecorder:
    """Subscribes to the requested topics as their publishers appear and writes what arrives."""

    def __init__(self, node, topics, bag: BagWriter, qos_mode: str = 'auto'):
        self.node = node
        self.bag = bag
        self.qos_mode = qos_mode
        self.logger = node.get_logger()
        self.waiting = [absolute_topic(t, node.get_namespace()) for t in topics]
        self.subscriptions = {}
        self.skipped: dict[str, str] = {}

    def discover(self) -> None:
        """Subscribe to every requested topic that now has a publisher of a known type."""
        for topic in list(self.waiting):
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self.waiting.remove(topic)
            msgtype = publishers[0].topic_type
            try:
                msg_class(msgtype)          # rosbags knows it (or an installed .msg defines it)
                cls = ros_message_class(msgtype)  # rclpy has its type support
            except (KeyError, ImportError, AttributeError) as error:
                self.skipped[topic] = f'{msgtype}: {error}'
                self.logger.error(f'{topic}: cannot record {msgtype} ({error})')
                continue
            profiles = [p.qos_profile for p in publishers]
            self.bag.add_topic(topic, msgtype, [offered_qos(p) for p in profiles])
            self.subscriptions[topic] = self.node.create_subscription(
                cls, topic, self._writer(topic, msgtype), subscription_qos(profiles, self.qos_mode), raw=True)
            self.logger.info(f'recording {topic} ({msgtype})')

    def _writer(self, topic: str, msgtype: str):
        clock = self.node.get_clock()

        def write(data: bytes) -> None:
            self.bag.write_raw(topic, msgtype, data, clock.now().nanoseconds)
        return write


def parse_until(items) -> dict[str, int]:
    """['/a=3', 'b=4'] -> {'/a': 3, 'b': 4}; ValueError with the bad item."""
    wanted = {}
    for item in items or ():
        topic, _, count = item.rpartition('=')
        if not topic or not count.isdigit() or int(count) < 1:
            raise ValueError(f'--until {item!r}: expected TOPIC=N with N >= 1')
        wanted[topic] = int(count)
    return wanted


def reached(counts: dict[str, int], wanted: dict[str, int]) -> bool:
    """Every wanted topic has at least its count (False when nothing is wanted)."""
    return bool(wanted) and all(counts.get(topic, 0) >= n for topic, n in wanted.items())


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='mtl_bag_record', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--topics', nargs='+', required=True, help='topics to record')
    parser.add_argument('--out', required=True, help='rosbag2 folder to create (must not exist)')
    parser.add_argument('--duration', type=float, default=None, help='stop after S seconds (default: Ctrl-C)')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--qos', choices=('auto', 'reliable', 'best_effort'), default='auto',
                        help='subscriber reliability (auto: match the publishers)')
    parser.add_argument('--until', nargs='+', metavar='TOPIC=N', default=[],
                        help='stop once each of these topics has N messages (topics as in --topics)')
    parser.add_argument('--linger', type=float, default=0.0, metavar='S',
                        help='with --until: record S seconds more once the counts are reached')
    options = parser.parse_args(argv)
    try:
        options.until = parse_until(options.until)
    except ValueError as error:
        parser.error(str(error))
    unknown = sorted(set(options.until) - set(options.topics))
    if unknown:
        parser.error(f'--until names topics that are not recorded: {unknown}')
    if options.linger < 0:
        parser.error(f'--linger must be >= 0, got {options.linger}')
    return options


def main(args=None) -> int:
    argv = rclpy.utilities.remove_ros_args(args=sys.argv if args is None else args)[1:]
    options = parse_args(argv)
    if Path(options.out).exists():
        print(f'error: {options.out} exists; rosbag2 folders are never overwritten (choose another --out)',
              file=sys.stderr)
        return 1
    stop = init_ros(args)
    node = rclpy.create_node('mtl_bag_record')
    bag = BagWriter(options.out, storage=options.storage).open()
    recorder = BagRecorder(node, options.topics, bag, options.qos)
    logger = node.get_logger()
    deadline = None if options.duration is None else time.monotonic() + options.duration
    wanted = {absolute_topic(t, node.get_namespace()): n for t, n in options.until.items()}

    def cleanup():
        for subscription in recorder.subscriptions.values():
            node.destroy_subscription(subscription)
        bag.close()
        node.destroy_node()

    with main_frame('mtl_bag_record', cleanup=cleanup):
        next_discovery = 0.0
        while not stop.requested and rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            if recorder.waiting and time.monotonic() >= next_discovery:
                recorder.discover()
                next_discovery = time.monotonic() + DISCOVERY_PERIOD_S
            rclpy.spin_once(node, timeout_sec=0.05)
            if wanted and reached(bag.counts, wanted):
                logger.info('reached ' + ', '.join(f'{t} {n}' for t, n in wanted.items())
                            + (f'; recording {options.linger:g} s more' if options.linger else ''))
                wanted = {}
                linger_end = time.monotonic() + options.linger
                deadline = linger_end if deadline is None else min(deadline, linger_end)
    logger.info(f'wrote {options.out}: ' + (', '.join(f'{t} {n}' for t, n in bag.counts.items()) or 'no messages')
                + (f'; never published: {recorder.waiting}' if recorder.waiting else ''))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
