"""The frame pipeline's settings from the node's parameters (the names of core/parameters.SCHEMA).

One translation, used by the node at start-up and on `ros2 param set`, and by offline bag
evaluation (training.evaluation.evaluate_bag): the same YAML builds the same pipeline in both.
`params` is a dict of validated values (core.parameters.validate_all).

    config = pipeline_config(params)
    inference, note = open_inference(path, device=params['device'], **inference_backend(params), **decoding(params))
    tracker_config, unknown = tracking_config(params, inference.detection_labels.names)
    ...
    apply_changes(pipeline, params, changed)     # after validate_update: the run-time ones
"""
from __future__ import annotations

from typing import Iterable, Mapping

from mtl_perception_ros.core.camera_calibration import CameraCalibration
from mtl_perception_ros.core.frame_pipeline import FramePipeline, PipelineConfig
from mtl_perception_ros.core.parameters import camera_parameter, camera_values
from mtl_perception_ros.core.tracking import TrackerConfig

# parameters that are PipelineConfig fields of the same name
PIPELINE_PARAMETERS = ('slop_s', 'queue_size', 'points_min_interval_s', 'camera_timeout_s',
                       'time_jump_threshold_s', 'future_stamp_tolerance_s', 'max_points')
TRACKING_GATE_PARAMETERS = ('tracking_gate_classes', 'tracking_gates_m', 'tracking_default_gate_m')


def pipeline_config(params: Mapping) -> PipelineConfig:
    """Cameras, pairing, time policy and point limits (ValueError for a value PipelineConfig refuses)."""
    cameras = tuple(params['cameras'])
    return PipelineConfig(cameras=cameras, camera_time_offsets_s=time_offsets(params),
                          **{name: params[name] for name in PIPELINE_PARAMETERS})


def time_offsets(params: Mapping) -> tuple:
    """Each camera's `<camera>.time_offset_s`, in camera order."""
    return tuple(float(camera_values(params, camera)['time_offset_s']) for camera in params['cameras'])


def camera_calibrations(params: Mapping) -> dict:
    """camera -> CameraCalibration of its `<camera>.*` calibration parameters, None parts where not
    given (CalibrationError for a value CameraCalibration refuses; validate_all has checked them)."""
    calibrations = {}
    for camera in params['cameras']:
        fields = camera_values(params, camera)
        calibrations[camera] = CameraCalibration.from_parameters(
            fields['lidar_to_camera'], fields['camera_matrix'], fields['distortion'], fields['calibration_image_size'])
    return calibrations


def decoding(params: Mapping) -> dict:
    """score_threshold, max_detections and nms_radius_m (0 -> None: no NMS) as PerceptionInference
    and FramePipeline.configure_decoding take them."""
    return {'score_threshold': float(params['score_threshold']), 'max_detections': int(params['max_detections']),
            'nms_radius_m': float(params['nms_radius_m']) if params['nms_radius_m'] > 0 else None}


def inference_backend(params: Mapping) -> dict:
    """backend, precision and onnx_dir ('' -> None: next to the checkpoint) as PerceptionInference
    takes them: the node and offline replays run the model on the same backend."""
    return {'backend': str(params['backend']), 'precision': str(params['precision']),
            'onnx_dir': str(params['onnx_dir']) or None}


def tracking_gates(params: Mapping, class_names) -> tuple[dict, float, list[str]]:
    """(class id -> gate m for the model's `class_names`, default gate m, the names of
    tracking_gate_classes that are not classes of the model: they are ignored)."""
    names, gates = list(params['tracking_gate_classes']), list(params['tracking_gates_m'])
    if len(names) != len(gates):
        raise ValueError(f'tracking_gate_classes has {len(names)} names but tracking_gates_m has {len(gates)} '
                         f'gates: expected one gate per class name')
    class_names = list(class_names)
    by_id = {class_names.index(name): float(gate) for name, gate in zip(names, gates) if name in class_names}
    unknown = [name for name in names if name not in class_names]
    return by_id, float(params['tracking_default_gate_m']), unknown


def tracking_config(params: Mapping, class_names) -> tuple[TrackerConfig, list[str]]:
    """The tracker of the tracking_* parameters, and the gate class names the model does not have."""
    gates_m, default_gate_m, unknown = tracking_gates(params, class_names)
    config = TrackerConfig(gates_m=gates_m, default_gate_m=default_gate_m, birth_hits=params['tracking_birth_hits'],
                           death_misses=params['tracking_death_misses'], association=params['tracking_association'],
                           max_gap_s=params['tracking_max_gap_s'], confirm_score=params['tracking_confirm_score'])
    return config, unknown


def apply_changes(pipeline: FramePipeline, params: Mapping, changed: Iterable[str]) -> list[str]:
    """Apply the run-time parameters among `changed` (their new values in `params`) to a running
    pipeline: pairing settings, decoding, tracking gates. Returns the gate class names the model does
    not have when the gates changed (else []). Parameters that are not the pipeline's (publish_*,
    overlay_alpha, tf_timeout_s) are left to the caller."""
    changed = set(changed)
    config_changes = {name: params[name] for name in PIPELINE_PARAMETERS if name in changed}
    if changed & {camera_parameter(camera, 'time_offset_s') for camera in params['cameras']}:
        config_changes['camera_time_offsets_s'] = time_offsets(params)
    if config_changes:
        pipeline.update(**config_changes)
    decoding_changes = {name: value for name, value in decoding(params).items() if name in changed}
    if decoding_changes:
        pipeline.configure_decoding(**decoding_changes)
    unknown = []
    if changed & set(TRACKING_GATE_PARAMETERS):
        gates_m, default_gate_m, unknown = tracking_gates(params, pipeline.inference.detection_labels.names)
        pipeline.configure_tracking(gates_m=gates_m, default_gate_m=default_gate_m)
    return unknown
