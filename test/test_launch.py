"""launch_testing: `ros2 launch`'s own machinery starts the node from launch/mtl_perception.launch.py.

Runs under `colcon test` on a ROS install (launch_testing's pytest plugin collects
generate_test_description); skipped where launch / launch_ros / launch_testing are missing, as
in the pip-only environment, where test_node.py covers the same behaviour with a subprocess.
"""
from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch = pytest.importorskip('launch', reason='launch is not installed (needs a ROS 2 installation)')
pytest.importorskip('launch_ros', reason='launch_ros is not installed (needs a ROS 2 installation)')
launch_testing = pytest.importorskip('launch_testing', reason='launch_testing is not installed')

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from sensor_samples import REPO, make_small_checkpoint, sensor_pair  # noqa: E402

NAMESPACE = 'launchtest'


def launch_file() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory('mtl_perception_ros')) / 'launch/mtl_perception.launch.py'
        if installed.exists():
            return installed
    except Exception:   # not installed: use the source tree
        pass
    return REPO / 'launch/mtl_perception.launch.py'


@pytest.mark.launch_test
def generate_test_description():
    checkpoint = make_small_checkpoint(Path(tempfile.mkdtemp()) / 'small.pt')
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file())),
        launch_arguments={'model': str(checkpoint), 'namespace': NAMESPACE, 'device': 'cpu',
                          'params_file': str(REPO / 'config/mtl_perception.yaml')}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {}


class TestNodeOutputs(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('launch_test_harness')

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_detections_carry_the_cloud_header(self):
        received = []
        self.node.create_subscription(Detection2DArray, f'/{NAMESPACE}/mtl_perception/detections', received.append, 10)
        pub_points = self.node.create_publisher(PointCloud2, f'/{NAMESPACE}/points', qos_profile_sensor_data)
        pub_image = self.node.create_publisher(Image, f'/{NAMESPACE}/image', qos_profile_sensor_data)
        rng = np.random.default_rng(0)
        sent = []
        deadline = time.monotonic() + 60.0
        stamp = 100.0
        while time.monotonic() < deadline and not any(d.header in sent for d in received):
            stamp += 0.1
            cloud_msg, image_msg = sensor_pair(rng, stamp)
            sent.append(cloud_msg.header)
            pub_points.publish(cloud_msg)
            pub_image.publish(image_msg)
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(any(d.header in sent for d in received), 'no Detection2DArray with a sent cloud header')


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_code_is_clean(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
