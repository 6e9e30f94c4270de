"""The training-state file behind --resume, and the RNG states it carries.

`save_training_state` writes model, loss, optimizer, schedule, AMP scaler, progress and every
rank's RNG states as tensors and plain types, atomically; `load_training_state` reads it back with
torch.load(weights_only=True) and checks its format. `capture_rng_state` / `restore_rng_state`
turn Python's, numpy's and torch's generator states into such types and back.
"""
from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from mtl_perception_ros.core.atomic_file import atomic_write, json_ready
from mtl_perception_ros.core.checkpoint import load_failure_reason

TRAINING_STATE_FORMAT = 'mtl_perception_ros.training_state'
TRAINING_STATE_VERSION = 1


def atomic_torch_save(obj, path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""
    return atomic_write(path, lambda stream: torch.save(obj, stream))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """The global RNG states as tensors, ints and lists (no pickled objects)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        'python': {'version': int(version), 'state': torch.tensor(python_state, dtype=torch.int64),
                   'gauss_next': gauss},
        'numpy': {'kind': str(kind), 'keys': torch.from_numpy(keys.astype(np.int64)),
                  'position': int(position), 'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
        'cuda': list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of capture_rng_state (CUDA states only when as many devices are visible)."""
    python = state['python']
    random.setstate((python['version'], tuple(int(v) for v in python['state'].tolist()),
                     python['gauss_next']))
    numpy_state = state['numpy']
    np.random.set_state((numpy_state['kind'], numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['position'], numpy_state['has_gauss'], numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_training_state(path, *, model, criterion, optimizer, scheduler, scaler, epoch: int,
                        global_step: int, best_score: float, best_epoch: int, config: dict,
                        rng_states: list, world_size: int, replica_digests: list | None = None) -> Path:
    """Everything --resume needs, as tensors and plain types (torch.load(weights_only=True) works).

    `epoch` = number of completed epochs; `rng_states` = one capture_rng_state() per rank;
    `replica_digests` = parameter_digest of each rank's model (all equal when DDP works).
    """
    state = {
        'format': TRAINING_STATE_FORMAT,
        'format_version': TRAINING_STATE_VERSION,
        'epoch': int(epoch),
        'global_step': int(global_step),
        'best_score': float(best_score),
        'best_epoch': int(best_epoch),
        'world_size': int(world_size),
        'config': json_ready(config),
        'model': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'criterion': {k: v.detach().cpu() for k, v in criterion.state_dict().items()},
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'scaler': scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        'rng': list(rng_states),
        'replica_digests': list(replica_digests or []),
    }
    return atomic_torch_save(state, path)


class TrainingStateError(ValueError):
    """A training-state file that cannot be resumed from; the message names the file."""


# what --resume reads from the file, and the type each must have
_STATE_FIELDS = {'epoch': int, 'global_step': int, 'best_score': float, 'best_epoch': int, 'model': dict,
                 'criterion': dict, 'optimizer': dict, 'scheduler': dict, 'rng': list}


def load_training_state(path) -> dict:
    """Read a training-state file (weights only, on the CPU), checking its format.

    Raises FileNotFoundError when it is missing and TrainingStateError (a ValueError) when it is
    truncated, damaged, holds pickled objects, is of another format or version, or lacks a field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no training state to resume from (it is written after each epoch '
                                'as RUN_DIR/training_state.pt)')
    if not zipfile.is_zipfile(path):
        raise TrainingStateError(f'{path}: not a loadable training state (truncated or damaged: not a '
                                 'torch.save zip archive)')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:   # zip, pickle and weights-only refusals all end here
        raise TrainingStateError(f'{path}: not a loadable training state: {load_failure_reason(error)}') from None
    if not isinstance(state, dict) or state.get('format') != TRAINING_STATE_FORMAT:
        raise TrainingStateError(f'{path}: not a training state file (format {TRAINING_STATE_FORMAT!r}); '
                                 'model_*.pt files are deployable checkpoints, resume from training_state.pt')
    if state.get('format_version') != TRAINING_STATE_VERSION:
        raise TrainingStateError(f'{path}: training state version {state.get("format_version")}, this code '
                                 f'reads {TRAINING_STATE_VERSION}')
    for key, kind in _STATE_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            raise TrainingStateError(f'{path}: field {key!r} must be a {kind.__name__}, got {value!r:.60}')
    if 'scaler' not in state:
        raise TrainingStateError(f"{path}: field 'scaler' is missing")
    return state
