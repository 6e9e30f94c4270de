"""What a checkpoint says besides its weights (CheckpointInfo), read and checked without torch.

The checkpoint file itself is a torch.save archive (core.checkpoint); its metadata, the same dict
minus the weights, is also written as JSON next to an ONNX export (training.export.to_onnx), so
a process that runs only ONNX Runtime (core.onnx_inference) knows the model without torch.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.model_config import ModelConfig

FORMAT_NAME = 'mtl_perception_ros.core.checkpoint'
FORMAT_VERSION = 1
METADATA_KEYS = ('format', 'format_version', 'model_config', 'bev_grid', 'semantic_labels', 'detection_labels',
                 'extra')


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint file is missing, unreadable, from another format or version, or inconsistent."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says besides its weights."""

    path: Path
    format_version: int
    model_config: ModelConfig
    semantic_labels: LabelSet
    detection_labels: LabelSet
    extra: dict = field(default_factory=dict)

    @property
    def bev_grid(self) -> BevGrid:
        return self.model_config.bev_grid

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) the image must be resized to (and camera_matrix scaled to) before the model."""
        return self.model_config.image_hw

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return self.model_config.image_mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        return self.model_config.image_std


def checkpoint_info(path, payload) -> CheckpointInfo:
    """CheckpointInfo of a checkpoint's dict (torch.load's, or its metadata JSON: METADATA_KEYS);
    CheckpointError naming `path` for another format, a future version or inconsistent contents."""
    path = Path(path)
    if not isinstance(payload, dict) or payload.get('format') != FORMAT_NAME:
        raise CheckpointError(f'{path}: not an mtl_perception_ros checkpoint (no format={FORMAT_NAME!r}); '
                              'write checkpoints with mtl_perception_ros.core.checkpoint.save_checkpoint')
    version = payload.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f'{path}: format_version must be a positive integer, got {version!r}')
    if version > FORMAT_VERSION:
        raise CheckpointError(f'{path}: format_version {version} is newer than this code reads '
                              f'({FORMAT_VERSION}); update mtl_perception_ros')
    for key, cls in (('model_config', ModelConfig), ('bev_grid', BevGrid)):
        if key in payload:
            _check_field_types(path, cls, payload[key], key)
    try:
        model_config = ModelConfig.from_dict({**payload['model_config'], 'bev_grid': payload['bev_grid']})
        info = CheckpointInfo(path=path, format_version=version, model_config=model_config,
                              semantic_labels=LabelSet.from_dict(payload['semantic_labels']),
                              detection_labels=LabelSet.from_dict(payload['detection_labels']),
                              extra=dict(payload.get('extra') or {}))
    except (KeyError, TypeError, ValueError) as error:
        missing = f'missing field {error}' if isinstance(error, KeyError) else str(error)
        raise CheckpointError(f'{path}: bad checkpoint contents: {missing}') from None
    if len(info.semantic_labels) != model_config.num_sem_classes:
        raise CheckpointError(f'{path}: semantic_labels has {len(info.semantic_labels)} classes but '
                              f'model_config.num_sem_classes is {model_config.num_sem_classes}')
    if len(info.detection_labels) != model_config.num_det_classes:
        raise CheckpointError(f'{path}: detection_labels has {len(info.detection_labels)} classes but '
                              f'model_config.num_det_classes is {model_config.num_det_classes}')
    return info


def _type_problem(value, hint) -> str:
    """'' when `value` (as torch.load returns it) fits the type hint `hint`, else what was expected."""
    if hint is bool:
        return '' if isinstance(value, bool) else 'true or false'
    if hint is int:
        return '' if isinstance(value, int) and not isinstance(value, bool) else 'an integer'
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return '' if ok else 'a finite number'
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        kinds = {int: 'integers', float: 'numbers'}
        if Ellipsis in items or any(item not in kinds for item in items):
            return ''
        expected = f'a list of {len(items)} {kinds[items[0]]}'
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            return expected
        return expected if any(_type_problem(v, item) for v, item in zip(value, items)) else ''
    return ''


def _check_field_types(path: Path, cls, values, where: str) -> None:
    """CheckpointError when a stored config dict has a field of the wrong type for dataclass `cls`."""
    if not isinstance(values, dict):
        raise CheckpointError(f'{path}: {where} must be a dict, got {type(values).__name__}')
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        problem = _type_problem(value, hints[name]) if name in hints else ''
        if problem:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + '...'
            raise CheckpointError(f'{path}: {where}.{name} must be {problem}, got {shown}')
