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
from sensor_samples import (header, make_small_checkpoint, rig_params_yaml, sensor_pair, synthetic_image,  # noqa: E402
                            write_params_yaml)
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


def bayer_rggb8(rgb: np.ndarray, msg_header) -> Image:
    mosaic = rgb[..., 1].copy()
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = rgb[0::2, 0::2, 0], rgb[1::2, 1::2, 2]
    return Image(header=msg_header, height=rgb.shape[0], width=rgb.shape[1], encoding='bayer_rggb8',
                 step=rgb.shape[1], data=mosaic.tobytes())


def yuv422(rgb: np.ndarray, msg_header) -> Image:
    import cv2
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)          # UYVY: U Y0 V Y1 per two pixels
    packed = np.empty((rgb.shape[0], rgb.shape[1] * 2), np.uint8)
    packed[:, 0::4], packed[:, 1::4] = yuv[:, 0::2, 1], yuv[:, 0::2, 0]
    packed[:, 2::4], packed[:, 3::4] = yuv[:, 0::2, 2], yuv[:, 1::2, 0]
    return Image(header=msg_header, height=rgb.shape[0], width=rgb.shape[1], encoding='yuv422',
                 step=rgb.shape[1] * 2, data=packed.tobytes())


def publish_tf_static(node, optical_from_vehicle: np.ndarray, optical_frame: str):
    """/tf_static as a URDF's robot_state_publisher gives it: vehicle -> camera_link (the camera
    body) -> optical_frame, whose product is `optical_from_vehicle`; reliable + transient local."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from mtl_perception_ros.core.camera import invert_rigid
    from mtl_perception_ros.messages.transforms import transform_stamped
    body = np.eye(4)
    body[:3, 3] = (1.5, 0.0, 1.5)                              # camera_link in vehicle
    optical_in_body = invert_rigid(body) @ invert_rigid(optical_from_vehicle)
    publisher = node.create_publisher(TFMessage, '/tf_static', QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    publisher.publish(TFMessage(transforms=[transform_stamped(body, 'camera_link', header(0.0, 'vehicle')),
                                            transform_stamped(optical_in_body, optical_frame,
                                                              header(0.0, 'camera_link'))]))
    return publisher


@pytest.mark.parametrize('kind', ['jpeg', 'bayer_rggb8', 'yuv422'])
def test_tf_static_camera_info_and_compressed_bayer_or_yuv_images_are_fused(kind, rclpy_context, small_checkpoint,
                                                                             ros_process, tmp_path):
    """A vehicle-like camera: extrinsics from /tf_static only, K from CameraInfo only (the params file
    has no calibration), images as JPEG (image_transport's compressed topic) or as a Bayer / YUV raw
    image; every cloud is fused (no LiDAR-only frame) and segmented in the image's frame."""
    import yaml
    from sensor_msgs.msg import CameraInfo, CompressedImage

    from mtl_perception_ros.messages.compressed_image import rgb_to_compressed_image
    require_ros('tf2_msgs.msg')
    rng = np.random.default_rng(12)
    transport = 'compressed' if kind == 'jpeg' else 'raw'
    params = rig_params_yaml(tmp_path / 'camera.yaml', ['camera'], camera_timeout_s=5.0)
    document = yaml.safe_load(params.read_text())
    camera_block = document['/**']['ros__parameters']['camera']
    optical_from_vehicle = np.array(camera_block['lidar_to_camera'], np.float64).reshape(4, 4)
    for name in ('lidar_to_camera', 'camera_matrix', 'distortion', 'calibration_image_size'):
        camera_block.pop(name, None)
    write_params_yaml(params, document)
    harness = Harness(rclpy_context, name=f'{kind}_harness')
    tf_publisher = publish_tf_static(harness.node, optical_from_vehicle, 'camera_optical')  # noqa: F841 (kept alive)
    topic = f'{NAMESPACE}/camera/image_raw' + ('/compressed' if kind == 'jpeg' else '')
    pub = harness.node.create_publisher(CompressedImage if kind == 'jpeg' else Image, topic, qos_profile_sensor_data)
    pub_info = harness.node.create_publisher(CameraInfo, f'{NAMESPACE}/camera/camera_info', qos_profile_sensor_data)
    node = ros_process([*console_script('mtl_perception_node', 'mtl_perception_ros.ros.node'), '--ros-args',
                        '--params-file', str(params), '-p', f'model_path:={small_checkpoint}',
                        '-p', 'warmup_iterations:=1', '-p', f'camera.image_transport:={transport}',
                        '-r', f'__ns:={NAMESPACE}'], name='node')
    image = synthetic_image(rng)
    k = [1687.33691 / 8, 0.0, 965.434141 / 8, 0.0, 1783.42847 / 8, 684.41936 / 8, 0.0, 0.0, 1.0]
    stamp = 4000.0

    def publish_frame():
        nonlocal stamp
        stamp += 0.1
        cloud_msg, _ = sensor_pair(rng, stamp)
        image_header = header(stamp + 0.004, 'camera_optical')
        pub_info.publish(CameraInfo(header=image_header, height=image.shape[0], width=image.shape[1],
                                    distortion_model='plumb_bob', d=[0.0] * 5, k=k))
        harness.pub_points.publish(cloud_msg)
        if kind == 'jpeg':
            pub.publish(rgb_to_compressed_image(image, image_header))
        else:
            pub.publish((bayer_rggb8 if kind == 'bayer_rggb8' else yuv422)(image, image_header))
        return image_header

    # Until /tf_static and the first camera_info have arrived, frames run LiDAR-only (counted); from
    # the first fused frame on, every frame is fused, with the extrinsics from TF.
    assert harness.spin_until(lambda: publish_frame() and harness.received['labels'], 90.0, node), node.output()
    before = harness.settled_status(node)
    for _ in range(5):
        last = publish_frame()
        harness.spin_until(lambda: False, 0.1, node)
    assert harness.spin_until(lambda: any(m.header == last for m in harness.received['labels']), 10.0, node)
    label = next(m for m in harness.received['labels'] if m.header == last)
    assert (label.height, label.width, label.header.frame_id) == (*image.shape[:2], 'camera_optical')
    status = harness.settled_status(node)

    def grown(key):
        return int(status.get(key, 0)) - int(before.get(key, 0))
    assert grown('processed') == grown('fused.camera') == grown('extrinsics.tf.camera') >= 4, (before, status)
    assert grown('processed_lidar_only') == 0 and 'extrinsics.parameter.camera' not in status, status
    assert status['tf_backend'] in ('buffer', 'tf2_ros'), status
    assert not any(grown(key) for key in status if key.startswith('skipped.')), (before, status)
    assert 'camera: extrinsics from TF (vehicle -> camera_optical)' in node.output()
    assert node.interrupt() == 0, node.output()
