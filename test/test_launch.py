"""launch_testing: `ros2 launch`'s own machinery starts the node from launch/mtl_perception.launch.py.

Runs with `launch_test test/test_launch.py` and under pytest with launch_testing's plugin (as
`colcon test` runs it) on a ROS 2 installation where this package is built with colcon and its
install/setup.bash is sourced. Elsewhere it is skipped with the reason
(ros_test_utils.launch_test_unavailable_reason): without launch_testing by a module-level skip;
with it by unittest.skipIf on the test cases, which launch_test's runner honours too (it knows no
pytest skip). test_node.py covers the node's behaviour with a subprocess where launch is missing,
test_packaging.py the launch file's arguments everywhere.
"""
from __future__ import annotations

import sys
import tempfile
import time
import unittest
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # launch_test loads no conftest.py
from ros_test_utils import PACKAGE, launch_test_unavailable_reason, missing_modules_reason  # noqa: E402
from sensor_samples import REPO, make_small_checkpoint, sensor_pair  # noqa: E402

NO_LAUNCH_TESTING = missing_modules_reason(('launch.actions', 'launch_testing.actions'))
if NO_LAUNCH_TESTING:       # then neither launch_test nor launch_testing's plugin is here: plain pytest
    pytest.skip(NO_LAUNCH_TESTING, allow_module_level=True)

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.actions import IncludeLaunchDescription, LogInfo  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

SKIP_REASON = launch_test_unavailable_reason()
skip_unless_runnable = unittest.skipIf(bool(SKIP_REASON), SKIP_REASON)
NAMESPACE = 'launchtest'
NODE_EXECUTABLE = 'mtl_perception_node'
PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'


def share_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory(PACKAGE))


def launch_file() -> Path:
    """The installed launch file (what `ros2 launch` runs), else the source tree's."""
    installed = share_dir() / 'launch/mtl_perception.launch.py'
    return installed if installed.exists() else REPO / 'launch/mtl_perception.launch.py'


def process_environment(details: dict) -> dict:
    """The environment a launched process runs with: /proc/PID/environ, else what launch recorded."""
    try:
        raw = Path(f"/proc/{details['pid']}/environ").read_bytes()
    except (KeyError, OSError):
        return details.get('env') or {}
    return dict(item.split('=', 1) for item in raw.decode(errors='replace').split('\0') if '=' in item)


@pytest.mark.launch_test
def generate_test_description():
    if SKIP_REASON:     # nothing to start: the test cases below are skipped
        return launch.LaunchDescription([LogInfo(msg=f'test_launch skipped: {SKIP_REASON}'),
                                         launch_testing.actions.ReadyToTest()]), {}
    checkpoint = make_small_checkpoint(Path(tempfile.mkdtemp()) / 'small.pt')
    include = IncludeLaunchDescription(     # fastdds_profile left at its default (true)
        PythonLaunchDescriptionSource(str(launch_file())),
        launch_arguments={'model': str(checkpoint), 'namespace': NAMESPACE, 'device': 'cpu',
                          'params_file': str(REPO / 'config/mtl_perception.yaml')}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {}


@skip_unless_runnable
class TestNodeOutputs(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        import rclpy

        rclpy.init()
        cls.node = rclpy.create_node('launch_test_harness')

    @classmethod
    def tearDownClass(cls):
        import rclpy

        cls.node.destroy_node()
        rclpy.shutdown()

    def test_detections_carry_the_cloud_header(self):
        import numpy as np
        import rclpy
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, PointCloud2
        from vision_msgs.msg import Detection2DArray

        received = []
        self.node.create_subscription(Detection2DArray, f'/{NAMESPACE}/mtl_perception/detections', received.append, 10)
        pub_points = self.node.create_publisher(PointCloud2, f'/{NAMESPACE}/points', qos_profile_sensor_data)
        pub_image = self.node.create_publisher(Image, f'/{NAMESPACE}/camera/image_raw', qos_profile_sensor_data)
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

    def test_the_node_gets_the_shipped_fastdds_profile(self, proc_info):
        proc_info.assertWaitForStartup(process=NODE_EXECUTABLE, timeout=30)
        nodes = [p for p in proc_info.processes() if NODE_EXECUTABLE in p.process_details['name']]
        self.assertEqual(len(nodes), 1, proc_info.process_names())
        profile = share_dir() / 'config' / 'fastdds_large_images.xml'
        self.assertTrue(profile.is_file(), f'{profile} is not installed')
        self.assertEqual(process_environment(nodes[0].process_details).get(PROFILE_VARIABLE), str(profile))


@skip_unless_runnable
@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_code_is_clean(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
