"""The node as users run it: a real process from its console script, the YAML from config/,
a small checkpoint, real DDS on loopback. Synthetic sensor data in, messages out."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from ros_test_utils import console_script, perception_values, require_ros

require_ros('diagnostic_msgs.msg', 'vision_msgs.msg')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from mtl_perception_ros.messages.image import rgb_to_image  # noqa: E402
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2  # noqa: E402
from sensor_samples import (IMAGE_HW, REPO, header, make_small_checkpoint, sensor_pair,  # noqa: E402
                            synthetic_cloud, synthetic_image)

pytestmark = pytest.mark.ros
NAMESPACE = '/nodetest'


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory) -> Path:
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


def node_args(checkpoint: Path, extra_params=()) -> list[str]:
    """mtl_perception_node with the shipped YAML, a checkpoint and the test namespace."""
    args = [*console_script('mtl_perception_node', 'mtl_perception_ros.ros.node'), '--ros-args', '--params-file', str(REPO / 'config/mtl_perception.yaml'),
            '-p', f'model_path:={checkpoint}', '-p', 'warmup_iterations:=1', '-r', f'__ns:={NAMESPACE}']
    for item in extra_params:
        args += ['-p', item]
    return args


def rss_kib(pid: int) -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise AssertionError(f'no VmRSS for pid {pid}')


class Harness:
    """The test's own rclpy node: publishes sensor data, records what the perception node sends."""

    def __init__(self, ros, input_qos=qos_profile_sensor_data, name: str = 'node_test_harness'):
        """input_qos: of the points / image publishers (the node's `input_qos:=reliable` needs a
        reliable one)."""
        self.ros = ros
        self.node = ros.create_node(name)
        self.received: dict[str, list] = {'detections': [], 'labels': [], 'diagnostics': [], 'label_info': []}
        self.pub_points = self.node.create_publisher(PointCloud2, f'{NAMESPACE}/points', input_qos)
        self.pub_image = self.node.create_publisher(Image, f'{NAMESPACE}/camera/image_raw', input_qos)
        self.node.create_subscription(Detection2DArray, f'{NAMESPACE}/mtl_perception/detections',
                                      self._on_detections, 50)
        self.node.create_subscription(Image, f'{NAMESPACE}/mtl_perception/camera/semantic/labels', self._on_labels, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.received['diagnostics'].append, 50)

    def _on_detections(self, msg):
        self.received['detections'].append(msg)

    def _on_labels(self, msg):
        self.received['labels'].append(msg)

    def subscribe_label_info(self):
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(LabelInfo, f'{NAMESPACE}/mtl_perception/camera/semantic/label_info',
                                      self.received['label_info'].append, qos)

    def spin_until(self, condition, timeout_s: float, process) -> bool:
        """Spin until `condition()`; fails at once with the node's output if the node died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            process.assert_running()
            self.ros.spin_once(0.05)
        return bool(condition())

    def last_status(self) -> dict:
        """Key/values of the perception node's latest DiagnosticStatus ({} before the first)."""
        statuses = [values for values in map(perception_values, self.received['diagnostics']) if values]
        return statuses[-1] if statuses else {}

    def settled_status(self, process, timeout_s: float = 30.0) -> dict:
        """The latest status once the node has handled everything sent so far: two diagnostics in a
        row with the same frame counts (a status read right after warm-up can predate frames still
        in the node's queue)."""
        def counts(status):
            return {k: v for k, v in status.items() if k.startswith(('processed', 'synced_pairs', 'dropped'))}
        deadline = time.monotonic() + timeout_s
        previous = None
        while time.monotonic() < deadline:
            seen = len(self.received['diagnostics'])
            assert self.spin_until(lambda: len(self.received['diagnostics']) > seen, 10.0, process), process.output()
            status = self.last_status()
            if previous is not None and counts(status) == counts(previous):
                return status
            previous = status
        raise AssertionError(f'the node kept processing for {timeout_s} s: {self.last_status()}')


def publish_pair(harness: Harness, rng, stamp_s: float, cloud=None, image_msg=None):
    cloud_msg, default_image_msg = sensor_pair(rng, stamp_s, cloud=cloud)
    image_msg = default_image_msg if image_msg is None else image_msg
    harness.pub_points.publish(cloud_msg)
    harness.pub_image.publish(image_msg)
    return cloud_msg, image_msg


@pytest.fixture
def harness(rclpy_context):
    return Harness(rclpy_context)


def wait_for_ready(harness: Harness, node, rng):
    """Publish pairs until the node answers (covers discovery and model warm-up)."""
    stamp = 1000.0

    def answered():
        nonlocal stamp
        stamp += 0.1
        publish_pair(harness, rng, stamp)
        return len(harness.received['detections']) > 0
    assert harness.spin_until(answered, 60.0, node), f'no detections from the node:\n{node.output()}'


def test_synced_inputs_give_detections_semantics_label_info_and_diagnostics(harness, small_checkpoint, ros_process):
    rng = np.random.default_rng(1)
    node = ros_process(node_args(small_checkpoint), name='node')
    wait_for_ready(harness, node, rng)
    harness.received['detections'].clear()
    harness.received['labels'].clear()
    cloud_msg, image_msg = publish_pair(harness, rng, 2000.25)
    assert harness.spin_until(lambda: any(d.header == cloud_msg.header for d in harness.received['detections'])
                              and any(s.header == image_msg.header for s in harness.received['labels']),
                              20.0, node), node.output()
    detections = next(d for d in harness.received['detections'] if d.header == cloud_msg.header)
    assert detections.header.frame_id == 'vehicle'
    assert len(detections.detections) > 0
    for det in detections.detections:
        assert det.results[0].hypothesis.class_id in ('car', 'truck', 'pedestrian', 'cyclist')
        assert 0.3 <= det.results[0].hypothesis.score <= 1.0
        # an untrained net: centres near the 0..32 x -16..16 m grid (raw sub-cell offsets may overshoot)
        assert -10.0 <= det.bbox.center.position.x <= 42.0 and -26.0 <= det.bbox.center.position.y <= 26.0
        assert det.bbox.size_x > 0 and det.bbox.size_y > 0
    labels = next(s for s in harness.received['labels'] if s.header == image_msg.header)
    assert (labels.height, labels.width, labels.encoding) == (IMAGE_HW[0], IMAGE_HW[1], 'mono8')
    assert np.frombuffer(bytes(labels.data), np.uint8).max() < 13

    harness.subscribe_label_info()     # a late subscriber still gets the class map
    assert harness.spin_until(lambda: harness.received['label_info'], 10.0, node)
    names = [c.class_name for c in harness.received['label_info'][0].class_map]
    assert names[:3] == ['road', 'lane_marking', 'sidewalk'] and len(names) == 13

    assert harness.spin_until(lambda: harness.last_status().get('processed'), 10.0, node)
    values = harness.last_status()
    assert values['device'] == 'cpu' and int(values['processed']) >= 1
    assert float(values['latency_ms.end_to_end.p95']) > 0
    assert int(values['sync.emitted_pairs']) >= 1
    assert node.interrupt() == 0, node.output()


def test_bad_inputs_are_reported_and_the_node_stays_up(harness, small_checkpoint, ros_process):
    rng = np.random.default_rng(2)
    # inputs come seconds apart here: a long camera timeout keeps the node from going LiDAR-only
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=60.0']), name='node')
    wait_for_ready(harness, node, rng)
    stamp = 3000.0

    def expect_skip(reason: str, send):
        """Send one bad input (the latest-only slot keeps one pair, so one at a time) and wait
        until diagnostics count it."""
        nonlocal stamp
        stamp += 0.1
        before = int(harness.last_status().get(f'skipped.{reason}', 0))
        send(stamp)
        assert harness.spin_until(lambda: int(harness.last_status().get(f'skipped.{reason}', 0)) > before,
                                  20.0, node), f'{reason} not reported: {harness.last_status()}\n{node.output()}'

    def no_intensity_field(s):
        cloud = array_to_pointcloud2(synthetic_cloud(rng)[:, :3], ('x', 'y', 'z'), header(s, 'vehicle'))
        harness.pub_points.publish(cloud)
        harness.pub_image.publish(rgb_to_image(synthetic_image(rng), header(s, 'camera_front')))
    expect_skip('bad_pointcloud', no_intensity_field)
    expect_skip('empty_pointcloud', lambda s: publish_pair(harness, rng, s, cloud=np.full((100, 4), np.nan, np.float32)))
    expect_skip('empty_pointcloud', lambda s: publish_pair(harness, rng, s, cloud=np.zeros((0, 4), np.float32)))
    expect_skip('bad_image', lambda s: publish_pair(harness, rng, s, image_msg=Image(
        header=header(s, 'camera_front'), height=4, width=4, encoding='32FC1', step=16, data=bytes(64))))
    expect_skip('bad_image', lambda s: publish_pair(harness, rng, s, image_msg=rgb_to_image(
        np.zeros((100, 100, 3), np.uint8), header(s, 'camera_front'))))
    behind = synthetic_cloud(rng)
    behind[:, 0] = -behind[:, 0]          # nothing in front of the camera
    expect_skip('calibration_projects_nothing', lambda s: publish_pair(harness, rng, s, cloud=behind))

    # stamps far apart: never paired, counted by the synchronizer
    before = int(harness.last_status().get('sync.dropped.unmatched.points', 0))
    for i in range(3):
        stamp += 0.1
        harness.pub_points.publish(array_to_pointcloud2(synthetic_cloud(rng), header=header(stamp, 'vehicle')))
        harness.pub_image.publish(rgb_to_image(synthetic_image(rng), header(stamp + 5.0 + i, 'camera_front')))
    assert harness.spin_until(lambda: int(harness.last_status().get('sync.dropped.unmatched.points', 0)) > before,
                              20.0, node), harness.last_status()

    node.assert_running()
    output = node.output()
    assert 'bad_pointcloud' in output and 'intensity' in output
    assert 'bad_image' in output and '32FC1' in output
    # and it still works afterwards
    harness.received['detections'].clear()
    cloud_msg, _ = publish_pair(harness, rng, stamp + 20.0)
    assert harness.spin_until(lambda: any(d.header == cloud_msg.header for d in harness.received['detections']),
                              20.0, node), node.output()
    assert node.interrupt() == 0, node.output()


def test_missing_checkpoint_stops_startup_with_a_message_naming_the_file(tmp_path, ros_process):
    missing = tmp_path / 'nowhere' / 'model.pt'
    node = ros_process(node_args(missing), name='node')
    code = node.popen.wait(60)
    assert code != 0
    assert str(missing) in node.output()


def test_camera_dropout_falls_back_to_lidar_only(harness, small_checkpoint, ros_process):
    rng = np.random.default_rng(3)
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=0.3']), name='node')
    wait_for_ready(harness, node, rng)
    time.sleep(0.5)        # the camera goes silent
    stamp = 4000.0
    harness.received['detections'].clear()

    def lidar_only_output():
        nonlocal stamp
        stamp += 0.1
        harness.pub_points.publish(array_to_pointcloud2(synthetic_cloud(rng), header=header(stamp, 'vehicle')))
        return harness.received['detections'] and int(harness.last_status().get('processed_lidar_only', 0)) > 0
    assert harness.spin_until(lidar_only_output, 20.0, node), node.output()
    assert 'LiDAR-only' in node.output()
    assert node.interrupt() == 0, node.output()


@pytest.mark.slow
def test_50hz_for_10s_keeps_up_with_flat_memory_and_exits_on_sigint(harness, small_checkpoint, ros_process):
    """Inputs faster than the node can follow: latest-only processing, no growing backlog."""
    rng = np.random.default_rng(4)
    node = ros_process(node_args(small_checkpoint, ['points_min_interval_s:=0.015']), name='node')
    wait_for_ready(harness, node, rng)
    clouds = [synthetic_cloud(rng, 8000) for _ in range(5)]
    images = [synthetic_image(rng) for _ in range(5)]
    harness.received['detections'].clear()
    rss_samples = []
    start = time.monotonic()
    sent = 0
    stamp = 5000.0
    while time.monotonic() - start < 10.0:
        stamp += 0.02
        publish_pair(harness, rng, stamp, cloud=clouds[sent % 5],
                     image_msg=rgb_to_image(images[sent % 5], header(stamp + 0.004, 'camera_front')))
        sent += 1
        if sent % 50 == 0:
            rss_samples.append(rss_kib(node.pid))
        next_send = start + sent * 0.02
        while time.monotonic() < next_send:
            harness.ros.spin_once(max(0.0, min(0.005, next_send - time.monotonic())))
    last_stamp = stamp
    # the newest pair is always processed: no backlog of old frames behind it
    assert harness.spin_until(lambda: any(abs(d.header.stamp.sec + d.header.stamp.nanosec * 1e-9 - last_stamp) < 1e-6
                                          for d in harness.received['detections']), 10.0, node), node.output()
    received = len(harness.received['detections'])
    values = harness.last_status()
    print(f'sent {sent} pairs in 10 s, {received} detection messages, status {values}')
    assert received >= 20
    assert int(values.get('dropped_busy', 0)) + received >= sent * 0.5
    # memory flat: the second half of the run grows by less than 30 MiB
    half = len(rss_samples) // 2
    assert max(rss_samples[half:]) - rss_samples[half] < 30 * 1024, rss_samples
    assert node.interrupt() == 0, node.output()


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_in_the_middle_of_a_stream_ends_the_node_cleanly(harness, small_checkpoint, ros_process, sig):
    """Ctrl-C or `ros2 launch`'s SIGTERM while messages arrive and the worker publishes: exit 0, no traceback."""
    rng = np.random.default_rng(7)
    node = ros_process(node_args(small_checkpoint), name='node')
    wait_for_ready(harness, node, rng)
    cloud, image = synthetic_cloud(rng, 8000), synthetic_image(rng)
    stamp = 5500.0
    deadline = time.monotonic() + 20.0
    signalled_at = time.monotonic() + 1.0
    while node.poll() is None and time.monotonic() < deadline:
        stamp += 0.02
        publish_pair(harness, rng, stamp, cloud=cloud, image_msg=rgb_to_image(image, header(stamp, 'camera_front')))
        if signalled_at is not None and time.monotonic() >= signalled_at:
            node.signal_group(sig)        # keep publishing: the signal lands while callbacks run
            signalled_at = None
        harness.ros.spin_once(0.02)
    assert node.interrupt(timeout_s=5.0) == 0, node.output()
    assert 'Traceback' not in node.output() and 'context is invalid' not in node.output(), node.output()


def test_the_first_pair_after_a_long_idle_start_is_fused_not_lidar_only(harness, small_checkpoint, ros_process):
    """A replay started long after the node: its first cloud must still wait for its image."""
    rng = np.random.default_rng(5)
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=0.3']), name='node')
    assert harness.spin_until(lambda: 'ready' in node.output() and harness.pub_points.get_subscription_count() > 0
                              and harness.pub_image.get_subscription_count() > 0, 60.0, node), node.output()
    time.sleep(1.0)                       # idle for more than camera_timeout_s
    cloud_msg, image_msg = sensor_pair(rng, 6000.0)
    harness.pub_points.publish(cloud_msg)
    time.sleep(0.1)                       # the image follows its cloud a moment later
    harness.pub_image.publish(image_msg)
    assert harness.spin_until(lambda: any(s.header == image_msg.header for s in harness.received['labels']),
                              20.0, node), node.output()
    assert harness.spin_until(lambda: 'processed' in harness.last_status(), 10.0, node)
    assert int(harness.last_status().get('processed_lidar_only', 0)) == 0
    assert node.interrupt() == 0, node.output()


def test_a_slow_replay_stays_fused(harness, small_checkpoint, ros_process):
    """Frames stamped 0.1 s apart but arriving 0.8 s apart (a bag at 1/8 speed) keep the camera."""
    rng = np.random.default_rng(6)
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=0.3']), name='node')
    wait_for_ready(harness, node, rng)
    before = int(harness.settled_status(node).get('processed_lidar_only', 0))
    harness.received['labels'].clear()
    stamp = 7000.0
    for _ in range(4):
        stamp += 0.1
        cloud_msg, image_msg = publish_pair(harness, rng, stamp)
        assert harness.spin_until(lambda: any(s.header == image_msg.header for s in harness.received['labels']),
                                  20.0, node), node.output()
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            harness.ros.spin_once(0.05)
    assert harness.spin_until(lambda: int(harness.last_status().get('processed', 0)) > 0, 10.0, node)
    assert int(harness.last_status().get('processed_lidar_only', 0)) == before
    assert node.interrupt() == 0, node.output()


def test_the_node_runs_with_the_shipped_large_image_dds_profile(harness, small_checkpoint, ros_process, ros_env):
    """config/fastdds_large_images.xml parses (Fast DDS reports XML errors on the console) and the
    node talks to a participant with default transports."""
    rng = np.random.default_rng(7)
    env = dict(ros_env, FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / 'config/fastdds_large_images.xml'))
    node = ros_process(node_args(small_checkpoint), name='node', env=env)
    wait_for_ready(harness, node, rng)
    output = node.output()
    assert 'XML' not in output and 'Error' not in output, output
    assert node.interrupt() == 0, node.output()


def test_label_info_threshold_is_the_configured_score_threshold(harness, small_checkpoint, ros_process):
    node = ros_process(node_args(small_checkpoint, ['score_threshold:=0.45']), name='node')
    harness.subscribe_label_info()      # latched: published at start-up, no inputs needed
    assert harness.spin_until(lambda: harness.received['label_info'], 60.0, node), node.output()
    assert harness.received['label_info'][0].threshold == pytest.approx(0.45, abs=1e-6)
    assert node.interrupt() == 0, node.output()


def test_camera_info_of_an_unsupported_model_or_length_is_reported_and_a_rational_one_used(
        harness, small_checkpoint, ros_process):
    from sensor_msgs.msg import CameraInfo
    rng = np.random.default_rng(8)
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=60.0']),
                       name='node')
    pub_info = harness.node.create_publisher(CameraInfo, f'{NAMESPACE}/camera/camera_info', qos_profile_sensor_data)
    wait_for_ready(harness, node, rng)
    k = [1687.33691 / 8, 0.0, 965.434141 / 8, 0.0, 1783.42847 / 8, 684.41936 / 8, 0.0, 0.0, 1.0]

    def camera_info(model: str, d: list) -> CameraInfo:
        return CameraInfo(header=header(5000.0, 'camera_front'), height=IMAGE_HW[0], width=IMAGE_HW[1],
                          distortion_model=model, d=d, k=k)

    # each is counted; the warning names the first (warnings of one reason come at most every 5 s)
    for model, d in (('rational_polynomial', [0.01] * 5), ('thin_prism', [0.01] * 12)):   # (equidistant: supported)
        before = int(harness.last_status().get('skipped.bad_camera_info', 0))
        assert harness.spin_until(lambda: pub_info.publish(camera_info(model, d)) or int(
            harness.last_status().get('skipped.bad_camera_info', 0)) > before, 20.0, node), node.output()
    assert 'rational_polynomial needs 8 coefficients' in node.output()

    def two_more_reports():      # diagnostics that count everything sent before
        reports = len(harness.received['diagnostics'])
        assert harness.spin_until(lambda: len(harness.received['diagnostics']) >= reports + 2, 20.0, node)
    # all eight rational_polynomial coefficients are accepted and the node keeps answering
    two_more_reports()
    before = int(harness.last_status().get('skipped.bad_camera_info', 0))
    for _ in range(5):
        pub_info.publish(camera_info('rational_polynomial', [-0.1, 0.01, 0.0, 0.0, 0.0, 0.05, -0.01, 0.002]))
        harness.ros.spin_once(0.05)
    harness.received['detections'].clear()
    cloud_msg, _ = publish_pair(harness, rng, 5001.0)
    assert harness.spin_until(lambda: any(d.header == cloud_msg.header for d in harness.received['detections']),
                              20.0, node), node.output()
    two_more_reports()
    assert int(harness.last_status().get('skipped.bad_camera_info', 0)) == before, harness.last_status()
    assert node.interrupt() == 0, node.output()
