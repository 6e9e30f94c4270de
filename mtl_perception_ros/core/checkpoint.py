"""Checkpoint files: the network's weights plus everything needed to rebuild and feed it.

One `torch.save`d dict of tensors and plain Python types only (loaded with
`torch.load(weights_only=True)`, so loading never runs code from the file):

- format: 'mtl_perception_ros.core.checkpoint'; format_version: int (FORMAT_VERSION).
- model_config: ModelConfig.to_dict() without the grid — includes num_det_classes,
  num_sem_classes, image_hw (model input size), image_mean / image_std (RGB, 0..255 units).
- bev_grid: BevGrid.to_dict().
- semantic_labels, detection_labels: LabelSet.to_dict() (names and colours).
- state_dict: the weights (CPU tensors).
- extra: optional training metadata (epoch, step, metrics, ...) of plain types / tensors.

A node rebuilds the exact network from the file alone with `load_checkpoint`.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from mtl_perception_ros.core.atomic_file import atomic_write
from mtl_perception_ros.core.checkpoint_info import (  # noqa: F401 - part of this module's interface
    FORMAT_NAME, FORMAT_VERSION, CheckpointError, CheckpointInfo, checkpoint_info)
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.model import MultiTaskNet


def _plain(value, where: str):
    """`value` as tensors / plain Python types that weights_only loading accepts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f'save_checkpoint: {where} has a non-string key {key!r}')
            plain[key] = _plain(item, f'{where}.{key}')
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain(item, f'{where}[{i}]') for i, item in enumerate(value)]
    raise ValueError(f'save_checkpoint: {where} is a {type(value).__name__}; checkpoints hold only '
                     'tensors, numbers, strings, None, lists and dicts')


def checkpoint_payload(model: MultiTaskNet, semantic_labels: LabelSet, detection_labels: LabelSet,
                       extra: dict | None = None) -> dict:
    """The dict that `save_checkpoint` writes (checks label sets against the model config)."""
    cfg = model.cfg
    if len(semantic_labels) != cfg.num_sem_classes:
        raise ValueError(f'save_checkpoint: semantic label set {semantic_labels.name!r} has '
                         f'{len(semantic_labels)} classes, the model {cfg.num_sem_classes}')
    if len(detection_labels) != cfg.num_det_classes:
        raise ValueError(f'save_checkpoint: detection label set {detection_labels.name!r} has '
                         f'{len(detection_labels)} classes, the model {cfg.num_det_classes}')
    model_config = _plain(cfg.to_dict(), 'model_config')
    bev_grid = model_config.pop('bev_grid')
    return {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'model_config': model_config,
        'bev_grid': bev_grid,
        'semantic_labels': _plain(semantic_labels.to_dict(), 'semantic_labels'),
        'detection_labels': _plain(detection_labels.to_dict(), 'detection_labels'),
        'state_dict': {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        'extra': _plain(dict(extra or {}), 'extra'),
    }


def save_checkpoint(path, model: MultiTaskNet, semantic_labels: LabelSet, detection_labels: LabelSet,
                    extra: dict | None = None) -> Path:
    """Write the model and its metadata to `path` atomically (temp file + os.replace)."""
    path = Path(path)
    payload = checkpoint_payload(model, semantic_labels, detection_labels, extra)
    atomic_write(path, lambda stream: torch.save(payload, stream))
    return path


def read_checkpoint(path, map_location='cpu') -> tuple[dict, CheckpointInfo]:
    """Load and check a checkpoint without building the model: (state_dict, CheckpointInfo)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f'{path}: not a loadable checkpoint: not a torch.save zip archive (truncated, '
                              'damaged or another kind of file)')
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and weights-only refusals all end here
        raise CheckpointError(f'{path}: not a loadable checkpoint: {load_failure_reason(error)}; '
                              'checkpoints hold only tensors and plain types') from None
    info = checkpoint_info(path, payload)
    if 'state_dict' not in payload:
        raise CheckpointError(f"{path}: bad checkpoint contents: missing field 'state_dict'")
    state_dict = payload['state_dict']
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f'{path}: state_dict must map parameter names to tensors')
    return state_dict, info


def load_failure_reason(error: Exception) -> str:
    """One line, in our words, on why torch.load(weights_only=True) failed.

    torch's own refusal (a pickle.UnpicklingError) advises retrying with weights_only=False, which
    would run code from the file: that advice is never passed on. Only the name of the refused
    global is kept from it (torch has written it as `GLOBAL module.name` since 2.4).
    """
    if isinstance(error, pickle.UnpicklingError):
        found = re.search(r'GLOBAL ([A-Za-z_][\w.]*)', str(error))
        what = f'a pickled Python object ({found.group(1)})' if found else 'pickled Python objects'
        return f'it holds {what}, which is never unpickled'
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and 'weights_only' not in line]
    return f'{type(error).__name__}: {lines[0] if lines else "no message"}'


def _state_dict_mismatch(model: torch.nn.Module, state_dict: dict) -> str:
    """'' when `state_dict` fits `model` exactly, else a short description of the differences."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f'{key}: file {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}'
              for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    problems = []
    for label, items in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', shapes)):
        if items:
            more = ' ...' if len(items) > 5 else ''
            problems.append(f'{label} ({len(items)}): {", ".join(items[:5])}{more}')
    return '; '.join(problems)


def load_checkpoint(path, map_location='cpu') -> tuple[MultiTaskNet, CheckpointInfo]:
    """Rebuild the network from a checkpoint file: (model in eval mode, CheckpointInfo).

    Raises CheckpointError (a ValueError and RuntimeError) naming the file when it is missing,
    not a checkpoint (or holds pickled objects), of an unknown/future format_version, or when
    its weights do not match its own model_config.
    """
    state_dict, info = read_checkpoint(path, map_location)
    model = MultiTaskNet(info.model_config)
    mismatch = _state_dict_mismatch(model, state_dict)
    if mismatch:
        raise CheckpointError(f'{info.path}: weights do not match the stored model_config: {mismatch}')
    model.load_state_dict(state_dict)
    if isinstance(map_location, (str, torch.device)):
        model.to(torch.device(map_location))
    return model.eval(), info
