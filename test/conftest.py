"""Shared pytest set-up: ROS isolation for the whole run, the `ros` marker, ROS fixtures.

At import time (before any test or subprocess starts) DDS is confined to this host and to a
random ROS domain (0..101, new each run; set MTL_TEST_ROS_DOMAIN_ID to pick one), so parallel
test runs and other ROS users on the network do not see each other.

Tests marked `@pytest.mark.ros` are skipped, with the import error as reason, where rclpy or
the standard message packages cannot be imported; all other tests run anywhere.

Test modules are collected here as plain pytest modules, test_launch.py excepted, before
launch_testing's pytest plugin sees them: that plugin imports every test module to look for a
launch test and lets a module-level skip escape, which then skips the whole session (pytest 7.4)
or fails the directory's collection (pytest 8+). test_launch.py goes to launch_testing where it
can run (ros_test_utils.launch_test_unavailable_reason), else it is skipped with the reason.

Fixtures:
    ros_domain_id   the run's ROS_DOMAIN_ID (int).
    ros_env         environment dict for subprocesses that use rclpy (see
                    ros_test_utils.subprocess_env: LD_LIBRARY_PATH / bootstrap guard kept
                    consistent, this checkout first on PYTHONPATH, unbuffered output).
    rclpy_context   a RosTestContext on a fresh rclpy Context: call it (or .create_node) to
                    make nodes, .spin_until(predicate, timeout_s, what) to wait while spinning;
                    shut down after the test.
    ros_process     factory starting a RosProcess (own session, log file in tmp_path);
                    any still running at teardown is stopped (SIGINT, then SIGKILL).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # ros_test_utils, also in importlib mode
import ros_test_utils  # noqa: E402

ROS_DOMAIN_ID = ros_test_utils.isolate_ros_environment()
LAUNCH_TEST_FILES = ('test_launch.py',)
PYTEST_MAJOR = int(pytest.__version__.split('.')[0])


def pytest_report_header(config):
    return (f'ROS isolation: ROS_DOMAIN_ID={ROS_DOMAIN_ID}, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST '
            f'(set {ros_test_utils.DOMAIN_ID_OVERRIDE_VAR} to choose the domain)')


def plain_module(file_path: Path, parent):
    """A plain Module for each test file (see the module docstring); None hands a file on."""
    if file_path.name == '__init__.py':
        return None
    if file_path.name in LAUNCH_TEST_FILES:
        reason = ros_test_utils.launch_test_unavailable_reason()
        if not reason and not parent.config.pluginmanager.has_plugin('launch_testing'):
            reason = "launch_testing's pytest plugin is not active (-p no:launch_testing)"
        if not reason:
            return None
    if PYTEST_MAJOR >= 7:
        module = pytest.Module.from_parent(parent, path=file_path)
    else:
        import py
        module = pytest.Module.from_parent(parent, fspath=py.path.local(file_path))
    if file_path.name in LAUNCH_TEST_FILES:
        module.add_marker(pytest.mark.skip(reason=reason))
    return module


if PYTEST_MAJOR >= 7:
    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(module_path, parent):
        return plain_module(module_path, parent)
else:   # pytest 6.2 (Ubuntu 22.04): only the py.path argument
    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(path, parent):
        return plain_module(Path(path), parent)


def pytest_collection_modifyitems(config, items):
    ros_items = [item for item in items if item.get_closest_marker('ros') is not None]
    if not ros_items:
        return
    reason = ros_test_utils.ros_unavailable_reason()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in ros_items:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def ros_domain_id() -> int:
    return ROS_DOMAIN_ID


@pytest.fixture
def ros_env() -> dict:
    return ros_test_utils.subprocess_env()


@pytest.fixture
def rclpy_context():
    reason = ros_test_utils.ros_unavailable_reason()
    if reason:
        pytest.skip(reason)
    context = ros_test_utils.RosTestContext()
    try:
        yield context
    finally:
        context.shutdown()


@pytest.fixture
def ros_process(tmp_path, ros_env):
    """start(args, name='process', env=None) -> RosProcess; stopped at teardown if still running."""
    started = []

    def start(args, name: str = 'process', env=None):
        process = ros_test_utils.RosProcess(args, tmp_path / f'{name}.log', env=env if env is not None else ros_env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
