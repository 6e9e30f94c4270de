"""Stamps that used to silence the node for good, over real DDS with the real node process: one image
or cloud stamped far ahead, stamps jumping back, a bag replayed twice under use_sim_time, and
`mtl_bag_play --loop`. Each story ends with output and the counters in /diagnostics
(the policy: mtl_perception_ros/core/frame_pipeline.py, docs/node.md "Time and stamps")."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ros_test_utils import console_script, require_ros

require_ros('diagnostic_msgs.msg', 'vision_msgs.msg', 'rosgraph_msgs.msg')

from mtl_perception_ros.messages.image import rgb_to_image  # noqa: E402
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2  # noqa: E402
from mtl_perception_ros.messages.stamps import stamp_to_ns  # noqa: E402
from sensor_samples import IMAGE_HW, header, make_small_checkpoint, synthetic_cloud, synthetic_image  # noqa: E402
from test_node import NAMESPACE, Harness, node_args, publish_pair  # noqa: E402

pytestmark = pytest.mark.ros
TWENTY_YEARS_S = 20 * 365.25 * 86400
BAG_FRAMES = 30                  # 2.9 s at 10 Hz: a replay jumps back by more than time_jump_threshold_s


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory) -> Path:
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


@pytest.fixture(scope='module')
def toy_bag(tmp_path_factory) -> Path:
    """30 toy frames with images of the shipped calibration's aspect ratio (fused, not LiDAR-only)."""
    from training.data.toy_chunks import write_toy_chunks
    from training.export.to_bag import export_bag
    root = tmp_path_factory.mktemp('stamp_poison_bag')
    write_toy_chunks(root / 'chunks', scenes=2, frames=BAG_FRAMES, val_scenes=1, seed=4, image_hw=IMAGE_HW)
    export_bag(root / 'chunks', root / 'bag', split='val', log=lambda *a: None)
    return root / 'bag'


@pytest.fixture
def harness(rclpy_context):
    return Harness(rclpy_context)


class Scene:
    """The same cloud and image every frame (fast to publish)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.cloud, self.image = synthetic_cloud(self.rng), synthetic_image(self.rng)

    def pair(self, harness: Harness, stamp_s: float):
        return publish_pair(harness, self.rng, stamp_s, cloud=self.cloud,
                            image_msg=rgb_to_image(self.image, header(stamp_s + 0.004, 'camera_front')))


def start_node(harness, small_checkpoint, ros_process, scene: Scene, extra=()) -> float:
    """The node, answering; the stamp (s) of the last pair sent while waiting for it."""
    node = ros_process(node_args(small_checkpoint, list(extra)), name='node')
    stamp = 1000.0
    deadline = time.monotonic() + 60.0
    while not harness.received['detections']:
        assert time.monotonic() < deadline, f'no detections from the node:\n{node.output()}'
        node.assert_running()
        stamp += 0.1
        scene.pair(harness, stamp)
        harness.spin_until(lambda: harness.received['detections'], 0.1, node)
    return node, stamp


def send_pairs(harness, node, scene: Scene, first_stamp_s: float, count: int) -> list[int]:
    """`count` pairs 0.1 s apart in stamps and in time; the cloud stamps (ns)."""
    stamps = []
    for i in range(count):
        cloud_msg, _ = scene.pair(harness, first_stamp_s + 0.1 * i)
        stamps.append(stamp_to_ns(cloud_msg.header.stamp))
        harness.spin_until(lambda: False, 0.1, node)
    return stamps


def answered(harness, stamps_ns) -> int:
    """How many of these cloud stamps got a Detection2DArray."""
    wanted = set(stamps_ns)
    return len({stamp_to_ns(d.header.stamp) for d in harness.received['detections']} & wanted)


def wait_for_counter(harness, node, key: str, at_least: int = 1, timeout_s: float = 10.0) -> dict:
    assert harness.spin_until(lambda: int(harness.last_status().get(key, 0)) >= at_least, timeout_s, node), \
        f'{key} not reported: {harness.last_status()}\n{node.output()}'
    return harness.last_status()



def assert_most_answered(harness, node, after, at_least: int = 10):
    """At least `at_least` of the pairs sent as `after` were answered within 10 s."""
    assert harness.spin_until(lambda: answered(harness, after) >= at_least, 10.0, node), \
        f'{answered(harness, after)} of {len(after)} pairs answered:\n{node.output()}'


def test_an_image_stamped_20_years_ahead_and_a_wrapped_one_do_not_stop_the_pairs(
        harness, small_checkpoint, ros_process):
    """Before: 0 of the pairs after the future image, and no LiDAR-only output either."""
    scene = Scene(1)
    node, stamp = start_node(harness, small_checkpoint, ros_process, scene)
    send_pairs(harness, node, scene, stamp + 0.1, 3)
    future = rgb_to_image(scene.image, header(stamp + 0.5 + TWENTY_YEARS_S, 'camera_front'))
    wrapped = rgb_to_image(scene.image, header(0.0, 'camera_front'))
    wrapped.header.stamp.sec = -2_000_000_000            # 2046 in int32 seconds: 1906
    harness.pub_image.publish(future)
    harness.pub_image.publish(wrapped)
    after = send_pairs(harness, node, scene, stamp + 0.6, 20)
    assert_most_answered(harness, node, after)
    wait_for_counter(harness, node, 'skipped.future_stamp.camera')
    values = wait_for_counter(harness, node, 'skipped.bad_stamp.camera')
    assert 'time.resets' not in values, values
    assert node.interrupt() == 0, node.output()


def test_a_cloud_stamped_far_ahead_does_not_stop_the_pairs(harness, small_checkpoint, ros_process):
    """Before: 0 of 20 pairs after it."""
    scene = Scene(2)
    node, stamp = start_node(harness, small_checkpoint, ros_process, scene)
    send_pairs(harness, node, scene, stamp + 0.1, 3)
    harness.pub_points.publish(array_to_pointcloud2(scene.cloud, header=header(stamp + 0.4 + 1e6, 'vehicle')))
    after = send_pairs(harness, node, scene, stamp + 0.5, 20)
    assert_most_answered(harness, node, after)
    values = wait_for_counter(harness, node, 'skipped.future_stamp.points')
    assert 'time.resets' not in values, values
    assert node.interrupt() == 0, node.output()


def test_stamps_jumping_back_30_s_restart_pairing_and_tracking(harness, small_checkpoint, ros_process):
    """Before: 0 of the pairs after the jump."""
    scene = Scene(3)
    node, stamp = start_node(harness, small_checkpoint, ros_process, scene)
    send_pairs(harness, node, scene, stamp + 0.1, 5)
    after = send_pairs(harness, node, scene, stamp - 30.0, 20)
    assert_most_answered(harness, node, after)
    values = wait_for_counter(harness, node, 'time.jump_back.points')
    assert int(values['time.resets']) >= 1, values
    assert 'went back' in node.output()
    assert node.interrupt() == 0, node.output()


def play(ros_process, bag: Path, name: str, *extra: str):
    return ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag), '--topics', '/points', '/camera/image_raw', '--wait-for-subscribers', '20', *extra,
        '--ros-args', '-r', f'/points:={NAMESPACE}/points', '-r', f'/camera/image_raw:={NAMESPACE}/camera/image_raw'], name=name)


def bag_node(harness, small_checkpoint, ros_process, extra=()):
    node = ros_process(node_args(small_checkpoint, list(extra)), name='node')
    assert harness.spin_until(lambda: 'ready' in node.output(), 60.0, node), node.output()
    return node


def test_a_bag_replayed_twice_under_use_sim_time_gives_output_on_both_passes(
        harness, small_checkpoint, ros_process, toy_bag):
    """Before: 0 detections on the second pass (/clock and the stamps go back 2.9 s)."""
    node = bag_node(harness, small_checkpoint, ros_process, ['use_sim_time:=true'])
    counts = []
    for replay in range(2):
        before = len(harness.received['detections'])
        # half speed: a node on a busy machine answers every cloud (at 10 Hz it dropped 19 of 30 once in CI)
        player = play(ros_process, toy_bag, f'player{replay}', '--clock', '--rate', '0.5')
        assert harness.spin_until(lambda: player.poll() is not None, 30.0, node), player.output()
        assert player.popen.wait(timeout=10) == 0, player.output()
        harness.spin_until(lambda: False, 0.5, node)        # the last answers
        counts.append(len(harness.received['detections']) - before)
    values = harness.last_status()
    print(f'detections per pass: {counts}; ' + str({k: v for k, v in values.items() if k.startswith('time.')}))
    assert counts[0] >= BAG_FRAMES // 2 and counts[1] >= BAG_FRAMES // 2, (counts, values, node.output())
    assert int(values.get('time.clock_jump', 0)) >= 1, values          # /clock went back 2.9 s
    assert int(values.get('time.resets', 0)) >= 1, values
    assert node.interrupt() == 0, node.output()


def test_a_looped_bag_gives_output_on_every_pass(harness, small_checkpoint, ros_process, toy_bag):
    """`mtl_bag_play --loop`. Before: output only during the first pass."""
    node = bag_node(harness, small_checkpoint, ros_process)
    player = play(ros_process, toy_bag, 'player', '--loop')

    def repeated() -> int:      # answers to clouds of a later pass: a stamp answered before
        stamps = [stamp_to_ns(d.header.stamp) for d in harness.received['detections']]
        return len(stamps) - len(set(stamps))
    assert harness.spin_until(lambda: (player.assert_running() or True) and repeated() >= BAG_FRAMES, 20.0, node), \
        f'{repeated()} answers in later passes:\n{node.output()}'
    assert player.interrupt() == 0, player.output()
    values = wait_for_counter(harness, node, 'time.jump_back.points')
    assert int(values['time.resets']) >= 1, values
    assert node.interrupt() == 0, node.output()
