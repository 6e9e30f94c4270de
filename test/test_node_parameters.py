"""The node's parameters as users meet them: a params file with bad values stops the real node
process with one message naming each bad parameter (exit code 1, no traceback), and
`ros2 param set` (the SetParameters service it calls) changes the next output or is refused with
a reason. The rules themselves: mtl_perception_ros/core/parameters.py, test/test_parameters.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from ros_test_utils import console_script, require_ros

require_ros('diagnostic_msgs.msg', 'vision_msgs.msg', 'rcl_interfaces.srv')
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402

from mtl_perception_ros.core.parameters import defaults  # noqa: E402
from sensor_samples import make_small_checkpoint  # noqa: E402
from test_node import NAMESPACE, Harness, node_args, publish_pair, wait_for_ready  # noqa: E402

pytestmark = pytest.mark.ros
NODE = f'{NAMESPACE}/mtl_perception'

# One bad value per rule of the issue (a params file as users write them): parameter -> (YAML value,
# text the start-up message must contain).
BAD_PARAMS_FILE = {
    'slop_s': ('abc', "slop_s: 'abc' (a string) is not allowed: a number >= 0"),
    'queue_size': (0, 'queue_size: 0 is not allowed: an integer in [1, 1000]'),
    'points_min_interval_s': (-0.1, 'points_min_interval_s: -0.1 is not allowed: a number >= 0'),
    'device': ('tpu9', "device: 'tpu9' is not allowed: one of auto, cpu, cuda, cuda:N"),
    'max_detections': (-5, 'max_detections: -5 is not allowed: an integer in [1, 1000]'),
    'diagnostics_period_s': (0, 'diagnostics_period_s: 0 is not allowed: a number in [0.1, 3600]'),
    'score_threshold': (math.nan, 'score_threshold: .nan is not allowed: a number in [0, 1]'),
    'overlay_alpha': (5.0, 'overlay_alpha: 5.0 is not allowed: a number in [0, 1]'),
    'camera.distortion': ([0.1, 0.0, 0.0], 'camera.distortion: [0.1, 0.0, 0.0] is not allowed: a list of 5 or 8 '
                                           'numbers'),
    'camera.camera_matrix': ([math.inf, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, 1.0], '(element 0: .inf)'),
    'camera.image_transport': ('theora', "camera.image_transport: 'theora' is not allowed: one of raw, compressed"),
    'front.time_offset_s': (0.1, "front.time_offset_s: there is no camera 'front' in cameras ['camera']"),
    'tracking_association': ('nearest', "tracking_association: 'nearest' is not allowed: one of hungarian, greedy"),
    'score_treshold': (0.5, 'score_treshold: unknown parameter (did you mean score_threshold?)'),
}


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


@pytest.fixture
def harness(rclpy_context):
    return Harness(rclpy_context)


def node_with_params_file(checkpoint, params_file) -> list[str]:
    """The node with only `params_file` (after the shipped YAML, rcl would keep the shipped value of a
    parameter whose type the second file changes, e.g. slop_s: 'abc', without a word)."""
    return [*console_script('mtl_perception_node', 'mtl_perception_ros.ros.node'), '--ros-args',
            '--params-file', str(params_file), '-p', f'model_path:={checkpoint}', '-r', f'__ns:={NAMESPACE}']


def write_params(path, values: dict):
    """A params file; a camera's `NAME.field` is written nested under NAME, as users write it."""
    block = {}
    for name, value in values.items():
        camera, _, field = name.partition('.')
        if field:
            block.setdefault(camera, {})[field] = value
        else:
            block[name] = value
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': block}}))
    return path


def test_a_params_file_with_bad_values_stops_startup_naming_each_one(tmp_path, ros_process):
    params = write_params(tmp_path / 'bad.yaml', {name: value for name, (value, _) in BAD_PARAMS_FILE.items()})
    node = ros_process(node_with_params_file(tmp_path / 'never_loaded.pt', params), name='node')
    code = node.popen.wait(60)
    output = node.output()
    assert code == 1, output
    assert 'Traceback' not in output, output
    for name, (_, text) in BAD_PARAMS_FILE.items():
        assert text in output, f'{name}: {text!r} not in\n{output}'


def test_a_params_file_rcl_cannot_parse_stops_startup_with_rcls_message_on_one_line(tmp_path, ros_process):
    # rcl's YAML parser refuses a list that mixes integers and floats, before any node code runs
    params = write_params(tmp_path / 'mixed.yaml', {'camera.camera_matrix': [1000, 0.0, 960, 0, 1000, 604, 0, 0, 1]})
    node = ros_process(node_args(tmp_path / 'never_loaded.pt') + ['--params-file', str(params)], name='node')
    assert node.popen.wait(60) == 1
    output = node.output()
    assert "cannot start: failed to initialize rcl: Couldn't parse params file" in output and 'line_num' in output
    assert 'Traceback' not in output and 'parse.c' not in output, output


def test_a_negative_queue_size_on_the_command_line_stops_startup(tmp_path, ros_process):
    node = ros_process(node_args(tmp_path / 'never_loaded.pt', ['queue_size:=-3']), name='node')
    assert node.popen.wait(60) == 1
    assert 'queue_size: -3 is not allowed: an integer in [1, 1000]' in node.output()
    assert 'Traceback' not in node.output()


def test_an_integer_for_a_float_parameter_is_taken(harness, small_checkpoint, ros_process, tmp_path):
    """YAML `slop_s: 1` is an integer to rclpy; the schema takes it as 1.0 (rclpy alone refused it)."""
    params = write_params(tmp_path / 'ints.yaml', {'slop_s': 1, 'score_threshold': 0, 'camera_timeout_s': 60})
    node = ros_process(node_args(small_checkpoint) + ['--params-file', str(params)], name='node')
    wait_for_ready(harness, node, np.random.default_rng(0))
    values = ParameterClient(harness).get(['slop_s', 'score_threshold', 'camera_timeout_s'])
    assert values == [1.0, 0.0, 60.0] and all(isinstance(v, float) for v in values)


# ----------------------------------------------------------------------------- ros2 param set
def parameter_value(value) -> ParameterValue:
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    if all(isinstance(v, float) for v in value):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=list(value))
    raise TypeError(value)


def python_value(message: ParameterValue):
    return {ParameterType.PARAMETER_BOOL: message.bool_value, ParameterType.PARAMETER_INTEGER: message.integer_value,
            ParameterType.PARAMETER_DOUBLE: message.double_value, ParameterType.PARAMETER_STRING: message.string_value,
            ParameterType.PARAMETER_DOUBLE_ARRAY: list(message.double_array_value)}[message.type]


class ParameterClient:
    """What `ros2 param set / get` do: the node's SetParameters / GetParameters services."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self.set_client = harness.node.create_client(SetParameters, f'{NODE}/set_parameters')
        self.get_client = harness.node.create_client(GetParameters, f'{NODE}/get_parameters')

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=20.0), f'no service {client.srv_name}'
        future = client.call_async(request)
        deadline = 30.0
        while not future.done() and deadline > 0:
            self.harness.ros.spin_once(0.05)
            deadline -= 0.05
        assert future.done(), f'{client.srv_name}: no answer'
        return future.result()

    def set(self, name: str, value) -> tuple[bool, str]:
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=parameter_value(value))])
        result = self._call(self.set_client, request).results[0]
        return result.successful, result.reason

    def get(self, names: list[str]) -> list:
        return [python_value(v) for v in self._call(self.get_client, GetParameters.Request(names=names)).values]


def scores_of(message) -> list[float]:
    return [d.results[0].hypothesis.score for d in message.detections]


class Frames:
    """Publish a pair, wait for its detections (and labels, when asked)."""

    def __init__(self, harness: Harness, node):
        self.harness, self.node = harness, node
        self.rng = np.random.default_rng(7)
        self.stamp = 5000.0

    def detections(self):
        self.stamp += 0.1
        cloud_msg, _ = publish_pair(self.harness, self.rng, self.stamp)
        found = []

        def arrived():
            found[:] = [d for d in self.harness.received['detections'] if d.header == cloud_msg.header]
            return bool(found)
        assert self.harness.spin_until(arrived, 20.0, self.node), self.node.output()
        return found[0]

    def labels_after_detections(self) -> bool:
        """Whether a semantic label image came with the next frame."""
        before = len(self.harness.received['labels'])
        self.detections()
        self.harness.spin_until(lambda: len(self.harness.received['labels']) > before, 1.0, self.node)
        return len(self.harness.received['labels']) > before


def test_param_set_changes_the_next_output_and_refuses_what_is_not_allowed(harness, small_checkpoint, ros_process):
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=60.0', 'score_threshold:=0.0']), name='node')
    wait_for_ready(harness, node, np.random.default_rng(1))
    params, frames = ParameterClient(harness), Frames(harness, node)

    everything = scores_of(frames.detections())
    assert len(everything) == defaults()['max_detections'], 'score_threshold 0: every candidate up to max_detections'
    # decoding: the very next frame follows the new value
    assert params.set('max_detections', 3) == (True, '')
    assert len(scores_of(frames.detections())) == 3
    threshold = float(np.median(everything))
    assert params.set('score_threshold', threshold) == (True, '')
    assert min(scores_of(frames.detections()) or [1.0]) >= threshold
    assert params.set('score_threshold', 1.0) == (True, '')
    assert scores_of(frames.detections()) == []
    assert params.set('score_threshold', 0.0)[0] and params.set('max_detections', 100)[0]
    assert len(scores_of(frames.detections())) == 100
    # outputs switched off and on
    assert frames.labels_after_detections()
    assert params.set('publish_semantic', False) == (True, '')
    assert not frames.labels_after_detections()
    assert params.set('publish_semantic', True) == (True, '')
    assert frames.labels_after_detections()
    # pairing and tracking gates apply at run time too
    assert params.set('slop_s', 0.02) == (True, '') and params.set('camera.time_offset_s', -0.001) == (True, '')
    assert params.set('tracking_gates_m', [3.0, 4.0, 1.0, 2.0]) == (True, '')
    assert len(scores_of(frames.detections())) == 100

    # refusals, each with a reason; the value stays
    refused = {
        'queue_size': (5, 'read-only'),
        'camera.image_transport': ('compressed', 'read-only'),
        'camera.time_offset_s': (20.0, 'camera.time_offset_s'),
        'model_path': ('/nonexistent.pt', 'read-only'),
        'overlay_alpha': (5.0, 'overlay_alpha'),
        'score_threshold': (math.nan, 'score_threshold'),
        'slop_s': (-1.0, 'slop_s'),
        'tracking_gates_m': ([1.0, 2.0], 'one gate per name of tracking_gate_classes'),
        'tracking_default_gate_m': (0.0, 'tracking_default_gate_m: 0.0 is not allowed: a number > 0'),
    }
    before = params.get(list(refused))
    for name, (value, reason) in refused.items():
        successful, text = params.set(name, value)
        assert not successful and reason in text, (name, text)
    assert params.get(list(refused)) == before
    assert len(scores_of(frames.detections())) == 100
    node.assert_running()
    assert 'Traceback' not in node.output()
    assert node.interrupt() == 0, node.output()
