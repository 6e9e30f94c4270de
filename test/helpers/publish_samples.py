"""Publish fixed sample messages until Ctrl-C: a PointCloud2, an Image, a Detection2DArray.

A test helper run as a real process (test/test_dds_two_processes.py): the messages are built
with the project's conversion functions from the arrays of `build_samples()`, which the test
imports too, so it knows exactly what must arrive. Topics are relative ('points', 'image',
'detections'; move them with `--ros-args -r __ns:=/x`); sensor-data QoS (best effort), like the
node's sensor inputs. Republished at --rate-hz so a late-matching subscriber still gets them.

    python test/helpers/publish_samples.py [--topics points,image,detections] [--rate-hz 10]

Exit code 0 after SIGINT (leaves spin through KeyboardInterrupt / ExternalShutdownException).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

TOPICS = ('points', 'image', 'detections')
CLASS_NAMES = ('car', 'truck', 'pedestrian', 'cyclist')
CLOUD_STAMP = (1_650_000_000, 123_456_789)    # sec, nanosec
IMAGE_STAMP = (1_650_000_000, 98_765_432)
CLOUD_FRAME = 'lidar_top'
IMAGE_FRAME = 'camera_front_center'
NONFINITE_ROWS = (5, 500, 1999)               # points with a NaN / inf coordinate


def build_samples() -> dict:
    """The arrays behind the messages (no rclpy needed): deterministic, seed fixed."""
    rng = np.random.default_rng(20240607)
    points = rng.uniform([0.0, -30.0, -2.0, 0.0], [60.0, 30.0, 3.0, 1.0], size=(2000, 4)).astype(np.float32)
    points[NONFINITE_ROWS[0], 0] = np.nan
    points[NONFINITE_ROWS[1], 2] = np.inf
    points[NONFINITE_ROWS[2], 1] = -np.inf
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 2.0, -0.5, 4.5, 1.9, 1.6, 0.3],
                      [25.0, -4.0, -0.4, 0.8, 0.7, 1.8, -1.2],
                      [40.5, 8.25, -0.3, 1.8, 0.6, 1.7, 3.0]])
    return {'points': points, 'rgb': rgb, 'boxes': boxes, 'classes': np.array([0, 2, 3]),
            'scores': np.array([0.91, 0.55, 0.42]), 'track_ids': [7, -1, 12]}


def header(stamp, frame_id):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id)


def build_messages(topics=TOPICS) -> dict:
    """{topic: message} built with the project's conversion functions."""
    samples = build_samples()
    messages = {}
    if 'points' in topics:
        from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2
        messages['points'] = array_to_pointcloud2(samples['points'], ('x', 'y', 'z', 'intensity'),
                                                  header=header(CLOUD_STAMP, CLOUD_FRAME))
    if 'image' in topics:
        from mtl_perception_ros.messages.image import rgb_to_image
        messages['image'] = rgb_to_image(samples['rgb'], header=header(IMAGE_STAMP, IMAGE_FRAME))
    if 'detections' in topics:
        from mtl_perception_ros.messages.outputs import detection2d_array
        messages['detections'] = detection2d_array(samples['boxes'], CLASS_NAMES, samples['classes'],
                                                   samples['scores'], header(CLOUD_STAMP, CLOUD_FRAME),
                                                   track_ids=samples['track_ids'])
    return messages


def main(argv=None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--topics', default=','.join(TOPICS), help='comma-separated subset of ' + ','.join(TOPICS))
    parser.add_argument('--rate-hz', type=float, default=10.0)
    options = parser.parse_args(remove_ros_args(argv)[1:])
    topics = [t for t in options.topics.split(',') if t]
    unknown = sorted(set(topics) - set(TOPICS))
    if unknown:
        parser.error(f'unknown topics {unknown}; expected some of {list(TOPICS)}')

    rclpy.init(args=argv)
    node = rclpy.create_node('sample_publisher')
    try:
        messages = build_messages(topics)
        publishers = {topic: node.create_publisher(type(msg), topic, qos_profile_sensor_data)
                      for topic, msg in messages.items()}

        def publish_all():
            for topic, msg in messages.items():
                publishers[topic].publish(msg)

        node.create_timer(1.0 / options.rate_hz, publish_all)
        node.get_logger().info(f'publishing {topics} at {options.rate_hz} Hz')
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
