"""The ROS test infrastructure does what the other tests rely on: isolation, subprocess
environments that can import rclpy, the `ros` skip, and domains that do not see each other."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ros_test_utils import (BOOTSTRAP_GUARD_VAR, PACKAGE, REPO_ROOT, TEST_DIR, isolate_ros_environment,
                            package_unregistered_reason, pick_ros_domain_id, python_command, require_modules,
                            run_child_pytest, subprocess_env, wait_until)

CHILD_IMPORTS_RCLPY = 'import rclpy.node, sensor_msgs.msg, os; print(os.environ["ROS_DOMAIN_ID"])'
# What launch_testing's pytest plugin does at collection (launch_testing/pytest/hooks.py): import
# each test module to look for generate_test_description, letting all but SyntaxError through.
LAUNCH_TESTING_COLLECTION_STANDIN = '''
import importlib
import sys
from pathlib import Path

import pytest


def import_test_module(path):
    sys.path.insert(0, str(Path(path).parent))
    try:
        importlib.import_module(Path(path).stem)
    except SyntaxError:
        pass


if int(pytest.__version__.split('.')[0]) >= 7:
    def pytest_pycollect_makemodule(module_path, parent):
        import_test_module(module_path)
else:
    def pytest_pycollect_makemodule(path, parent):
        import_test_module(path)
'''


def broken_rclpy_env(ros_env) -> dict:
    """ros_env where rclpy's C extension cannot load (skips the test where that trap does not apply)."""
    if not ros_env.get('LD_LIBRARY_PATH') or not ros_env.get(BOOTSTRAP_GUARD_VAR):
        pytest.skip('rclpy here does not come from the PyPI wheels bootstrapper')
    broken = dict(ros_env)
    del broken['LD_LIBRARY_PATH']          # guard kept: the trap in ros_test_utils' docstring
    return broken


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


def test_launch_tests_need_the_package_registered_in_an_ament_prefix_with_its_executable(tmp_path, monkeypatch):
    require_modules('ament_index_python.packages')
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)          # a pip install: no ament prefix at all
    assert 'AMENT_PREFIX_PATH' in package_unregistered_reason()
    other = tmp_path / 'other_prefix'
    (other / 'share/ament_index/resource_index/packages').mkdir(parents=True)
    (other / 'share/ament_index/resource_index/packages/sensor_msgs').touch()
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(other))            # a ROS prefix without this package
    assert 'not registered' in package_unregistered_reason()
    prefix = tmp_path / 'install'
    (prefix / 'share/ament_index/resource_index/packages').mkdir(parents=True)
    (prefix / f'share/ament_index/resource_index/packages/{PACKAGE}').touch()
    monkeypatch.setenv('AMENT_PREFIX_PATH', os.pathsep.join([str(prefix), str(other)]))
    assert f'has no lib/{PACKAGE}/mtl_perception_node' in package_unregistered_reason()
    (prefix / 'lib' / PACKAGE).mkdir(parents=True)
    (prefix / 'lib' / PACKAGE / 'mtl_perception_node').touch()
    assert package_unregistered_reason() == ''                      # as after colcon build + source


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
    broken = broken_rclpy_env(ros_env)
    child = subprocess.run([sys.executable, '-c', CHILD_IMPORTS_RCLPY], env=broken,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0           # the trap is real ...
    run = run_child_pytest([TEST_DIR / 'test_dds_two_processes.py'], env=broken)
    # ... and the marked tests skip with the import error as reason instead of failing.
    assert run.returncode == 0, run.stdout + run.stderr
    assert '2 skipped' in run.stdout and 'needs rclpy' in run.stdout, run.stdout


@pytest.mark.ros
def test_modules_that_need_ros_skip_where_rclpy_cannot_load_also_under_launch_testing(ros_env, tmp_path):
    broken = broken_rclpy_env(ros_env)
    (tmp_path / 'launch_testing_standin.py').write_text(LAUNCH_TESTING_COLLECTION_STANDIN)
    broken['PYTHONPATH'] = os.pathsep.join([str(tmp_path), broken['PYTHONPATH']])
    modules = ['test_node.py', 'test_output_messages.py', 'test_bag_play_record.py']
    for plugins in ([], ['-p', 'launch_testing_standin']):
        run = run_child_pytest([*plugins, *[TEST_DIR / m for m in modules],
                                f'{TEST_DIR}/test_ros_test_utils.py::test_domain_override_is_respected_and_validated'],
                               env=broken)
        assert run.returncode == 0, (plugins, run.stdout + run.stderr)
        assert '1 passed, 3 skipped' in run.stdout and run.stdout.count('needs rclpy') == 3, (plugins, run.stdout)


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
