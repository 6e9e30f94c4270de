"""The ROS test infrastructure does what the other tests rely on: isolation, subprocess
environments that can import rclpy, the `ros` skip, and domains that do not see each other."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ros_test_utils import (BOOTSTRAP_GUARD_VAR, REPO_ROOT, TEST_DIR, isolate_ros_environment,
                            pick_ros_domain_id, python_command, subprocess_env, wait_until)

CHILD_IMPORTS_RCLPY = 'import rclpy.node, sensor_msgs.msg, os; print(os.environ["ROS_DOMAIN_ID"])'


def test_this_run_is_isolated_to_localhost_and_one_domain(ros_domain_id):
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert os.environ['ROS_LOCALHOST_ONLY'] == '1'
    assert os.environ['ROS_DOMAIN_ID'] == str(ros_domain_id)
    assert 0 <= ros_domain_id <= 101
    assert 'ROS_STATIC_PEERS' not in os.environ


def test_domain_override_is_respected_and_validated():
    assert pick_ros_domain_id({'MTL_TEST_ROS_DOMAIN_ID': '42'}) == 42
    assert {pick_ros_domain_id({}) for _ in range(200)} <= set(range(102))
    assert len({pick_ros_domain_id({}) for _ in range(200)}) > 1      # random per run
    for bad in ('102', '-1', 'seven'):
        with pytest.raises(ValueError, match='MTL_TEST_ROS_DOMAIN_ID'):
            pick_ros_domain_id({'MTL_TEST_ROS_DOMAIN_ID': bad})
    environ = {'ROS_STATIC_PEERS': '192.168.0.7', 'MTL_TEST_ROS_DOMAIN_ID': '3'}
    assert isolate_ros_environment(environ) == 3
    assert environ['ROS_DOMAIN_ID'] == '3' and 'ROS_STATIC_PEERS' not in environ


def test_subprocess_env_keeps_library_path_and_bootstrap_guard_together():
    both = subprocess_env(base={'LD_LIBRARY_PATH': '/x', BOOTSTRAP_GUARD_VAR: '1', 'PYTHONPATH': '/a'})
    assert both['LD_LIBRARY_PATH'] == '/x' and both[BOOTSTRAP_GUARD_VAR] == '1'
    assert both['PYTHONPATH'].split(os.pathsep) == [str(REPO_ROOT), '/a']
    guard_only = subprocess_env(base={BOOTSTRAP_GUARD_VAR: '1'})
    assert BOOTSTRAP_GUARD_VAR not in guard_only and 'LD_LIBRARY_PATH' not in guard_only


@pytest.mark.ros
def test_child_process_with_ros_env_imports_rclpy_in_our_domain(ros_env, ros_domain_id):
    result = subprocess.run([sys.executable, '-c', CHILD_IMPORTS_RCLPY], env=ros_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(ros_domain_id)


@pytest.mark.ros
def test_ros_tests_skip_with_a_reason_where_rclpy_cannot_load(ros_env):
    if not ros_env.get('LD_LIBRARY_PATH') or not ros_env.get(BOOTSTRAP_GUARD_VAR):
        pytest.skip('rclpy here does not come from the PyPI wheels bootstrapper')
    broken = dict(ros_env)
    del broken['LD_LIBRARY_PATH']          # guard kept: the trap of ROS_ENV_NOTES.md
    child = subprocess.run([sys.executable, '-c', CHILD_IMPORTS_RCLPY], env=broken,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0           # the trap is real ...
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
                          str(TEST_DIR / 'test_dds_two_processes.py')],
                         env=broken, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    # ... and the marked tests skip with the import error as reason instead of failing.
    assert run.returncode == 0, run.stdout + run.stderr
    assert '2 skipped' in run.stdout and 'needs rclpy' in run.stdout, run.stdout


@pytest.mark.ros
def test_a_publisher_in_another_domain_is_not_seen(rclpy_context, ros_process, ros_env, ros_domain_id):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    publisher_script = TEST_DIR / 'helpers' / 'publish_samples.py'
    other_env = dict(ros_env, ROS_DOMAIN_ID=str((ros_domain_id + 1) % 102))
    other = ros_process(python_command(publisher_script, '--topics', 'image', '--rate-hz', '20',
                                       '--ros-args', '-r', '__ns:=/other'), name='other_domain', env=other_env)
    same = ros_process(python_command(publisher_script, '--topics', 'image', '--rate-hz', '20',
                                      '--ros-args', '-r', '__ns:=/same'), name='same_domain')
    node = rclpy_context.create_node('domain_listener')
    counts = {'/same/image': 0, '/other/image': 0}
    for topic in counts:
        node.create_subscription(Image, topic, lambda msg, topic=topic: counts.__setitem__(topic, counts[topic] + 1),
                                 qos_profile_sensor_data)
    wait_until(lambda: 'publishing' in other.output(), 30, 'the other-domain publisher to start')
    # Control: the same-domain publisher, started alongside, is discovered and delivers.
    rclpy_context.spin_until(lambda: counts['/same/image'] >= 10, 30, 'ten images from the same domain')
    assert counts['/other/image'] == 0
    assert node.count_publishers('/other/image') == 0
    other.assert_running()
    assert same.interrupt() == 0 and other.interrupt() == 0
