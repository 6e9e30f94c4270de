"""mtl_bag_play and mtl_bag_record as users run them: real processes, real DDS on loopback.

The player keeps the recorded rate (measured where it matters: at a subscriber in this process),
publishes the bag's bytes unchanged, serves /clock, and leaves on Ctrl-C with exit code 0; the
recorder stores exactly what a publisher sends, latched topics included.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ros_test_utils import require_ros

require_ros('rosgraph_msgs.msg', 'vision_msgs.msg')
import rclpy  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from mtl_perception_ros.bags.reader import BagReader  # noqa: E402
from mtl_perception_ros.bags.topics import POINTS_TOPIC  # noqa: E402
from mtl_perception_ros.core.labels import LabelSet  # noqa: E402
from mtl_perception_ros.messages.outputs import detection2d_array, label_info  # noqa: E402
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array  # noqa: E402
from mtl_perception_ros.messages.stamps import stamp_to_ns  # noqa: E402
from training.export.to_bag import export_bag  # noqa: E402
from training.data.toy_chunks import write_toy_chunks  # noqa: E402
from ros_test_utils import console_script, wait_until  # noqa: E402

pytestmark = pytest.mark.ros
FRAMES = 30                   # one scene at 10 Hz: a 2.9 s recorded span
RATE_TOLERANCE = 0.05


@pytest.fixture(scope='module')
def bag_30_frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('bag')
    write_toy_chunks(root / 'chunks', scenes=2, frames=FRAMES, val_scenes=1, seed=2, image_hw=(24, 40))
    export_bag(root / 'chunks', root / 'bag', split='val', log=lambda *a: None)
    return root / 'bag'


def recorded_points(bag: Path) -> dict[int, np.ndarray]:
    with BagReader(bag) as reader:
        return {m.stamp_ns: m.data for m in reader.decoded([POINTS_TOPIC], intensity_scale=1.0)}


def receive_points(ros, clock: list | None = None, images: list | None = None):
    """Subscribe (reliable) to /points; returns the list of (monotonic receive s, stamp ns, msg).
    /clock stamps and /image messages go to `clock` / `images` when given."""
    node = ros.create_node('bag_play_test')
    received = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

    def on_points(msg):
        received.append((time.monotonic(), stamp_to_ns(msg.header.stamp), msg))
    node.create_subscription(PointCloud2, '/points', on_points, reliable)
    if clock is not None:
        node.create_subscription(Clock, '/clock', lambda m: clock.append(stamp_to_ns(m.clock)), 1000)
    if images is not None:
        node.create_subscription(Image, '/camera/image_raw', images.append, reliable)
    return received


def spin_until_done(ros, process, received, count: int, timeout_s: float) -> None:
    """Spin until `count` messages arrived and the player ended (or timeout), then 0.3 s more for /clock."""
    deadline = time.monotonic() + timeout_s
    while (len(received) < count or process.poll() is None) and time.monotonic() < deadline:
        ros.spin_once(0.01)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        ros.spin_once(0.01)


def span_ratio(received, rate: float) -> tuple[float, float]:
    """(receive span / (recorded span / rate), the recorded span in s) over the received messages."""
    stamps = [stamp for _, stamp, _ in received]
    arrival = [t for t, _, _ in received]
    recorded_s = (max(stamps) - min(stamps)) / 1e9
    return (arrival[-1] - arrival[0]) / (recorded_s / rate), recorded_s


def test_player_keeps_the_recorded_rate(rclpy_context, ros_process, bag_30_frames):
    received = receive_points(rclpy_context)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag_30_frames), '--wait-for-subscribers', '20', '--topics', '/points'], name='player')
    spin_until_done(rclpy_context, player, received, FRAMES, timeout_s=40)
    assert player.popen.wait(timeout=20) == 0, player.output()
    assert len(received) == FRAMES, player.output()
    ratio, recorded_s = span_ratio(received, rate=1.0)
    print(f'rate 1.0: {FRAMES} clouds over {recorded_s:.3f} s recorded, received span ratio {ratio:.4f}')
    assert recorded_s == pytest.approx(2.9)
    assert abs(ratio - 1.0) < RATE_TOLERANCE
    gaps = np.diff([t for t, _, _ in received])
    assert np.median(gaps) == pytest.approx(0.1, abs=0.01)
    assert [stamp for _, stamp, _ in received] == sorted(recorded_points(bag_30_frames))


def test_player_rate_factor_clock_and_exact_bytes(rclpy_context, ros_process, bag_30_frames):
    clock, images = [], []
    received = receive_points(rclpy_context, clock=clock, images=images)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag_30_frames), '--rate', '2.5', '--clock', '50', '--wait-for-subscribers', '20',
        '--topics', '/points', '/camera/image_raw'], name='player')
    spin_until_done(rclpy_context, player, received, FRAMES, timeout_s=40)
    assert player.popen.wait(timeout=20) == 0, player.output()
    assert len(received) == len(images) == FRAMES, player.output()
    assert images[0].encoding == 'rgb8' and (images[0].height, images[0].width) == (24, 40)
    # The shorter span (1.16 s) is judged by a line fit, which one late message cannot tip over.
    stamps_s = np.array([stamp for _, stamp, _ in received]) / 1e9
    slope = np.polyfit(stamps_s - stamps_s[0], [t for t, _, _ in received], 1)[0]
    print(f'rate 2.5: receive time per recorded second x 2.5 = {slope * 2.5:.4f}, '
          f'span ratio {span_ratio(received, rate=2.5)[0]:.4f}')
    assert abs(slope * 2.5 - 1.0) < RATE_TOLERANCE
    expected = recorded_points(bag_30_frames)
    for _, stamp, msg in received:
        cloud, _ = pointcloud2_to_array(msg, drop_nonfinite=False)
        np.testing.assert_array_equal(cloud, expected[stamp])
        assert msg.header.frame_id == 'vehicle'
    # /clock runs in bag time, never backwards, and reaches every cloud's stamp.
    assert len(clock) > 20 and clock == sorted(clock)
    assert clock[-1] >= max(expected) and min(clock) <= min(expected)


def test_player_publishes_the_bags_tf_static_latched_for_a_late_subscriber(rclpy_context, ros_process, bag_30_frames):
    """/tf_static (vehicle -> lidar, vehicle -> camera_front) as the node's TF gets it: a subscriber
    that joins while the clouds are playing still receives the transforms sent at the start."""
    from tf2_msgs.msg import TFMessage

    from mtl_perception_ros.bags.topics import CAMERA_FRAME, LIDAR_FRAME, VEHICLE_FRAME
    from mtl_perception_ros.messages.transforms import transform_to_matrix
    received = receive_points(rclpy_context)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag_30_frames), '--loop', '--topics', '/tf_static', '/points'], name='player')
    rclpy_context.spin_until(lambda: len(received) >= 5, 40.0, 'clouds from the player')
    late = rclpy_context.create_node('late_tf_subscriber')
    transforms = []
    late.create_subscription(TFMessage, '/tf_static', lambda msg: transforms.extend(msg.transforms), QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    rclpy_context.spin_until(lambda: len(transforms) >= 2, 20.0, '/tf_static')
    assert player.interrupt() == 0, player.output()
    assert 'not played' not in player.output()
    got = {(t.header.frame_id, t.child_frame_id): transform_to_matrix(t.transform) for t in transforms}
    assert set(got) == {(VEHICLE_FRAME, LIDAR_FRAME), (VEHICLE_FRAME, CAMERA_FRAME)}
    with BagReader(bag_30_frames) as reader:
        for (parent, child), matrix in got.items():
            np.testing.assert_allclose(matrix, reader.static_transform(parent, child), atol=1e-9)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_player_leaves_on_ctrl_c_or_sigterm_with_exit_code_0(rclpy_context, ros_process, bag_30_frames, sig):
    received = receive_points(rclpy_context)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag_30_frames), '--loop', '--topics', '/points'], name='player')
    rclpy_context.spin_until(lambda: len(received) >= 2 or player.poll() is not None, 30, 'the first clouds')
    player.assert_running()
    assert player.interrupt(sig=sig) == 0, player.output()
    assert 'Traceback' not in player.output(), player.output()


def test_recorder_closes_its_bag_on_sigterm(ros_process, tmp_path):
    """`ros2 launch` stops processes with SIGINT, then SIGTERM: either way the bag is complete."""
    out = tmp_path / 'terminated'
    recorder = ros_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/never', '--out', str(out)], name='recorder')
    wait_until(lambda: (recorder.assert_running() or True) and out.exists(), 30, 'the recorder to open its bag')
    assert recorder.interrupt(sig=signal.SIGTERM) == 0, recorder.output()
    with BagReader(out) as reader:
        assert reader.topics == {} and reader.metadata['version'] == 8


def test_player_refuses_unknown_topics(ros_process, bag_30_frames):
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag_30_frames), '--topics', '/nothing'], name='player')
    assert player.popen.wait(timeout=30) == 1
    assert '/nothing' in player.output()


def test_recorder_records_what_a_publisher_sends(rclpy_context, ros_process, tmp_path):
    node = rclpy_context.create_node('bag_record_test')
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    labels = LabelSet.from_yaml(Path(__file__).resolve().parent.parent / 'config/a2d2/box_classes.yaml')
    info_pub = node.create_publisher(LabelInfo, '/rec/label_info', latched)
    info = label_info(labels, Header(frame_id='vehicle'), threshold=0.3)
    info_pub.publish(info)                      # before the recorder exists: only transient local catches it
    cloud_pub = node.create_publisher(PointCloud2, '/rec/points', reliable)
    detection_pub = node.create_publisher(Detection2DArray, 'rec/detections', reliable)

    out = tmp_path / 'recorded'
    recorder = ros_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/rec/points', '/rec/detections', '/rec/label_info', '--out', str(out)], name='recorder')
    rclpy_context.spin_until(lambda: (recorder.assert_running() or True) and cloud_pub.get_subscription_count() > 0
                             and detection_pub.get_subscription_count() > 0, 30, 'the recorder to subscribe')
    rng = np.random.default_rng(5)
    sent_clouds, sent_detections = [], []
    for i in range(20):
        header = Header(frame_id='vehicle')
        header.stamp.sec, header.stamp.nanosec = 100 + i, 5
        cloud = array_to_pointcloud2(rng.normal(size=(40 + i, 4)).astype(np.float32), header=header)
        boxes = rng.normal(size=(i % 3, 7))
        detections = detection2d_array(boxes, labels.names, np.arange(len(boxes)) % 4, np.full(len(boxes), 0.5),
                                       header, track_ids=np.arange(len(boxes)))
        cloud_pub.publish(cloud)
        detection_pub.publish(detections)
        sent_clouds.append(cloud)
        sent_detections.append(detections)
        rclpy_context.spin_once(0.01)
    for publisher in (cloud_pub, detection_pub):
        assert publisher.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    assert recorder.interrupt() == 0, recorder.output()

    with BagReader(out) as reader:
        assert reader.metadata['version'] == 8
        assert reader.topics == {'/rec/points': ('sensor_msgs/msg/PointCloud2', 20),
                                 '/rec/detections': ('vision_msgs/msg/Detection2DArray', 20),
                                 '/rec/label_info': ('vision_msgs/msg/LabelInfo', 1)}
        raw = {topic: [(t, data) for tp, _, t, data in reader.raw() if tp == topic]
               for topic in reader.topics}
        (latched_qos,) = reader.offered_qos('/rec/label_info')
        assert latched_qos.durability.name == 'TRANSIENT_LOCAL'
        stored_boxes = [m.data for m in reader.decoded(['/rec/detections'])]
        points = [m.data for m in reader.decoded(['/rec/points'], intensity_scale=1.0)]
    times = [t for t, _ in raw['/rec/points']]
    assert times == sorted(times) and times[0] > 1e18        # receive times of the node clock (ns)
    # Fields compared after deserialising (Fast CDR leaves alignment padding bytes uninitialised).
    for (_, data), sent in zip(raw['/rec/points'], sent_clouds):
        assert deserialize_message(data, PointCloud2) == sent
    for (_, data), sent in zip(raw['/rec/detections'], sent_detections):
        assert deserialize_message(data, Detection2DArray) == sent
    stored_info = deserialize_message(raw['/rec/label_info'][0][1], LabelInfo)
    assert stored_info.class_map == info.class_map and stored_info.threshold == pytest.approx(0.3)  # float32
    for cloud, sent in zip(points, sent_clouds):
        np.testing.assert_array_equal(cloud, pointcloud2_to_array(sent)[0])
    assert [len(d.boxes) for d in stored_boxes] == [i % 3 for i in range(20)]


def test_recorder_stops_after_duration_and_refuses_existing_folders(ros_process, tmp_path):
    out = tmp_path / 'empty'
    start = time.monotonic()
    recorder = ros_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/never', '--out', str(out), '--duration', '1.0', '--storage', 'mcap'], name='recorder')
    assert recorder.popen.wait(timeout=30) == 0, recorder.output()
    assert time.monotonic() - start >= 1.0
    with BagReader(out) as reader:
        assert reader.topics == {} and reader.metadata['storage_identifier'] == 'mcap'
    again = ros_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/never', '--out', str(out)], name='again')
    assert again.popen.wait(timeout=30) == 1
    assert 'exists' in again.output()


def test_recorder_stops_once_each_until_topic_has_its_count(rclpy_context, ros_process, tmp_path):
    """`--until T=N --linger S`: stops by itself after N messages on each topic and S more seconds,
    recording what arrives meanwhile (a replay's answers and one more /diagnostics)."""
    node = rclpy_context.create_node('bag_until_test')
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    fast = node.create_publisher(PointCloud2, '/until/fast', reliable)
    slow = node.create_publisher(PointCloud2, '/until/slow', reliable)
    out = tmp_path / 'until'
    recorder = ros_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/until/fast', '/until/slow', '--out', str(out), '--until', '/until/fast=3', '/until/slow=2',
        '--linger', '1.0'], name='recorder')
    rclpy_context.spin_until(lambda: (recorder.assert_running() or True) and fast.get_subscription_count() > 0
                             and slow.get_subscription_count() > 0, 30, 'the recorder to subscribe')
    cloud = array_to_pointcloud2(np.zeros((4, 4), np.float32), header=Header(frame_id='vehicle'))
    for _ in range(5):
        fast.publish(cloud)
    assert fast.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    time.sleep(1.5)
    assert recorder.poll() is None, 'stopped before /until/slow had 2 messages:\n' + recorder.output()
    sent_at = time.monotonic()
    slow.publish(cloud)
    slow.publish(cloud)
    fast.publish(cloud)                               # within --linger: recorded too
    assert recorder.popen.wait(timeout=30) == 0, recorder.output()
    assert time.monotonic() - sent_at >= 1.0, recorder.output()
    assert 'reached /until/fast 3, /until/slow 2; recording 1 s more' in recorder.output()
    with BagReader(out) as reader:
        assert {t: n for t, (_, n) in reader.topics.items()} == {'/until/fast': 6, '/until/slow': 2}


@pytest.mark.parametrize('args, message', [
    (['--until', '/a'], "expected TOPIC=N"),
    (['--until', '/a=0'], "expected TOPIC=N"),
    (['--until', '/b=2'], "not recorded: ['/b']"),
    (['--until', '/a=2', '--linger', '-1'], '--linger must be >= 0'),
])
def test_recorder_refuses_bad_until_arguments(tmp_path, args, message):
    result = subprocess.run(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', '/a', '--out', str(tmp_path / 'never'), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and 'Traceback' not in result.stderr, result.stderr
    assert not (tmp_path / 'never').exists()
