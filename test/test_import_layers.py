"""The rooms of mtl_perception_ros keep their doors: core, messages and bags import without ROS.

Every module of mtl_perception_ros.core, .messages and .bags (found with pkgutil, so new modules
are covered) is imported in a fresh interpreter where rclpy cannot be imported. None may try to
import rclpy, a ROS message package (sensor_msgs, std_msgs, vision_msgs, ...: messages/ builds
messages through lazy factories, bags/ through the rosbags typestore) or mtl_perception_ros.ros.
The failure names the module that did, and what it imported.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ('core', 'messages', 'bags')

CHILD = textwrap.dedent('''
    import importlib, importlib.abc, json, pkgutil, sys

    ROS_PACKAGES = ('rclpy', 'rosidl_runtime_py', 'rosidl_parser', 'rpyutils', 'builtin_interfaces',
                    'unique_identifier_msgs')

    def forbidden(name):
        top = name.partition('.')[0]
        return (top in ROS_PACKAGES or top.endswith(('_msgs', '_interfaces', '_srvs'))
                or name == 'mtl_perception_ros.ros' or name.startswith('mtl_perception_ros.ros.'))

    def importer():
        """The innermost mtl_perception_ros module on the stack: the one whose import statement runs."""
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_globals.get('__name__', '')
            if name.startswith('mtl_perception_ros'):
                return name
            frame = frame.f_back
        return current

    class Guard(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if forbidden(name):
                events.append([importer(), name])
                if name.partition('.')[0] == 'rclpy':
                    raise ImportError(f'{name} is blocked by test_import_layers')
            return None

    events, failures, imported, current = [], [], [], None
    sys.meta_path.insert(0, Guard())
    for layer in sys.argv[1:]:
        package = importlib.import_module(f'mtl_perception_ros.{layer}')
        names = [package.__name__] + [info.name for info in
                                      pkgutil.walk_packages(package.__path__, package.__name__ + '.')]
        for current in names:
            try:
                importlib.import_module(current)
                imported.append(current)
            except Exception as error:
                failures.append([current, f'{type(error).__name__}: {error}'])
    leaked = sorted(name for name in sys.modules if forbidden(name))
    print(json.dumps({'events': events, 'failures': failures, 'imported': imported, 'leaked': leaked}))
''')


def import_layers(*layers: str) -> dict:
    result = subprocess.run([sys.executable, '-c', CHILD, *layers], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def package_of(module: str) -> str:
    """'sensor_msgs.msg._image' -> 'sensor_msgs'; 'mtl_perception_ros.ros.node' -> 'mtl_perception_ros.ros'."""
    return 'mtl_perception_ros.ros' if module.startswith('mtl_perception_ros.') else module.partition('.')[0]


def test_core_messages_and_bags_import_without_ros():
    report = import_layers(*LAYERS)
    offenders = list(dict.fromkeys(f'{module} imports {package_of(name)}' for module, name in report['events']))
    assert not offenders, 'ROS pulled in by the ROS-free layers:\n' + '\n'.join(offenders)
    assert not report['failures'], 'modules that fail to import without rclpy:\n' + '\n'.join(
        f'{module}: {error}' for module, error in report['failures'])
    assert not report['leaked'], f'ROS modules in sys.modules after the imports: {report["leaked"]}'
    # pkgutil found the modules (a broken walk would pass vacuously)
    for module in ('mtl_perception_ros.core.approx_time_sync', 'mtl_perception_ros.messages.outputs',
                   'mtl_perception_ros.messages.message_factory', 'mtl_perception_ros.bags.reader'):
        assert module in report['imported']
    for layer in LAYERS:
        on_disk = {p.stem for p in (REPO / 'mtl_perception_ros' / layer).glob('*.py') if p.stem != '__init__'}
        assert {f'mtl_perception_ros.{layer}.{stem}' for stem in on_disk} <= set(report['imported'])
