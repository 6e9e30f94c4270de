"""What colcon, rosdep and `ros2 launch` get from the package: setup.py, package.xml, the launch file.

Runs everywhere (no launch or colcon needed): setup.py is evaluated with setuptools.setup
captured, the launch file is read as Python source. test_launch.py runs the launch file for real
where launch_testing is installed.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import setuptools
from ros_test_utils import PACKAGE, REPO_ROOT, console_script, subprocess_env

from mtl_perception_ros.bags.rosbags_requirement import MISSING_ROSBAGS_EXIT_CODE, ROSBAGS_REQUIREMENT

LAUNCH_FILE = REPO_ROOT / 'launch/mtl_perception.launch.py'
SHARE = f'share/{PACKAGE}'


@pytest.fixture(scope='module')
def setup_kwargs() -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (run in the repository root)."""
    captured = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
        patch.chdir(REPO_ROOT)
        exec(compile((REPO_ROOT / 'setup.py').read_text(), 'setup.py', 'exec'), {'__name__': '__main__'})
    return captured


def installed_files(setup_kwargs) -> dict[str, list[str]]:
    return {target: list(sources) for target, sources in setup_kwargs['data_files']}


def launch_calls(name: str) -> list[ast.Call]:
    """Every call of `name(...)` in the launch file."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]


def string_constants(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_colcon_test_runs_pytest(setup_kwargs):
    # colcon picks pytest from the 'test' extra (colcon_core.task.python.test.has_test_dependency);
    # tests_require, which setuptools >= 72 drops, would leave it to unittest: 0 tests.
    assert 'pytest' in setup_kwargs['extras_require']['test']
    assert 'tests_require' not in setup_kwargs


def test_launch_file_and_configs_are_installed(setup_kwargs):
    files = installed_files(setup_kwargs)
    assert 'launch/mtl_perception.launch.py' in files[f'{SHARE}/launch']
    for name in ('mtl_perception.yaml', 'mtl_perception.rviz', 'fastdds_large_images.xml'):
        assert f'config/{name}' in files[f'{SHARE}/config'], name
    assert files['share/ament_index/resource_index/packages'] == [f'resource/{PACKAGE}']
    assert (REPO_ROOT / 'resource' / PACKAGE).is_file()


def test_launch_file_offers_the_fastdds_profile_and_sets_it_for_the_node():
    arguments = {string_constants(call.args[0])[0]: call for call in launch_calls('DeclareLaunchArgument')}
    assert {'model', 'namespace', 'points', 'image', 'use_sim_time', 'rviz', 'fastdds_profile'} <= set(arguments)
    default = {k.arg: k.value for k in arguments['fastdds_profile'].keywords}['default_value']
    assert isinstance(default, ast.Constant) and default.value == 'true'

    setters = launch_calls('SetEnvironmentVariable')
    assert len(setters) == 1 and string_constants(setters[0].args[0]) == ['FASTDDS_DEFAULT_PROFILES_FILE']
    value = string_constants(setters[0].args[1])
    assert value == ['config', 'fastdds_large_images.xml'], value        # joined to the package share
    assert (REPO_ROOT / 'config/fastdds_large_images.xml').is_file()
    condition = {k.arg: k.value for k in setters[0].keywords}['condition']
    assert string_constants(condition) == ['fastdds_profile']            # IfCondition(LaunchConfiguration(...))
    # It precedes the node in the LaunchDescription: a process takes the environment at its start.
    returned = [n for n in ast.walk(ast.parse(LAUNCH_FILE.read_text())) if isinstance(n, ast.Return)][-1]
    order = [n.id for n in ast.walk(returned.value) if isinstance(n, ast.Name)]
    assert order.index('fastdds_profile') < order.index('node')


def test_rosbags_is_documented_as_the_pip_requirement_it_is():
    package_xml = (REPO_ROOT / 'package.xml').read_text()
    comments = ' '.join(re.findall(r'<!--(.*?)-->', package_xml, flags=re.S))
    assert 'rosbags' in comments and 'pip' in comments
    declared = {e.text for e in ET.fromstring(package_xml).iter() if e.tag.endswith('depend')}
    assert 'rosbags' not in declared        # no rosdep key: declaring it would break `rosdep install`
    pins = (REPO_ROOT / 'requirements/constraints.txt').read_text().split()
    assert ROSBAGS_REQUIREMENT in pins
    for requirements in ('python.txt', 'ros-distro.txt'):
        assert 'rosbags' in (REPO_ROOT / 'requirements' / requirements).read_text().split(), requirements


@pytest.mark.ros     # the programs import rclpy first
@pytest.mark.parametrize('program, module, args', [
    ('mtl_bag_play', 'mtl_perception_ros.ros.bag_play', ['some_bag']),
    ('mtl_bag_record', 'mtl_perception_ros.ros.bag_record', ['--topics', '/points', '--out', 'unused']),
])
def test_bag_programs_without_rosbags_say_how_to_install_it(program, module, args, tmp_path):
    hidden = tmp_path / 'hide_rosbags' / 'rosbags'
    hidden.mkdir(parents=True)
    (hidden / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'rosbags'\", name='rosbags')\n")
    env = subprocess_env({'PYTHONPATH': str(hidden.parent)})
    for argv in (console_script(program, module), [sys.executable, '-m', module]):
        result = subprocess.run(argv + args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == MISSING_ROSBAGS_EXIT_CODE, (argv, result.stdout, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"{program} needs the Python package 'rosbags' (No module named 'rosbags'): pip install {ROSBAGS_REQUIREMENT}"]


def test_a_library_import_without_rosbags_raises_import_error_with_the_same_advice(tmp_path):
    hidden = tmp_path / 'rosbags'
    hidden.mkdir()
    (hidden / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'rosbags'\", name='rosbags')\n")
    code = ('from mtl_perception_ros.bags.rosbags_requirement import report_missing_rosbags\n'
            'try:\n    import rosbags\nexcept ImportError as error:\n'
            '    try:\n        report_missing_rosbags(error)\n'
            '    except ImportError as advice:\n        print(advice)\n')
    result = subprocess.run([sys.executable, '-c', code], env=subprocess_env({'PYTHONPATH': str(tmp_path)}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f'pip install {ROSBAGS_REQUIREMENT}' in result.stdout
