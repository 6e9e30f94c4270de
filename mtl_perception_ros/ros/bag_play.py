"""mtl_bag_play: publish a rosbag2's messages at the recorded rate (rclpy; for where `ros2 bag play` is missing).

    mtl_bag_play BAG_DIR [--rate 1.0] [--clock [HZ]] [--qos reliable|best_effort] [--topics T ...]
        [--delay S] [--wait-for-subscribers S] [--loop] [--ros-args -r /points:=/lidar/points ...]

Messages go out at their receive timestamps, spaced by (timestamp difference) / rate, paced
against the monotonic clock from the first one (no drift accumulates). The stored CDR bytes are
published as they are (rclpy publishes serialized messages), so what arrives is bit-exact.
QoS: topics recorded as transient local, /tf_static and /gt/... are reliable + transient local
(late subscribers get the last ones); other topics follow `--qos` (default reliable, which
best-effort subscribers such as the node's sensor-data inputs also receive). `--clock` publishes
rosgraph_msgs/Clock on /clock at HZ (default 100) and before every message, for nodes with
use_sim_time. /tf_static is played like any topic (the set-up builds tf2_msgs into the pip
environment), latched. Topics whose message package is not installed are skipped with a warning. Ends after the last message (or loops with --loop);
Ctrl-C (SIGINT) or SIGTERM stops it; both exit 0. On a ROS installation `ros2 bag play BAG_DIR` plays the
same bags.
"""
from __future__ import annotations

import argparse
import queue
import sys
import threading
import time

import rclpy
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
try:
    from rosbags.interfaces import QosDurability
except ImportError as error:   # rosbags has no rosdep key: say how to install it
    from mtl_perception_ros.bags.rosbags_requirement import report_missing_rosbags
    report_missing_rosbags(error)

from mtl_perception_ros.bags.reader import BagReader
from mtl_perception_ros.bags.topics import is_latched_topic
from mtl_perception_ros.messages.message_factory import ros_message_class
from mtl_perception_ros.messages.stamps import ns_to_time
from mtl_perception_ros.ros.shutdown_signals import StopRequest, init_ros, main_frame

READ_AHEAD = 64            # messages buffered by the reader thread
MAX_SLEEP_S = 0.05         # longest sleep, so Ctrl-C and the clock are served promptly
_END = object()


def topic_qos(topic: str, recorded, reliable: bool) -> QoSProfile:
    """Publisher QoS of `topic` given its recorded offered profiles (rosbags Qos list)."""
    latched = is_latched_topic(topic) or (
        bool(recorded) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in recorded))
    if latched:
        depth = max([q.depth for q in recorded] + [1])
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _read_messages(path, topics, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: (topic, receive ns, bytes) into `out` in time order, then _END (or the error)."""
    try:
        with BagReader(path) as reader:
            for topic, _, timestamp, data in reader.raw(topics):
                while not stop.is_set():
                    try:
                        out.put((topic, timestamp, bytes(data)), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        out.put(_END)
    except Exception as error:   # handed to the main thread, which reports it
        out.put(error)


class BagPlayer:
    """Publishers for a bag's topics and the paced publishing loop."""

    def __init__(self, node, bag_path, topics=None, rate: float = 1.0, reliable: bool = True,
                 clock_hz: float | None = None, stop: StopRequest | None = None):
        if rate <= 0:
            raise ValueError(f'--rate must be > 0, got {rate}')
        self.node = node
        self.stop = stop
        self.bag_path = bag_path
        self.rate = float(rate)
        self.logger = node.get_logger()
        with BagReader(bag_path) as reader:
            available = reader.topics
            requested = list(available) if not topics else list(topics)
            unknown = sorted(set(requested) - set(available))
            if unknown:
                raise ValueError(f'{bag_path}: no topics {unknown}; it has {sorted(available)}')
            self.publishers = {}
            for topic in requested:
                msgtype = available[topic][0]
                try:
                    cls = ros_message_class(msgtype)
                except (ImportError, AttributeError):
                    self.logger.warning(f'{topic}: message type {msgtype} is not installed here; not played')
                    continue
                self.publishers[topic] = node.create_publisher(cls, topic, topic_qos(topic, reader.offered_qos(topic),
                                                                                     reliable))
            first = next(reader.raw(list(self.publishers)), None) if self.publishers else None
            self.start_ns = None if first is None else first[2]
        if not self.publishers:
            raise ValueError(f'{bag_path}: none of the topics {requested} can be published here')
        self.clock_period_s = None if not clock_hz else 1.0 / float(clock_hz)
        self.clock_publisher = None
        if self.clock_period_s is not None:
            from rosgraph_msgs.msg import Clock
            self._clock_class = Clock
            self.clock_publisher = node.create_publisher(
                Clock, '/clock', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.published = {topic: 0 for topic in self.publishers}

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until every publisher has a subscriber, at most timeout_s; True when they all do."""
        deadline = time.monotonic() + timeout_s
        while not self._stopped():
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            if time.monotonic() >= deadline:
                missing = [t for t, p in self.publishers.items() if p.get_subscription_count() == 0]
                self.logger.warning(f'no subscriber after {timeout_s:.1f} s on {missing}; playing anyway')
                return False
            self._publish_clock(self.start_ns)
            time.sleep(MAX_SLEEP_S)
        return False

    def _stopped(self) -> bool:
        """A stop was requested (SIGINT / SIGTERM) or the context is shut down."""
        return (self.stop is not None and self.stop.requested) or not rclpy.ok(context=self.node.context)

    def _publish_clock(self, bag_ns) -> None:
        if self.clock_publisher is None or bag_ns is None:
            return
        msg = self._clock_class()
        msg.clock = ns_to_time(bag_ns)
        self.clock_publisher.publish(msg)

    def play_once(self, delay_s: float = 0.0) -> bool:
        """Publish every message once at the recorded pace; False when interrupted (shutdown)."""
        if self.start_ns is None:
            return True
        stop = threading.Event()
        buffer: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        reader = threading.Thread(target=_read_messages, args=(self.bag_path, list(self.publishers), buffer, stop),
                                  daemon=True)
        reader.start()
        wall_start = None
        next_clock = time.monotonic()
        try:
            while True:
                try:
                    item = buffer.get(timeout=MAX_SLEEP_S)
                except queue.Empty:       # the reader is slow: keep serving Ctrl-C
                    if self._stopped():
                        return False
                    continue
                if wall_start is None:   # the clock starts once the first message is at hand
                    wall_start = time.monotonic() + delay_s
                if item is _END:
                    return True
                if isinstance(item, Exception):
                    raise item
                topic, timestamp, data = item
                target = wall_start + (timestamp - self.start_ns) / 1e9 / self.rate
                while True:
                    if self._stopped():
                        return False
                    now = time.monotonic()
                    if self.clock_period_s is not None and now >= next_clock:
                        bag_now = self.start_ns + max(0.0, now - wall_start) * self.rate * 1e9
                        self._publish_clock(min(bag_now, timestamp))
                        next_clock = now + self.clock_period_s
                    remaining = target - now
                    if remaining <= 0:
                        break
                    wait = min(remaining, MAX_SLEEP_S)
                    if self.clock_period_s is not None:
                        wait = min(wait, max(0.0, next_clock - now))
                    time.sleep(wait)
                self._publish_clock(timestamp)
                self.publishers[topic].publish(data)
                self.published[topic] += 1
        finally:
            stop.set()

    def wait_for_acks(self, timeout_s: float = 2.0) -> None:
        """Give reliable subscribers the last messages before the process ends."""
        for publisher in self.publishers.values():
            if not self._stopped():
                publisher.wait_for_all_acked(Duration(seconds=timeout_s))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='mtl_bag_play', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('bag', help='rosbag2 folder (sqlite3 or MCAP)')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    parser.add_argument('--clock', type=float, nargs='?', const=100.0, default=None, metavar='HZ',
                        help='publish /clock at HZ (default 100) for use_sim_time')
    parser.add_argument('--qos', choices=('reliable', 'best_effort'), default='reliable',
                        help='reliability of the non-latched topics (default reliable)')
    parser.add_argument('--topics', nargs='+', help='only these topics (default all)')
    parser.add_argument('--delay', type=float, default=0.0, help='seconds to wait before the first message')
    parser.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                        help='first wait until every topic has a subscriber, at most S seconds')
    parser.add_argument('--loop', action='store_true', help='play again from the start until Ctrl-C')
    return parser.parse_args(argv)


def main(args=None) -> int:
    argv = rclpy.utilities.remove_ros_args(args=sys.argv if args is None else args)[1:]
    options = parse_args(argv)
    stop = init_ros(args)
    node = rclpy.create_node('mtl_bag_play')
    logger = node.get_logger()
    with main_frame('mtl_bag_play', (ValueError, FileNotFoundError, KeyError), node.destroy_node) as outcome:
        player = BagPlayer(node, options.bag, options.topics, options.rate, options.qos == 'reliable', options.clock,
                           stop)
        if options.wait_for_subscribers > 0:
            player.wait_for_subscribers(options.wait_for_subscribers)
        logger.info(f'playing {options.bag} at rate {options.rate}: {sorted(player.publishers)}')
        finished = player.play_once(options.delay)
        while finished and options.loop:
            finished = player.play_once()
        if finished:
            player.wait_for_acks()
        logger.info('published ' + ', '.join(f'{t} {n}' for t, n in player.published.items()))
    return outcome.code

if __name__ == '__main__':
    raise SystemExit(main())
