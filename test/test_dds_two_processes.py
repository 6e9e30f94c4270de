"""Messages built with the project's conversions cross two real processes over DDS intact.

A publisher process (test/helpers/publish_samples.py, its own session) sends a PointCloud2, an
Image and a vision_msgs Detection2DArray with sensor-data QoS (best effort); this process
subscribes, converts back and compares with the arrays the publisher started from. The
publisher then gets SIGINT, as from Ctrl-C, and must exit with code 0.
"""
from __future__ import annotations

import numpy as np
import pytest
from ros_test_utils import TEST_DIR, import_script, python_command

pytestmark = pytest.mark.ros

PUBLISHER = TEST_DIR / 'helpers' / 'publish_samples.py'
NAMESPACE = '/dds_two_processes'
MATCH_TIMEOUT_S = 30.0       # discovery on a loaded 2-core machine can take seconds
EXIT_TIMEOUT_S = 20.0


def receive_first(rclpy_context, ros_process, topics, message_types):
    """Start the publisher for `topics`, return ({topic: first message}, publisher process)."""
    from rclpy.qos import qos_profile_sensor_data

    node = rclpy_context.create_node('sample_listener', namespace=NAMESPACE)
    received = {}
    for topic, msg_type in zip(topics, message_types):
        node.create_subscription(msg_type, topic, lambda msg, topic=topic: received.setdefault(topic, msg),
                                 qos_profile_sensor_data)
    publisher = ros_process(python_command(PUBLISHER, '--topics', ','.join(topics), '--ros-args',
                                           '-r', f'__ns:={NAMESPACE}'), name='publish_samples')

    def all_published():
        publisher.assert_running()
        return all(node.count_publishers(f'{NAMESPACE}/{topic}') > 0 for topic in topics)

    rclpy_context.spin_until(all_published, MATCH_TIMEOUT_S, 'the publisher process to be discovered')

    def all_received():
        publisher.assert_running()
        return len(received) == len(topics)

    rclpy_context.spin_until(all_received, MATCH_TIMEOUT_S, f'one message on each of {topics}')
    return received, publisher


def assert_clean_exit_on_sigint(publisher):
    code = publisher.interrupt(timeout_s=EXIT_TIMEOUT_S)
    output = publisher.output()
    assert code == 0, f'publisher exited with {code} after SIGINT; output:\n{output}'
    assert 'Traceback' not in output, output


def test_pointcloud_and_image_arrive_intact_and_publisher_exits_cleanly(rclpy_context, ros_process):
    from sensor_msgs.msg import Image, PointCloud2

    from mtl_perception_ros.messages.image import image_to_rgb
    from mtl_perception_ros.messages.pointcloud2 import pointcloud2_to_array

    samples_module = import_script(PUBLISHER)
    samples = samples_module.build_samples()
    received, publisher = receive_first(rclpy_context, ros_process, ['points', 'image'], [PointCloud2, Image])

    cloud = received['points']
    assert cloud.header.frame_id == samples_module.CLOUD_FRAME
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == samples_module.CLOUD_STAMP
    points, n_dropped = pointcloud2_to_array(cloud, ('x', 'y', 'z', 'intensity'))
    finite = np.isfinite(samples['points']).all(axis=1)
    assert n_dropped == len(samples_module.NONFINITE_ROWS) == np.count_nonzero(~finite)
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, samples['points'][finite])
    everything, none_dropped = pointcloud2_to_array(cloud, ('x', 'y', 'z', 'intensity'), drop_nonfinite=False)
    assert none_dropped == 0
    np.testing.assert_array_equal(everything, samples['points'])   # NaN == NaN here, inf kept
    assert cloud == samples_module.build_messages(['points'])['points']

    image = received['image']
    assert image.header.frame_id == samples_module.IMAGE_FRAME
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == samples_module.IMAGE_STAMP
    assert (image.height, image.width, image.encoding) == (48, 64, 'rgb8')
    np.testing.assert_array_equal(image_to_rgb(image), samples['rgb'])

    assert_clean_exit_on_sigint(publisher)


def test_detections_arrive_intact_and_publisher_exits_cleanly(rclpy_context, ros_process):
    vision_msgs = pytest.importorskip('vision_msgs.msg')
    samples_module = import_script(PUBLISHER)
    samples = samples_module.build_samples()
    received, publisher = receive_first(rclpy_context, ros_process, ['detections'],
                                        [vision_msgs.Detection2DArray])

    detections = received['detections']
    assert detections == samples_module.build_messages(['detections'])['detections']
    assert detections.header.frame_id == samples_module.CLOUD_FRAME
    assert (detections.header.stamp.sec, detections.header.stamp.nanosec) == samples_module.CLOUD_STAMP
    boxes = samples['boxes']
    got = np.array([[d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y,
                     d.bbox.center.theta] for d in detections.detections])
    np.testing.assert_array_equal(got, boxes[:, [0, 1, 3, 4, 6]])   # float64 end to end: exact
    assert [d.results[0].hypothesis.class_id for d in detections.detections] == ['car', 'pedestrian', 'cyclist']
    assert [d.results[0].hypothesis.score for d in detections.detections] == [0.91, 0.55, 0.42]
    assert [d.id for d in detections.detections] == ['7', '', '12']
    assert all(d.header == detections.header for d in detections.detections)

    assert_clean_exit_on_sigint(publisher)
