"""The environment's ROS side: the interface packages built from third_party/, and the per-distro
pins of the ROS 2 wheels derived from the one list requirements/ros-packages.txt.

The pin checks read files only; the message checks need rclpy (`ros` marker).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys

import pytest
from ros_test_utils import REPO_ROOT

THIRD_PARTY = REPO_ROOT / 'third_party'
ROS_PINS_SCRIPT = REPO_ROOT / 'scripts/ros_pins.py'


def load_ros_pins():
    spec = importlib.util.spec_from_file_location('ros_pins', ROS_PINS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('package', ['vision_msgs', 'tf2_msgs'])
def test_each_definition_file_is_built_and_each_built_one_exists(package):
    source = THIRD_PARTY / package
    files = {str(p.relative_to(source)) for kind in ('msg', 'srv', 'action') for p in (source / kind).glob('*')}
    cmake = (source / 'CMakeLists.txt').read_text()
    listed = set(re.findall(r'^\s*"?((?:msg|srv|action)/\w+\.(?:msg|srv|action))"?\s*$', cmake, flags=re.M))
    assert files == listed
    assert (source / 'COLCON_IGNORE').is_file()      # a ROS workspace uses the real package


def test_tf_message_is_the_list_of_stamped_transforms_of_tf2_msgs():
    assert (THIRD_PARTY / 'tf2_msgs/msg/TFMessage.msg').read_text().split() == [
        'geometry_msgs/TransformStamped[]', 'transforms']


def test_every_listed_ros_package_is_pinned_or_marked_unreleased_for_each_distro():
    ros_pins = load_ros_pins()
    assert ros_pins.check() == []
    kilted, kilted_missing = ros_pins.read_pins('kilted')
    jazzy, jazzy_missing = ros_pins.read_pins('jazzy')
    assert kilted_missing == set() and set(ros_pins.listed_packages()) <= set(kilted)
    assert jazzy_missing == {'ros-ament-cmake-ros-core'}       # ament_cmake_ros is one package there
    assert kilted['ros-rclpy'].split('.')[0] == '9' and jazzy['ros-rclpy'].split('.')[0] == '7'


def test_the_set_up_installs_only_what_the_distro_releases():
    result = subprocess.run([sys.executable, str(ROS_PINS_SCRIPT), 'requirements', 'jazzy'],
                            capture_output=True, text=True, check=True)
    names = result.stdout.split()
    assert 'ros-rclpy' in names and 'ros-ament-cmake-ros-core' not in names
    unknown = subprocess.run([sys.executable, str(ROS_PINS_SCRIPT), 'requirements', 'no-such-distro'],
                             capture_output=True, text=True)
    assert unknown.returncode != 0 and 'ros_pins.py generate no-such-distro' in unknown.stderr


def test_the_venv_holds_one_distro_of_wheels_at_its_pins():
    try:
        rclpy_version = importlib.metadata.version('ros-rclpy')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('rclpy does not come from the PyPI wheels here (a ROS distro)')
    ros_pins = load_ros_pins()
    distros = [path.stem[len('constraints-ros-'):] for path in (REPO_ROOT / 'requirements').glob('constraints-ros-*.txt')]
    matching = [d for d in distros if ros_pins.read_pins(d)[0]['ros-rclpy'] == rclpy_version]
    assert len(matching) == 1, (rclpy_version, distros)
    pins, _ = ros_pins.read_pins(matching[0])
    installed = {name: importlib.metadata.version(name) for name in ros_pins.listed_packages() if name in pins}
    assert installed == {name: pins[name] for name in installed}


@pytest.mark.ros
def test_tf_message_round_trips_through_rclpy_serialization():
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from tf2_msgs.msg import TF2Error, TFMessage

    transform = TransformStamped(child_frame_id='lidar')
    transform.header.frame_id = 'vehicle'
    transform.transform.translation.z = 1.8
    decoded = deserialize_message(serialize_message(TFMessage(transforms=[transform])), TFMessage)
    assert [(t.header.frame_id, t.child_frame_id, t.transform.translation.z) for t in decoded.transforms] == [
        ('vehicle', 'lidar', 1.8)]
    assert TF2Error.LOOKUP_ERROR == 1


@pytest.mark.ros
def test_tf2_msgs_service_and_action_types_import():
    from tf2_msgs.action import LookupTransform
    from tf2_msgs.srv import FrameGraph

    assert FrameGraph.Response().frame_yaml == ''
    assert LookupTransform.Goal(target_frame='map').target_frame == 'map'
