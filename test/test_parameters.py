"""The node's parameter schema (mtl_perception_ros.core.parameters): each rule refuses what it must with a
message naming the parameter, the value and what is allowed, accepts its edges; the shipped params YAML,
the table in docs/node.md and offline bag evaluation agree with it."""
from __future__ import annotations

import array
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtl_perception_ros.core import parameters as schema
from mtl_perception_ros.core.parameters import ParameterError, validate, validate_all, validate_update

REPO = Path(__file__).resolve().parent.parent
NODE_YAML = REPO / 'config/mtl_perception.yaml'
NODE_DOC = REPO / 'docs/node.md'

RUNTIME = {'score_threshold', 'max_detections', 'nms_radius_m', 'publish_detections_3d', 'publish_markers',
           'publish_semantic', 'overlay_alpha', 'slop_s', 'tracking_gates_m', 'tracking_default_gate_m', 'tf_timeout_s'}
READ_ONLY_AT_LEAST = {'model_path', 'device', 'precision', 'backend', 'onnx_dir', 'inference_threads',
                      'points_topic', 'cameras', 'input_qos', 'queue_size', 'warmup_iterations', 'tracking_enabled', 'tracking_gate_classes', 'max_points',
                      'diagnostics_period_s'}
CAMERA_RUNTIME = {'time_offset_s'}
IDENTITY_AXES = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]

# (parameter, value, how the value appears in the message, words of what is allowed)
REFUSED = [
    ('queue_size', 0, '0', 'an integer in [1, 1000]'),
    ('queue_size', -3, '-3', 'an integer in [1, 1000]'),
    ('queue_size', 'ten', "'ten' (a string)", 'an integer'),
    ('queue_size', 10.0, '10.0 (a number)', 'an integer'),
    ('queue_size', True, 'true (a boolean)', 'an integer'),
    ('slop_s', -0.01, '-0.01', 'a number >= 0 (s)'),
    ('slop_s', '0.05', "'0.05' (a string)", 'a number >= 0'),
    ('points_min_interval_s', -0.05, '-0.05', 'a number >= 0 (s)'),
    ('device', 'tpu9', "'tpu9'", 'one of auto, cpu, cuda, cuda:N'),
    ('device', 'cuda:', "'cuda:'", 'cuda:N'),
    ('device', 'cuda:x', "'cuda:x'", 'cuda:N'),
    ('device', 'CPU', "'CPU'", 'cuda:N'),
    ('precision', 'fp64', "'fp64'", 'one of fp32, fp16, bf16'),
    ('input_qos', 'best_effort', "'best_effort'", 'one of sensor_data, reliable'),
    ('tracking_association', 'auction', "'auction'", 'one of hungarian, greedy'),
    ('max_detections', -5, '-5', 'an integer in [1, 1000]'),
    ('max_detections', 0, '0', 'an integer in [1, 1000]'),
    ('diagnostics_period_s', 0, '0', 'a number in [0.1, 3600] (s)'),
    ('diagnostics_period_s', 0.05, '0.05', 'a number in [0.1, 3600]'),
    ('score_threshold', math.nan, '.nan', 'a number in [0, 1]'),
    ('score_threshold', 1.5, '1.5', 'a number in [0, 1]'),
    ('score_threshold', -0.1, '-0.1', 'a number in [0, 1]'),
    ('overlay_alpha', 5.0, '5.0', 'a number in [0, 1]'),
    ('camera.time_offset_s', math.inf, '.inf', 'a number in [-10, 10] (s)'),
    ('camera.image_transport', 'theora', "'theora'", 'one of raw, compressed'),
    ('cameras', [], '[]', 'a list of 1 or more'),
    ('cameras', ['front', 'rear/left'], "['front', 'rear/left']", "(element 1: 'rear/left')"),
    ('cameras', ['front', ''], "['front', '']", "(element 1: '')"),
    ('camera_timeout_s', 0.0, '0.0', 'a number > 0 (s)'),
    ('nms_radius_m', -1.0, '-1.0', 'a number >= 0 (m)'),
    ('intensity_scale', 0, '0', 'a number > 0'),
    ('warmup_iterations', -1, '-1', 'an integer in [0, 100]'),
    ('max_points', 0, '0', 'an integer >= 1 (points)'),
    ('time_jump_threshold_s', 0.0, '0.0', 'a number > 0 (s)'),
    ('time_jump_threshold_s', -1.0, '-1.0', 'a number > 0 (s)'),
    ('future_stamp_tolerance_s', 0.0, '0.0', 'a number > 0 (s)'),
    ('future_stamp_tolerance_s', -math.inf, '-.inf', 'a number > 0 (s)'),
    ('tracking_default_gate_m', 0.0, '0.0', 'a number > 0 (m)'),
    ('tracking_birth_hits', 0, '0', 'an integer in [1, 1000]'),
    ('tracking_death_misses', -2, '-2', 'an integer in [1, 1000]'),
    ('tracking_max_gap_s', 0.0, '0.0', 'a number > 0 (s)'),
    ('tracking_enabled', 1, '1 (an integer)', 'true or false'),
    ('publish_markers', 'true', "'true' (a string)", 'true or false'),
    ('model_path', 3, '3 (an integer)', 'a string'),
    ('points_topic', '', "''", 'a non-empty string'),
    ('point_fields', ['x', 'y', 'z'], "['x', 'y', 'z']", 'a list of 4 non-empty strings (it has 3)'),
    ('point_fields', ['x', 'y', 'z', ''], "['x', 'y', 'z', '']", "(element 3: '')"),
    ('point_fields', 'x y z intensity', "'x y z intensity' (a string)", 'a list of 4'),
    ('camera.lidar_to_camera', IDENTITY_AXES[:15], '[0.0, -1.0,', 'a list of 16 numbers (it has 15)'),
    ('camera.lidar_to_camera', IDENTITY_AXES[:15] + [math.nan], '[0.0, -1.0,', 'a list of 16 numbers (element 15: .nan)'),
    ('camera.camera_matrix', [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0], '[1000.0,', 'a list of 9 numbers'),
    ('camera.camera_matrix', [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, '1'], '[1000.0,', "(element 8: '1')"),
    ('camera.distortion', [0.0, 0.0, 0.0, 0.0], '[0.0, 0.0, 0.0, 0.0]', 'a list of 5 or 8 numbers (it has 4)'),
    ('camera.distortion', [], '[]', 'a list of 5 or 8 numbers (it has 0)'),
    ('tracking_gates_m', [], '[]', 'a list of 1 or more numbers > 0 (m) (it is empty)'),
    ('camera.calibration_image_size', [1920], '[1920]', 'a list of 2 integers >= 1 (px)'),
    ('camera.calibration_image_size', [0, 1208], '[0, 1208]', '(element 0: 0)'),
    ('camera.calibration_image_size', [1920.0, 1208.0], '[1920.0, 1208.0]', '(element 0: 1920.0)'),
    ('tracking_gates_m', [4.0, -1.0, 1.5, 2.5], '[4.0, -1.0, 1.5, 2.5]', 'a list of 1 or more numbers > 0 (m) (element 1'),
    ('tracking_gates_m', 4.0, '4.0 (a number)', 'a list of 1 or more numbers > 0 (m)'),
    ('tracking_gate_classes', ['car', 7], "['car', 7]", '(element 1: 7)'),
]

# (parameter, value given, value taken)
ACCEPTED = [
    ('queue_size', 1, 1), ('queue_size', 1000, 1000), ('queue_size', np.int64(5), 5),
    ('slop_s', 0, 0.0), ('slop_s', 0.05, 0.05), ('points_min_interval_s', 0.0, 0.0),
    ('device', 'auto', 'auto'), ('device', 'cpu', 'cpu'), ('device', 'cuda', 'cuda'),
    ('device', 'cuda:0', 'cuda:0'), ('device', 'cuda:12', 'cuda:12'),
    ('precision', 'bf16', 'bf16'), ('input_qos', 'reliable', 'reliable'), ('tracking_association', 'greedy', 'greedy'),
    ('max_detections', 1, 1), ('max_detections', 1000, 1000),
    ('diagnostics_period_s', 0.1, 0.1), ('diagnostics_period_s', 3600, 3600.0),
    ('score_threshold', 0, 0.0), ('score_threshold', 1, 1.0), ('score_threshold', np.float32(0.5), 0.5),
    ('overlay_alpha', 0.0, 0.0), ('overlay_alpha', 1.0, 1.0),
    ('camera.time_offset_s', -0.025, -0.025), ('rear_left.time_offset_s', -10, -10.0),
    ('cameras', ['front_center', 'side_left'], ['front_center', 'side_left']), ('camera.image_transport', 'compressed', 'compressed'),
    ('nms_radius_m', 0, 0.0), ('warmup_iterations', 0, 0), ('max_points', 1, 1),
    ('time_jump_threshold_s', 1e-3, 1e-3), ('future_stamp_tolerance_s', 5, 5.0),
    ('tracking_enabled', False, False), ('tracking_enabled', np.bool_(True), True),
    ('model_path', '', ''),
    ('camera.distortion', [0, 0, 0, 0, 0], [0.0] * 5), ('camera.distortion', [0.1] * 8, [0.1] * 8),
    ('camera.camera_matrix', array.array('d', [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, 1.0]),
     [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, 1.0]),
    ('camera.lidar_to_camera', np.array(IDENTITY_AXES), IDENTITY_AXES),
    ('camera.calibration_image_size', (1, 1), [1, 1]),
    ('tracking_gates_m', [1, 2], [1.0, 2.0]),
    ('point_fields', ('x', 'y', 'z', 'reflectivity'), ['x', 'y', 'z', 'reflectivity']),
]


# ----------------------------------------------------------------------------- one parameter
@pytest.mark.parametrize('name, value, shown, allowed', REFUSED,
                         ids=[f'{case[0]}={case[1]!r}'[:60] for case in REFUSED])
def test_each_rule_refuses_with_a_message_naming_parameter_value_and_what_is_allowed(name, value, shown, allowed):
    with pytest.raises(ParameterError) as caught:
        validate(name, value)
    message = str(caught.value)
    assert message.startswith(f'{name}: {shown}') and ' is not allowed: ' in message, message
    assert allowed in message, message
    assert caught.value.name == name
    with pytest.raises(ParameterError, match=f'^{name}: '):       # the start-up check says the same
        validate_all({name: value}, required=False)


def test_the_message_reads_as_the_issue_asks():
    with pytest.raises(ParameterError) as caught:
        validate('score_threshold', float('nan'))
    assert str(caught.value) == 'score_threshold: .nan is not allowed: a number in [0, 1]'
    with pytest.raises(ParameterError) as caught:
        validate('device', 'tpu9')
    assert str(caught.value) == "device: 'tpu9' is not allowed: one of auto, cpu, cuda, cuda:N"


@pytest.mark.parametrize('name, value, taken', ACCEPTED, ids=[f'{case[0]}={case[1]!r}'[:60] for case in ACCEPTED])
def test_each_rule_accepts_its_edges_and_coerces_to_the_parameter_type(name, value, taken):
    result = validate(name, value)
    assert result == taken
    assert type(result) is type(taken)
    if isinstance(taken, list):
        assert all(type(a) is type(b) for a, b in zip(result, taken))


def test_an_unknown_parameter_is_refused_with_the_known_names():
    with pytest.raises(ParameterError, match='score_treshold: unknown parameter .*score_threshold'):
        validate('score_treshold', 0.5)
    with pytest.raises(ParameterError, match=r'camera.time_ofset_s: unknown parameter \(did you mean camera.time_offset_s'):
        validate('camera.time_ofset_s', 0.1)


def test_camera_parameters_belong_to_a_listed_camera():
    values = validate_all({'cameras': ['front', 'rear'], 'rear.time_offset_s': 0.02, 'rear.image_transport': 'compressed'},
                          required=False)
    assert values['front.time_offset_s'] == 0.0 and values['rear.time_offset_s'] == 0.02
    assert values['front.image_transport'] == 'raw' and values['rear.image_transport'] == 'compressed'
    assert 'camera.time_offset_s' not in values and 'front.lidar_to_camera' not in values    # not set: TF
    with pytest.raises(ParameterError, match=r"^side.time_offset_s: there is no camera 'side' in cameras "
                                             r"\['front', 'rear'\]"):
        validate_all({'cameras': ['front', 'rear'], 'side.time_offset_s': 0.02}, required=False)
    with pytest.raises(ParameterError, match=r"^cameras: \['a', 'a'\] is not allowed: each name once"):
        validate_all({'cameras': ['a', 'a']}, required=False)


def test_params_file_nesting_flattens_as_rcl_does():
    assert schema.flatten_parameters({'slop_s': 0.1, 'front': {'time_offset_s': 0.2, 'lidar_to_camera': [1.0]}}) == \
        {'slop_s': 0.1, 'front.time_offset_s': 0.2, 'front.lidar_to_camera': [1.0]}


# ----------------------------------------------------------------------------- start-up
def test_start_up_fills_defaults_and_leaves_out_rclpys_own_parameters():
    values = validate_all({'model_path': 'm.pt', 'slop_s': 0, 'use_sim_time': True,
                           'qos_overrides./points.subscription.depth': 5})
    assert values == {**schema.defaults(), 'model_path': 'm.pt', 'slop_s': 0.0}


def test_start_up_requires_model_path_only_when_asked():
    with pytest.raises(ParameterError, match=r"^model_path: '' is not allowed: it is required, e\.g\. --ros-args"):
        validate_all({})
    assert validate_all({}, required=False)['model_path'] == ''


def test_start_up_names_every_bad_parameter_at_once():
    with pytest.raises(ParameterError) as caught:
        validate_all({'queue_size': 0, 'score_threshold': math.nan, 'bogus': 1, 'model_path': 'm.pt'})
    assert [problem.split(':')[0] for problem in caught.value.problems] == ['queue_size', 'score_threshold', 'bogus']
    assert str(caught.value) == '; '.join(caught.value.problems)


def test_one_gate_per_tracking_class():
    with pytest.raises(ParameterError, match=r'^tracking_gates_m: \[4.0, 5.0\] is not allowed: one gate per name '
                                             r'of tracking_gate_classes .*\(4 numbers\), got 2'):
        validate_all({'tracking_gates_m': [4.0, 5.0]}, required=False)
    values = validate_all({'tracking_gate_classes': ['car', 'bus'], 'tracking_gates_m': [4.0, 6.0]}, required=False)
    assert values['tracking_gates_m'] == [4.0, 6.0]


K = [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize('changes, match', [
    ({'camera.lidar_to_camera': [2.0] + IDENTITY_AXES[1:]}, '^camera.lidar_to_camera is not a rigid transform'),
    ({'camera.camera_matrix': [-1000.0] + K[1:], 'camera.calibration_image_size': [1920, 1208]},
     '^camera.camera_matrix must have fx, fy > 0'),
    ({'camera.camera_matrix': K[:7] + [1.0, 1.0], 'camera.calibration_image_size': [1920, 1208]}, 'last row 0 0 1'),
    ({'camera.camera_matrix': K}, r'^camera.camera_matrix needs camera.calibration_image_size too'),
    ({'camera.calibration_image_size': [1920, 1208]}, r'^camera.calibration_image_size needs camera.camera_matrix'),
    ({'camera.distortion': [0.1] * 5}, r'^camera.distortion needs camera.camera_matrix'),
])
def test_the_calibration_must_be_one_the_camera_calibration_accepts(changes, match):
    with pytest.raises(ParameterError, match=match):
        validate_all(changes, required=False)


# ----------------------------------------------------------------------------- run time
def test_run_time_changes_are_validated_and_read_only_ones_refused():
    current = validate_all({'model_path': 'm.pt'})
    assert validate_update(current, {'score_threshold': 0.9, 'max_detections': 5, 'publish_markers': False}) == \
        {'score_threshold': 0.9, 'max_detections': 5, 'publish_markers': False}
    assert validate_update(current, {'tracking_gates_m': [1, 2, 3, 4]}) == {'tracking_gates_m': [1.0, 2.0, 3.0, 4.0]}
    with pytest.raises(ParameterError, match=r'^model_path: cannot change while the node runs \(read-only\)'):
        validate_update(current, {'model_path': '/nonexistent.pt'})
    with pytest.raises(ParameterError, match=r'^score_threshold: \.nan is not allowed'):
        validate_update(current, {'score_threshold': math.nan})
    with pytest.raises(ParameterError, match='^tracking_gates_m: .* one gate per name'):
        validate_update(current, {'tracking_gates_m': [1.0]})
    with pytest.raises(ParameterError, match='^bogus: unknown parameter'):
        validate_update(current, {'bogus': 1})
    assert validate_update(current, {'camera.time_offset_s': -0.01}) == {'camera.time_offset_s': -0.01}
    with pytest.raises(ParameterError, match=r'^camera.image_transport: cannot change while the node runs'):
        validate_update(current, {'camera.image_transport': 'compressed'})
    assert validate_update(current, {'use_sim_time': True}) == {}


# ----------------------------------------------------------------------------- the schema itself
def test_every_default_is_valid_and_defaults_are_fresh_copies():
    for spec in schema.SCHEMA:
        assert validate(spec.name, spec.default) == spec.default, spec.name
        assert spec.description and spec.allowed()
    for spec in schema.CAMERA_SCHEMA:
        assert spec.default is None or validate(f'camera.{spec.name}', spec.default) == spec.default, spec.name
        assert spec.description and spec.allowed()
    assert validate_all(schema.defaults(), required=False) == schema.defaults()
    values = schema.defaults()
    values['tracking_gates_m'].append(9.0)
    assert schema.defaults()['tracking_gates_m'] == [4.0, 5.0, 1.5, 2.5]
    assert len(schema.SPECS) == len(schema.SCHEMA)
    assert schema.defaults(['a', 'b'])['b.time_offset_s'] == 0.0


def test_which_parameters_may_change_at_run_time():
    assert set(schema.runtime_parameters()) == RUNTIME
    read_only = {spec.name for spec in schema.SCHEMA if spec.read_only}
    assert READ_ONLY_AT_LEAST <= read_only
    assert {spec.name for spec in schema.CAMERA_SCHEMA if not spec.read_only} == CAMERA_RUNTIME


def test_the_parameters_issue_11_adds():
    assert schema.defaults()['max_points'] == 128 * 2048
    assert schema.defaults()['time_jump_threshold_s'] > 0 and schema.defaults()['future_stamp_tolerance_s'] > 0


def test_ros_descriptor_pieces():
    score = schema.ros_descriptor('score_threshold')
    assert score.floating_point_range == (0.0, 1.0) and score.integer_range is None and not score.read_only
    assert 'a number in [0, 1]' in score.description and 'may change at run time' in score.description
    queue = schema.ros_descriptor('queue_size')
    assert queue.integer_range == (1, 1000) and queue.floating_point_range is None and queue.read_only
    assert '(messages)' in queue.description and 'read-only' in queue.description
    slop = schema.ros_descriptor('slop_s')
    assert slop.floating_point_range == (0.0, math.inf) and '(s)' in slop.description
    assert schema.ros_descriptor('max_points').integer_range == (1, schema.INT64_MAX)
    device = schema.ros_descriptor('device')
    assert device.floating_point_range is None and device.integer_range is None
    assert 'cuda:N' in device.additional_constraints
    assert schema.ros_descriptor('tracking_gates_m').floating_point_range is None    # ROS ranges: scalars only


# ----------------------------------------------------------------------------- the params YAML
def yaml_problems(path: Path) -> list[str]:
    """What is wrong with a node params YAML against the schema: unknown or missing names, bad values."""
    block = schema.flatten_parameters(yaml.safe_load(path.read_text(encoding='utf-8'))['/**']['ros__parameters'])
    problems = [f'{name}: not in the file' for name in schema.SPECS if name not in block]
    problems += [f'{camera}.{spec.name}: not in the file' for camera in block.get('cameras', [])
                 for spec in schema.CAMERA_SCHEMA if f'{camera}.{spec.name}' not in block]
    try:
        validate_all(block, required=False)
    except ParameterError as error:
        problems += error.problems
    return problems


def test_the_node_yaml_lists_every_parameter_with_a_valid_value():
    assert yaml_problems(NODE_YAML) == []


def test_the_yaml_check_finds_unknown_missing_and_bad_entries(tmp_path):
    block = yaml.safe_load(NODE_YAML.read_text())['/**']['ros__parameters']
    del block['max_points']
    block.update(score_treshold=0.5, queue_size=0)
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': block}}))
    problems = yaml_problems(path)
    assert problems[0] == 'max_points: not in the file'
    assert any(p.startswith('queue_size: 0 is not allowed') for p in problems)
    assert any(p.startswith('score_treshold: unknown parameter') for p in problems)


def test_offline_evaluation_reads_and_validates_through_the_schema(tmp_path):
    from training.evaluation.evaluate_bag import load_node_params
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    slop_s: 0\n    use_sim_time: true\n')
    assert load_node_params(path) == {**schema.defaults(), 'slop_s': 0.0}
    path.write_text('/**:\n  ros__parameters:\n    score_threshold: .nan\n    queue_size: 0\n')
    with pytest.raises(ValueError) as caught:
        load_node_params(path)
    assert str(caught.value) == (f'{path}: score_threshold: .nan is not allowed: a number in [0, 1]; '
                                 f'queue_size: 0 is not allowed: an integer in [1, 1000] (messages)')
    path.write_text('/**: [unclosed\n')
    with pytest.raises(ValueError, match='not a valid YAML file'):
        load_node_params(path)


# ----------------------------------------------------------------------------- the docs table
def doc_table(text: str) -> str:
    start = text.index(schema.TABLE_BEGIN)
    end = text.index(schema.TABLE_END, start) + len(schema.TABLE_END)
    return text[start:end] + '\n'


def test_the_docs_table_is_the_generated_one():
    """docs/node.md carries `python -m mtl_perception_ros.core.parameters --markdown` verbatim:
    after a schema change, paste that output between the markers."""
    generated = subprocess.run([sys.executable, '-m', 'mtl_perception_ros.core.parameters', '--markdown'],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert generated == schema.markdown_table()
    assert doc_table(NODE_DOC.read_text(encoding='utf-8')) == generated


def test_the_docs_table_shows_each_parameter_with_default_unit_and_run_time_column():
    rows = [line for line in schema.markdown_table().splitlines() if line.startswith('| `')]
    assert len(rows) == len(schema.SCHEMA) + len(schema.CAMERA_SCHEMA)
    names = [spec.name for spec in schema.SCHEMA] + [f'NAME.{spec.name}' for spec in schema.CAMERA_SCHEMA]
    for row, name, spec in zip(rows, names, schema.SCHEMA + schema.CAMERA_SCHEMA):
        cells = [cell.strip() for cell in row.strip('|').split(' | ')]
        assert cells[0] == f'`{name}`' and cells[4] == spec.unit
        assert cells[5] == ('no' if spec.read_only else 'yes')
    stale = NODE_DOC.read_text(encoding='utf-8').replace('| `slop_s` | `float` | 0.05 |',
                                                         '| `slop_s` | `float` | 0.1 |')
    assert doc_table(stale) != schema.markdown_table()
