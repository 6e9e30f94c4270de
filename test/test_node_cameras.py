"""The node with several cameras, as a rig runs it: a real node process with three cameras in its
params file (`cameras` and a nested block per camera), real DDS. Every camera's images are fused
and segmented on its own topics; a camera silenced mid-stream is left out and reported while the
others keep fusing, and comes back."""
from __future__ import annotations

import numpy as np
import pytest

from ros_test_utils import console_script, require_ros

require_ros('diagnostic_msgs.msg', 'vision_msgs.msg')
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception_ros.messages.image import rgb_to_image  # noqa: E402
from sensor_samples import header, make_small_checkpoint, rig_params_yaml, sensor_pair, synthetic_image  # noqa: E402
from test_node import NAMESPACE, Harness  # noqa: E402

pytestmark = pytest.mark.ros
CAMERAS = ('front', 'left', 'right')


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


class RigHarness(Harness):
    """Publishes each camera's images; records each camera's semantic labels."""

    def __init__(self, ros):
        super().__init__(ros, name='rig_harness')
        self.pub_images = {camera: self.node.create_publisher(Image, f'{NAMESPACE}/{camera}/image_raw',
                                                              qos_profile_sensor_data) for camera in CAMERAS}
        self.labels_of = {camera: [] for camera in CAMERAS}
        for camera in CAMERAS:
            self.node.create_subscription(Image, f'{NAMESPACE}/mtl_perception/{camera}/semantic/labels',
                                          self.labels_of[camera].append, 50)

    def publish_frame(self, rng, stamp_s: float, cameras=CAMERAS):
        cloud_msg, _ = sensor_pair(rng, stamp_s)
        self.pub_points.publish(cloud_msg)
        image = synthetic_image(rng)
        for camera in cameras:
            self.pub_images[camera].publish(rgb_to_image(image, header(stamp_s + 0.004, f'{camera}_optical')))
        return cloud_msg


def test_three_cameras_fuse_and_one_silenced_is_left_out_while_the_others_keep_fusing(
        rclpy_context, small_checkpoint, ros_process, tmp_path):
    rng = np.random.default_rng(11)
    harness = RigHarness(rclpy_context)
    # the rig's file alone (after the shipped one, its `camera.*` would name a camera not in `cameras`)
    node = ros_process([*console_script('mtl_perception_node', 'mtl_perception_ros.ros.node'), '--ros-args',
                        '--params-file', str(rig_params_yaml(tmp_path / 'rig.yaml', CAMERAS, camera_timeout_s=0.4)),
                        '-p', f'model_path:={small_checkpoint}', '-p', 'warmup_iterations:=1', '-r', f'__ns:={NAMESPACE}'],
                       name='node')
    stamp = 3000.0

    def stream(count: int, cameras) -> list:
        nonlocal stamp
        sent = []
        for _ in range(count):
            stamp += 0.1
            sent.append(harness.publish_frame(rng, stamp, cameras))
            harness.spin_until(lambda: False, 0.1, node)        # 10 Hz, spinning
        return sent

    # all three cameras: every camera's labels arrive, in its own image's frame
    assert harness.spin_until(lambda: stream(1, CAMERAS) and all(harness.labels_of.values()), 90.0, node), \
        node.output()
    assert {camera: labels[-1].header.frame_id for camera, labels in harness.labels_of.items()} == \
        {camera: f'{camera}_optical' for camera in CAMERAS}
    status = harness.settled_status(node)
    assert status['cameras'] == 'front left right' and status['silent_cameras'] == ''

    # right goes silent: after camera_timeout_s it is reported, front and left keep fusing
    before = harness.settled_status(node)
    sent = stream(15, ('front', 'left'))
    assert harness.spin_until(lambda: harness.last_status().get('silent_cameras') == 'right', 10.0, node), \
        harness.last_status()
    during = harness.settled_status(node)
    assert during['lidar_only_mode'] == 'False' and 'processed_lidar_only' not in during
    assert 'silent camera(s) right' in [s for d in harness.received['diagnostics'] for s in d.status][-1].message
    for camera in ('front', 'left'):
        assert int(during[f'fused.{camera}']) - int(before[f'fused.{camera}']) >= 10, during
    assert int(during['fused.right']) - int(before['fused.right']) <= 1
    assert any(d.header == sent[-1].header for d in harness.received['detections'])
    assert 'no image from right for 0.4 s: fusing the other cameras' in node.output()

    # right is back
    harness.labels_of['right'].clear()
    stream(5, CAMERAS)
    assert harness.spin_until(lambda: harness.labels_of['right'] and
                              harness.last_status().get('silent_cameras') == '', 10.0, node), harness.last_status()
    assert 'images of right are back' in node.output()
    assert node.interrupt() == 0, node.output()
