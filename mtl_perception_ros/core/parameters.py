"""The node's parameters, defined once (ROS-free): name, type, default, allowed values, unit, meaning,
and whether a parameter may change while the node runs.

Everything else follows from SCHEMA: the node declares its parameters from it (`ros_descriptor`
gives the pieces of each rclpy ParameterDescriptor) and validates them at start-up (`validate_all`)
and on `ros2 param set` (`validate_update`); offline bag evaluation
(training.evaluation.evaluate_bag) reads the same defaults and rules; config/mtl_perception.yaml
and the table in docs/node.md are checked against it by test/test_parameters.py. The table is
printed by

    python -m mtl_perception_ros.core.parameters --markdown

Rules: a float parameter takes an int (coerced) but never a bool, a string, NaN or infinity; an
int parameter takes only integers (10.0 is refused, as rclpy refuses a double for an integer);
lists take any non-empty sequence of such elements (a ROS parameter cannot hold an empty typed list). Every refusal is a ParameterError whose message names
the parameter, the value given and what is allowed, e.g.
`score_threshold: .nan is not allowed: a number in [0, 1]`.

Run-time parameters (read_only=False) are the ones the node re-reads or applies per frame:
decoding (score_threshold, max_detections, nms_radius_m), the publish_* switches, overlay_alpha,
pairing (camera_time_offset_s, slop_s) and the tracking gates. Everything structural (topics,
QoS, model, device, queue sizes, warm-up) and the calibration parameters are read-only: restart
the node to change them (K, D and the image size follow each camera's CameraInfo messages while
the node runs, the extrinsics its TF transforms).

Cameras: `cameras` lists their names; each camera NAME has the parameters of CAMERA_SCHEMA as
`NAME.<field>` (in a params file nested under NAME:, on the command line `-p NAME.time_offset_s:=0.1`).
"""
from __future__ import annotations

import argparse
import array
import dataclasses
import difflib
import math
import numbers
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mtl_perception_ros.core.tracking import ASSOCIATIONS

BOOL, INT, FLOAT, STR = 'bool', 'int', 'float', 'str'
FLOAT_LIST, INT_LIST, STR_LIST = 'float[]', 'int[]', 'str[]'
_ELEMENT = {FLOAT_LIST: FLOAT, INT_LIST: INT, STR_LIST: STR}
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1

# Parameters every rclpy node has, or that rcl's params files may carry: not the schema's business.
ROS_PARAMETERS = ('use_sim_time', 'start_type_description_service')
ROS_PARAMETER_PREFIXES = ('qos_overrides',)


class ParameterError(ValueError):
    """A parameter value that is not allowed; `name` is the (first) parameter concerned, `problems`
    one message per refused parameter."""

    def __init__(self, message: str, name: str | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.name = name
        self.problems = problems if problems is not None else [message]


@dataclass(frozen=True)
class Range:
    """An interval of numbers; None = unbounded on that side; `*_open` = the bound itself is excluded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def text(self) -> str:
        """'in [0, 1]', '>= 1', '> 0', 'in (0, 10]', ...; '' when unbounded."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ''


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter. For lists, `range` / `non_empty` apply to each element and `lengths` lists
    the allowed lengths (None: any). `choices` are the allowed strings as shown to users; `pattern`,
    when set, is the regular expression a value must fully match instead (e.g. 'cuda:N')."""

    name: str
    type: str
    default: Any
    description: str
    unit: str = ''
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    lengths: tuple[int, ...] | None = None
    non_empty: bool = False
    read_only: bool = True
    required: bool = False      # the default ('') is a placeholder: start-up needs a value

    def allowed(self, with_unit: bool = True) -> str:
        """What is allowed, in words: 'a number in [0, 1]', 'one of fp32, fp16, bf16', ..."""
        unit = f' ({self.unit})' if self.unit and with_unit else ''
        if self.type == BOOL:
            return 'true or false'
        if self.type in (INT, FLOAT):
            bounds = self.range.text() if self.range else ''
            return f"{'an integer' if self.type == INT else 'a number'}{' ' + bounds if bounds else ''}{unit}"
        if self.type == STR:
            if self.choices:
                return 'one of ' + ', '.join(self.choices)
            return 'a non-empty string' if self.non_empty else 'a string'
        element = _ELEMENT[self.type]
        noun = {FLOAT: 'numbers', INT: 'integers', STR: 'non-empty strings' if self.non_empty else 'strings'}[element]
        bounds = self.range.text() if self.range else ''
        count = '1 or more '
        if self.lengths:
            count = ', '.join(str(n) for n in self.lengths[:-1]) + (' or ' if len(self.lengths) > 1 else '') \
                + f'{self.lengths[-1]} '
        return f"a list of {count}{noun}{' ' + bounds if bounds else ''}{unit}"


def _p(name, type_, default, description, **kwargs) -> ParameterSpec:
    return ParameterSpec(name, type_, default, description, **kwargs)


AT_LEAST_0 = Range(0.0)
ABOVE_0 = Range(0.0, low_open=True)
UNIT_INTERVAL = Range(0.0, 1.0)

SCHEMA: tuple[ParameterSpec, ...] = (
    # ------------------------------------------------------------------ model
    _p('model_path', STR, '', 'Checkpoint (.pt) written by training; required (the launch file\'s `model` '
       'argument sets it).', required=True),
    _p('device', STR, 'auto', '`auto` = CUDA when available, else CPU.',
       choices=('auto', 'cpu', 'cuda', 'cuda:N'), pattern=r'auto|cpu|cuda(:[0-9]+)?'),
    _p('precision', STR, 'fp32', 'Inference precision: `fp16` / `bf16` on CUDA; on the CPU `bf16` with backend '
       'torch where the CPU has it natively (AVX512-BF16, AMX), else fp32 (/diagnostics says which runs); `int8` '
       'with backend onnxruntime on the CPU (graphs made ahead by training.export.to_int8).',
       choices=('fp32', 'fp16', 'bf16', 'int8')),
    _p('backend', STR, 'torch', 'Who runs the dense networks: `torch`, `onnxruntime` (the ONNX export; CPU, or '
       'CUDA with onnxruntime-gpu) or `tensorrt` (engines built ahead by mtl_perception_build_engines).',
       choices=('torch', 'onnxruntime', 'tensorrt')),
    _p('onnx_dir', STR, '', 'Folder of the ONNX export (training.export.to_onnx) for backends onnxruntime and '
       'tensorrt; empty = `<model_path stem>_onnx` next to the checkpoint.'),
    _p('inference_threads', INT, 0, 'CPU threads of torch, OpenCV and ONNX Runtime in the node; 0 = every core '
       'but one (left to the executor thread), at least 2 where there are 2.', unit='threads', range=Range(0, 1024)),
    _p('warmup_iterations', INT, 2, 'Dummy inferences before the node reports ready.', range=Range(0, 100)),
    # ------------------------------------------------------------------ inputs
    _p('points_topic', STR, 'points', 'Input sensor_msgs/PointCloud2; a relative name, so namespaces and '
       'remaps move it.', non_empty=True),
    _p('cameras', STR_LIST, ['camera'], 'Camera names; camera NAME subscribes NAME/image_raw (or '
       'NAME/image_raw/compressed) and NAME/camera_info and has the NAME.* parameters below.',
       non_empty=True, pattern=r'[A-Za-z][A-Za-z0-9_]*'),
    _p('input_qos', STR, 'sensor_data', 'QoS of the inputs: `sensor_data` (best effort) or `reliable`.',
       choices=('sensor_data', 'reliable')),
    _p('point_fields', STR_LIST, ['x', 'y', 'z', 'intensity'], 'PointCloud2 fields read as x, y, z and '
       'reflectance.', lengths=(4,), non_empty=True),
    _p('intensity_scale', FLOAT, 1.0 / 255.0, 'Multiplies the 4th field to reach the model range [0, 1] '
       '(1/255 for 0..255 intensities).', range=ABOVE_0),
    _p('max_points', INT, 128 * 2048, 'Most points used per cloud (128 beams x 2048 columns); larger clouds '
       'are subsampled (counted in /diagnostics).', unit='points', range=Range(1)),
    # ------------------------------------------------------------------ pairing and stamps
    _p('slop_s', FLOAT, 0.05, 'Largest stamp difference between the cloud and the image of one pair.',
       unit='s', range=AT_LEAST_0, read_only=False),
    _p('queue_size', INT, 10, 'Messages kept per input stream while waiting for a partner (also the '
       'reliable QoS depth).', unit='messages', range=Range(1, 1000)),
    _p('points_min_interval_s', FLOAT, 0.05, 'Smallest time between two clouds (a 10 Hz LiDAR: up to 0.1); lets '
       'a pair leave the synchronizer without waiting for the next cloud (0 = wait).', unit='s',
       range=AT_LEAST_0),
    _p('camera_timeout_s', FLOAT, 0.5, 'No image for this long -> clouds are processed LiDAR-only '
       '(diagnostics say so).', unit='s', range=ABOVE_0),
    _p('time_jump_threshold_s', FLOAT, 1.0, 'A stamp going back by more than this resets the synchronizer '
       'and the tracker (new track ids); processing resumes with the next pair.', unit='s', range=ABOVE_0),
    _p('future_stamp_tolerance_s', FLOAT, 5.0, 'A lone stamp further ahead of its stream than this is an '
       'outlier: dropped and counted, the stream goes on.', unit='s', range=ABOVE_0),
    _p('tf_timeout_s', FLOAT, 0.05, 'Longest wait for the TF sample at a cloud\'s stamp (moving frames: the '
       '/tf message may arrive after the cloud); unknown frames do not wait (docs/transforms.md).', unit='s',
       range=Range(0.0, 1.0), read_only=False),
    # ------------------------------------------------------------------ decoding
    _p('score_threshold', FLOAT, 0.3, 'Minimum detection score.', range=UNIT_INTERVAL, read_only=False),
    _p('max_detections', INT, 100, 'At most this many boxes per frame.', range=Range(1, 1000), read_only=False),
    _p('nms_radius_m', FLOAT, 0.0, 'Circle NMS radius on BEV centres (0 = off).', unit='m', range=AT_LEAST_0,
       read_only=False),
    # ------------------------------------------------------------------ tracking
    _p('tracking_enabled', BOOL, True, 'Track detections over frames: Detection2D/3D id = track id, velocity '
       'arrows in ~/markers, confirmed tracks on ~/tracks.'),
    _p('tracking_gate_classes', STR_LIST, ['car', 'truck', 'pedestrian', 'cyclist'], 'Class names that '
       'tracking_gates_m gives a gate for (the model\'s detection class names).', non_empty=True),
    _p('tracking_gates_m', FLOAT_LIST, [4.0, 5.0, 1.5, 2.5], 'Per class of tracking_gate_classes (same length): '
       'largest distance of a detection from its track\'s predicted centre.', unit='m', range=ABOVE_0,
       read_only=False),
    _p('tracking_default_gate_m', FLOAT, 2.0, 'Gate of classes not in tracking_gate_classes.', unit='m',
       range=ABOVE_0, read_only=False),
    _p('tracking_birth_hits', INT, 2, 'Consecutive frames with a detection before a new track gets an id.',
       unit='frames', range=Range(1, 1000)),
    _p('tracking_confirm_score', FLOAT, 0.0, 'A new track whose first detection scores at least this gets its id '
       'at once, without waiting tracking_birth_hits frames; 0 = off.', range=UNIT_INTERVAL),
    _p('tracking_death_misses', INT, 3, 'Consecutive frames without a detection that end a track; until then '
       'it coasts on its prediction and keeps its id.', unit='frames', range=Range(1, 1000)),
    _p('tracking_association', STR, 'hungarian', '`hungarian` (least total distance) or `greedy` (highest '
       'score first).', choices=tuple(ASSOCIATIONS)),
    _p('tracking_max_gap_s', FLOAT, 1.0, 'A longer time between two clouds restarts tracking (new ids).',
       unit='s', range=ABOVE_0),
    # ------------------------------------------------------------------ outputs
    _p('publish_detections_3d', BOOL, True, 'Publish ~/detections_3d (Detection3DArray).', read_only=False),
    _p('publish_markers', BOOL, True, 'Publish ~/markers (MarkerArray).', read_only=False),
    _p('publish_semantic', BOOL, True, 'Publish ~/semantic/labels, color and overlay.', read_only=False),
    _p('overlay_alpha', FLOAT, 0.5, 'Weight of the class colours in ~/semantic/overlay.', range=UNIT_INTERVAL,
       read_only=False),
    _p('diagnostics_period_s', FLOAT, 1.0, 'Period of /diagnostics.', unit='s', range=Range(0.1, 3600.0)),
)
SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in SCHEMA}

# Per camera: parameter `<camera>.<field>` for each camera of `cameras` (nested under the camera's name
# in a params file). A default of None: not set unless given (the camera then relies on TF / CameraInfo).
CAMERA_SCHEMA: tuple[ParameterSpec, ...] = (
    _p('image_transport', STR, 'raw', '`raw`: sensor_msgs/Image on NAME/image_raw; `compressed`: '
       'sensor_msgs/CompressedImage (JPEG/PNG) on NAME/image_raw/compressed.', choices=('raw', 'compressed')),
    _p('time_offset_s', FLOAT, 0.0, 'Added to this camera\'s image stamps before pairing (a camera stamped '
       '25 ms late: -0.025).', unit='s', range=Range(-10.0, 10.0), read_only=False),
    _p('lidar_to_camera', FLOAT_LIST, None, '4x4 row-major rigid transform from the point cloud frame into '
       'the camera optical frame (x right, y down, z forward); used when TF has no transform between the '
       'frames of the messages.', lengths=(16,)),
    _p('camera_matrix', FLOAT_LIST, None, '3x3 row-major K of calibration_image_size (fx, fy > 0, last row '
       '0 0 1); used until the first valid NAME/camera_info (with calibration_image_size).', lengths=(9,)),
    _p('distortion', FLOAT_LIST, None, 'With camera_matrix: OpenCV coefficients, 5 (plumb_bob: k1 k2 p1 p2 '
       'k3) or 8 (rational_polynomial: ... k4 k5 k6); non-zero -> images are undistorted (default: none).',
       lengths=(5, 8)),
    _p('calibration_image_size', INT_LIST, None, '[width, height] that camera_matrix belongs to; images of '
       'another size with the same aspect ratio are scaled.', unit='px', lengths=(2,), range=Range(1)),
)
CAMERA_SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in CAMERA_SCHEMA}
CALIBRATION_FIELDS = ('lidar_to_camera', 'camera_matrix', 'distortion', 'calibration_image_size')


def camera_parameter(camera: str, field: str) -> str:
    """The name of a camera's parameter: camera_parameter('front', 'time_offset_s') = 'front.time_offset_s'."""
    return f'{camera}.{field}'


def camera_values(values: Mapping[str, Any], camera: str) -> dict:
    """A camera's fields (CAMERA_SCHEMA names) from validated parameters; None for the ones not set."""
    return {spec.name: values.get(camera_parameter(camera, spec.name), spec.default) for spec in CAMERA_SCHEMA}


# ----------------------------------------------------------------------------- validation
def defaults(cameras=None) -> dict:
    """Every parameter's default (fresh lists: the caller may change them), with the per-camera ones
    that have a default for `cameras` (default: the default camera list)."""
    values = {spec.name: list(spec.default) if isinstance(spec.default, list) else spec.default for spec in SCHEMA}
    for camera in values['cameras'] if cameras is None else cameras:
        values.update({camera_parameter(camera, spec.name): spec.default for spec in CAMERA_SCHEMA
                       if spec.default is not None})
    return values


def flatten_parameters(block: Mapping[str, Any], prefix: str = '') -> dict:
    """A params file's `ros__parameters` mapping -> parameter names as rcl gives them: nested
    mappings joined with '.' ({'front': {'time_offset_s': 0.1}} -> {'front.time_offset_s': 0.1})."""
    flat = {}
    for key, value in block.items():
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def is_ros_parameter(name: str) -> bool:
    """True for the parameters rclpy itself owns (use_sim_time, qos_overrides.*, ...)."""
    return name in ROS_PARAMETERS or name.partition('.')[0] in ROS_PARAMETER_PREFIXES


def spec_of(name: str) -> ParameterSpec:
    """The spec of a parameter; a camera's `<camera>.<field>` gets its field's spec under the full name
    (whether `<camera>` is one of `cameras` is checked by validate_all)."""
    if name in SPECS:
        return SPECS[name]
    camera, _, field = name.partition('.')
    if field in CAMERA_SPECS and re.fullmatch(SPECS['cameras'].pattern, camera):
        return dataclasses.replace(CAMERA_SPECS[field], name=name)
    if field:
        close = difflib.get_close_matches(field, CAMERA_SPECS, n=1)
        hint = f'did you mean {camera}.{close[0]}?' if close else f'camera fields: {", ".join(CAMERA_SPECS)}'
    else:
        close = difflib.get_close_matches(name, SPECS, n=1)
        hint = f'did you mean {close[0]}?' if close else f'known: {", ".join(SPECS)}'
    raise ParameterError(f'{name}: unknown parameter ({hint})', name)


def validate(name: str, value):
    """`value` as parameter `name` takes it (int -> float for floats, sequences -> lists), or a
    ParameterError saying what is allowed. Rules that involve several parameters: `validate_all`."""
    spec = spec_of(name)
    if spec.type in _ELEMENT:
        items = _as_list(value)
        if items is None:
            _refuse(spec, value, wrong_type=True)
        if spec.lengths is not None and len(items) not in spec.lengths:
            _refuse(spec, value, f' (it has {len(items)})')
        if not items:       # a ROS parameter cannot hold a typed empty list (rclpy declares it as bytes)
            _refuse(spec, value, ' (it is empty)')
        checked = []
        for index, item in enumerate(items):
            element = _scalar(spec, _ELEMENT[spec.type], item)
            if element is None:
                _refuse(spec, value, f' (element {index}: {_show(item)})')
            checked.append(element)
        return checked
    checked = _scalar(spec, spec.type, value)
    if checked is None:
        _refuse(spec, value, wrong_type=_scalar_type(spec.type, value) is None)
    return checked


def validate_all(values: Mapping[str, Any], required: bool = True) -> dict:
    """Start-up: every parameter, `values` over the defaults, each validated, then the rules between
    parameters (one gate per tracking class; a calibration CameraCalibration accepts) and, with
    `required`, the parameters without a usable default (model_path). rclpy's own parameters
    (`is_ros_parameter`) are left out of the result; any other unknown name is refused. All problems
    go into one ParameterError (its `problems`), so a params file is fixed in one go."""
    problems: list[tuple[str, str]] = []
    checked = {}
    for name, value in values.items():
        if is_ros_parameter(name):
            continue
        try:
            checked[name] = validate(name, value)
        except ParameterError as error:
            problems.append((name, str(error)))
    cameras = checked.get('cameras', SPECS['cameras'].default)
    merged = {**defaults(cameras), **checked}
    if len(set(cameras)) != len(cameras):
        problems.append(('cameras', f'cameras: {_show(cameras)} is not allowed: each name once'))
    for name in checked:
        camera, _, field = name.partition('.')
        if field and camera not in cameras:
            problems.append((name, f'{name}: there is no camera {camera!r} in cameras {_show(cameras)} (add it there, '
                                   f'or fix the name)'))
    if not problems:
        problems += _cross_problems(merged)
    if not problems and required:
        for spec in SCHEMA:
            if spec.required and merged[spec.name] in ('', []):
                problems.append((spec.name, f'{spec.name}: {_show(merged[spec.name])} is not allowed: it is '
                                            f'required, e.g. --ros-args -p {spec.name}:=/path/to/model.pt'))
    _raise(problems)
    return merged


def validate_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    """A run-time change (`ros2 param set`): the validated `changes`, or a ParameterError when one of
    them is read-only, unknown or not allowed, alone or with the `current` values of the others."""
    problems, checked = [], {}
    for name, value in changes.items():
        if is_ros_parameter(name):
            continue
        try:
            spec = spec_of(name)
            if spec.read_only:
                raise ParameterError(f'{name}: cannot change while the node runs (read-only): restart the node '
                                     f'with the new value', name)
            checked[name] = validate(name, value)
        except ParameterError as error:
            problems.append((name, str(error)))
    if not problems:
        merged = {**defaults(current.get('cameras')), **dict(current), **checked}
        problems += [problem for problem in _cross_problems(merged) if problem[0] in checked]
    _raise(problems)
    return checked


def runtime_parameters() -> tuple[str, ...]:
    """Names of the parameters that may change while the node runs."""
    return tuple(spec.name for spec in SCHEMA if not spec.read_only)


def _cross_problems(values: dict) -> list[tuple[str, str]]:
    """(parameter, message) for each rule between parameters that `values` (each valid) breaks."""
    problems = []
    classes, gates = values['tracking_gate_classes'], values['tracking_gates_m']
    if len(classes) != len(gates):
        problems.append(('tracking_gates_m', f'tracking_gates_m: {_show(gates)} is not allowed: one gate per '
                                             f'name of tracking_gate_classes {_show(classes)} '
                                             f'({len(classes)} numbers), got {len(gates)}'))
    from mtl_perception_ros.core.camera_calibration import CalibrationError, CameraCalibration
    for camera in values['cameras']:
        fields = camera_values(values, camera)
        intrinsics = [fields[name] is not None for name in ('camera_matrix', 'calibration_image_size')]
        if any(intrinsics) and not all(intrinsics):
            given, missing = ('camera_matrix', 'calibration_image_size') if intrinsics[0] else \
                ('calibration_image_size', 'camera_matrix')
            problems.append((camera_parameter(camera, missing), f'{camera_parameter(camera, given)} needs '
                             f'{camera_parameter(camera, missing)} too (K belongs to an image size)'))
            continue
        if fields['distortion'] is not None and not intrinsics[0]:
            problems.append((camera_parameter(camera, 'distortion'), f'{camera_parameter(camera, "distortion")} '
                             f'needs {camera_parameter(camera, "camera_matrix")} and '
                             f'{camera_parameter(camera, "calibration_image_size")}'))
            continue
        try:
            CameraCalibration.from_parameters(fields['lidar_to_camera'], fields['camera_matrix'], fields['distortion'],
                                              fields['calibration_image_size'])
        except CalibrationError as error:
            message = str(error)
            names = [name for name in CALIBRATION_FIELDS if message.startswith(name)]
            name = camera_parameter(camera, names[0] if names else 'lidar_to_camera')
            problems.append((name, f'{camera}.{message}' if names else f'{name}: {message}'))
    return problems


def _raise(problems: list[tuple[str, str]]):
    if problems:
        raise ParameterError('; '.join(message for _, message in problems), problems[0][0],
                             [message for _, message in problems])


def _refuse(spec: ParameterSpec, value, detail: str = '', wrong_type: bool = False):
    kind = f' ({_type_word(value)})' if wrong_type else ''
    raise ParameterError(f'{spec.name}: {_show(value)}{kind} is not allowed: {spec.allowed()}{detail}', spec.name)


def _scalar_type(type_: str, value):
    """`value` converted to the Python type of `type_`, or None when it is another kind of value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value) if type_ == BOOL else None
    if type_ == INT:
        return int(value) if isinstance(value, numbers.Integral) else None
    if type_ == FLOAT:
        return float(value) if isinstance(value, numbers.Real) else None
    if type_ == STR:
        return value if isinstance(value, str) else None
    return None


def _scalar(spec: ParameterSpec, type_: str, value):
    """The checked scalar (an element, for lists), or None when it is not allowed."""
    converted = _scalar_type(type_, value)
    if converted is None:
        return None
    if type_ == FLOAT and not math.isfinite(converted):
        return None
    if type_ in (INT, FLOAT) and spec.range is not None and not spec.range.contains(converted):
        return None
    if type_ == STR:
        if spec.non_empty and not converted:
            return None
        if spec.pattern is not None:
            return converted if re.fullmatch(spec.pattern, converted) else None
        if spec.choices is not None and converted not in spec.choices:
            return None
    return converted


def _as_list(value) -> list | None:
    if isinstance(value, (list, tuple, array.array)):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()
    return None


def _number(value) -> str:
    """A bound or number as written in YAML: 0.5, 1, 1e-06, .nan, .inf."""
    if isinstance(value, float):
        if math.isnan(value):
            return '.nan'
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        return f'{value:g}' if value == int(value) and abs(value) < 1e15 else repr(value)
    return str(value)


def _show(value) -> str:
    """A value the way a params YAML would spell it (long lists shortened)."""
    if isinstance(value, (bool, np.bool_)):
        return 'true' if value else 'false'
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return repr(value) if math.isfinite(value) else _number(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    items = _as_list(value)
    if items is not None:
        shown = [_show(item) for item in items[:8]]
        return '[' + ', '.join(shown) + (', ...' if len(items) > 8 else '') + ']'
    return repr(value)


def _type_word(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return 'a boolean'
    if isinstance(value, numbers.Integral):
        return 'an integer'
    if isinstance(value, numbers.Real):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if _as_list(value) is not None:
        return 'a list'
    if value is None:
        return 'no value'
    return f'a {type(value).__name__}'


# ----------------------------------------------------------------------------- ROS descriptors
@dataclass(frozen=True)
class RosDescriptor:
    """The pieces of an rcl_interfaces ParameterDescriptor (the node builds the message; core does not
    import rcl_interfaces). Ranges are (from, to), inclusive as ROS ranges are: an open end (e.g. > 0)
    is enforced by `validate` only. Ranges are given for scalars; list elements are checked by `validate`."""

    description: str
    additional_constraints: str
    read_only: bool
    floating_point_range: tuple[float, float] | None
    integer_range: tuple[int, int] | None


def ros_descriptor(name: str) -> RosDescriptor:
    spec = spec_of(name)
    floating = integer = None
    if spec.range is not None and spec.type == FLOAT:
        floating = (-math.inf if spec.range.low is None else float(spec.range.low),
                    math.inf if spec.range.high is None else float(spec.range.high))
    elif spec.range is not None and spec.type == INT:
        integer = (INT64_MIN if spec.range.low is None else int(spec.range.low),
                   INT64_MAX if spec.range.high is None else int(spec.range.high))
    when = 'read-only: restart to change' if spec.read_only else 'may change at run time'
    description = f'{spec.description} [{spec.allowed()}; {when}]'
    return RosDescriptor(description, spec.allowed(), spec.read_only, floating, integer)


# ----------------------------------------------------------------------------- documentation
TABLE_BEGIN = '<!-- parameter table: generated by `python -m mtl_perception_ros.core.parameters --markdown` -->'
TABLE_END = '<!-- end of the parameter table -->'


def _doc_value(value) -> str:
    if isinstance(value, bool):
        return '`true`' if value else '`false`'
    if isinstance(value, str):
        return f'`{value}`' if value else '`""`'
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 8 else f'{value:.6g}'
    if isinstance(value, list):
        shown = [_doc_value(v).strip('`') if not isinstance(v, str) else v for v in value]
        if len(shown) > 5:
            return f"`[{', '.join(shown[:4])}, ...]` ({len(shown)})"
        return f"`[{', '.join(shown)}]`"
    return str(value)


def markdown_table() -> str:
    """The parameter table of docs/node.md, with its begin/end markers."""
    rows = [TABLE_BEGIN, '',
            '| parameter | type | default | allowed | unit | run-time | meaning |',
            '|---|---|---|---|---|---|---|']
    named = [(spec.name, spec, '(required)' if spec.required else _doc_value(spec.default)) for spec in SCHEMA]
    named += [(f'NAME.{spec.name}', spec, '(not set)' if spec.default is None else _doc_value(spec.default))
              for spec in CAMERA_SCHEMA]
    for name, spec, default in named:
        cells = [f'`{name}`', f'`{spec.type}`', default, spec.allowed(with_unit=False), spec.unit,
                 'no' if spec.read_only else 'yes', spec.description]
        rows.append('| ' + ' | '.join(cell.replace('|', '\\|') for cell in cells) + ' |')
    rows += ['', TABLE_END]
    return '\n'.join(rows) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mtl_perception_ros.core.parameters',
                                     description="The node's parameter schema.")
    parser.add_argument('--markdown', action='store_true', help='print the parameter table of docs/node.md')
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_help()
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
