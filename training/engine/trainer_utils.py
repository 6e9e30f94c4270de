"""What the trainer and the evaluation CLI share: config, data, schedule, state files, RNG, DDP.

- Config: `DEFAULT_CONFIG` (every key the trainer reads, documented in training/configs/*.yaml),
  `load_config(path, overrides)` with `a.b=value` overrides (values parsed as YAML).
- Data: `read_chunk_folder` (files per split, label sets and the train pixel histogram from
  the manifest of training.data.convert), `make_dataset`, `make_train_loader`, `make_eval_loader`.
- Learning rate: `lr_factor` / `build_scheduler` (warm-up + cosine, one-cycle, constant) as a
  LambdaLR over optimizer steps, so its state_dict holds only numbers.
- Files: `atomic_torch_save`, `write_json_atomic`, the training-state file for --resume
  (`save_training_state` / `load_training_state`, loadable with torch.load(weights_only=True)),
  RNG states as tensors and lists (`capture_rng_state` / `restore_rng_state`).
- Distributed: `DistContext` from torchrun's environment (`init_distributed`), `gather_to_main`.
"""
from __future__ import annotations

import copy
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from mtl_perception_ros.core.atomic_file import atomic_write, atomic_write_text
from mtl_perception_ros.core.labels import LabelSet
from training.data.convert import MANIFEST_NAME, load_manifest
from training.data.dataset import ChunkDataset, DatasetConfig, collate_samples, init_worker
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES

TRAINING_STATE_FORMAT = 'mtl_perception_ros.training_state'
TRAINING_STATE_VERSION = 1
SCHEDULES = ('warmup_cosine', 'one_cycle', 'constant')
BEST_METRICS = ('combined', 'map', 'miou', 'loss')
AMP_MODES = ('auto', 'bf16', 'fp16', 'off')

# Every key the trainer reads. `model` holds mtl_perception_ros.core.model.ModelConfig fields (checked
# by ModelConfig) plus `preset`; `data.augment_config` holds training.data.augment.AugmentConfig fields.
DEFAULT_CONFIG: dict = {
    'data': {
        'chunks': 'output/chunks',     # folder of train_*.npz / val_*.npz + manifest.json
        'train_split': 'train',
        'val_split': 'val',
        'augment': True,
        'augment_config': {},
        'max_objects': 128,            # object slots per frame in the regression targets
        'num_workers': 2,
        'chunk_cache_size': 4,
    },
    'model': {'preset': 'default'},    # 'default' (CPU-sized) or 'gpu_large', then field overrides
    'loss': {
        'heatmap_weight': 1.0,
        'reg_weight': 0.25,
        'lambda_sem': 1.0,
        'class_weights': True,         # ENet weights from the manifest's train pixel histogram
        'uncertainty_weighting': False,
        'reg_code_weights': None,
    },
    'optim': {
        'lr': 2.0e-3,
        'weight_decay': 1.0e-2,        # not applied to biases, norms and the uncertainty weights
        'betas': [0.9, 0.999],
        'grad_clip_norm': 10.0,        # null = no clipping
    },
    'schedule': {
        'name': 'warmup_cosine',       # warmup_cosine | one_cycle | constant
        'warmup_fraction': 0.05,       # of all optimizer steps (warmup_steps wins when set)
        'warmup_steps': None,
        'min_lr_ratio': 0.01,          # warmup_cosine: final lr = lr * min_lr_ratio
        'pct_start': 0.3,              # one_cycle: fraction of steps rising to lr
        'div_factor': 25.0,            # one_cycle: start lr = lr / div_factor
        'final_div_factor': 1.0e4,     # one_cycle: final lr = start lr / final_div_factor
    },
    'train': {
        'epochs': 10,
        'batch_size': 2,               # per process
        'seed': 0,
        'amp': 'auto',                 # auto (bf16 if supported, else fp16; CUDA only) | bf16 | fp16 | off
        'deterministic': False,
        'threads': None,               # torch CPU threads (null = torch's default)
        'max_steps_per_epoch': None,   # cut epochs short (CI, quick looks)
        'log_every_steps': 10,
        'picture_every_steps': 50,     # 0 = no training pictures
        'pictures_to_tensorboard': True,
        'eval_every_epochs': 1,
        'progress': True,              # tqdm bars
    },
    'eval': {
        'batch_size': None,            # null = train.batch_size
        'score_threshold': 0.05,       # detections kept for AP (low: the AP curve needs them)
        'max_detections': 100,
        'nms_radius_m': None,
        'best_metric': 'combined',     # combined (mean of mAP and mIoU) | map | miou | loss
    },
    'distributed': {
        'backend': 'auto',             # auto = nccl on CUDA, gloo on CPU
        'sync_batchnorm': True,        # CUDA DDP only
        'find_unused_parameters': False,
    },
}
FREE_SECTIONS = ('model', 'data.augment_config')   # keys checked by the dataclasses they build


class ConfigError(ValueError):
    """A training config file or override that cannot be used; the message says where."""


# ----------------------------------------------------------------------------- config

def _merge(base: dict, update: dict, where: str, path: str = '') -> dict:
    """Deep-merge `update` into a copy of `base`; unknown keys are errors except in FREE_SECTIONS."""
    merged = copy.deepcopy(base)
    section = path.rstrip('.')
    free = any(section == s or section.startswith(s + '.') for s in FREE_SECTIONS)
    for key, value in update.items():
        dotted = f'{path}{key}'
        if not isinstance(key, str):
            raise ConfigError(f'{where}: key {key!r} under {section or "the top level"} must be a string')
        if key not in merged and not free:
            known = ', '.join(sorted(merged))
            raise ConfigError(f'{where}: unknown key {dotted!r}; known keys here: {known}')
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, where, f'{dotted}.')
        elif isinstance(merged.get(key), dict) and key in DEFAULT_CONFIG and not path:
            raise ConfigError(f'{where}: {dotted} must be a mapping, got {value!r}')
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is parsed as YAML)."""
    import yaml
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f'override {text!r}: expected key.path=value, e.g. optim.lr=1e-3')
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f'override {text!r}: value is not valid YAML ({error})') from None
    nested: dict = _numbers(parsed)
    for part in reversed(key.strip().split('.')):
        nested = {part: nested}
    return nested


def _numbers(value):
    """YAML 1.1 reads '1e-3' as a string: turn such strings back into floats, recursively."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in 'eE') and value.strip()[0] in '+-.0123456789' \
                else value
        except ValueError:
            return value
    return value


def load_config(path=None, overrides=()) -> dict:
    """DEFAULT_CONFIG updated by the YAML file at `path` (optional) and then the overrides."""
    import yaml
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        try:
            with open(path, encoding='utf-8') as stream:
                loaded = yaml.safe_load(stream) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f'{path}: cannot read the training config ({error})') from None
        if not isinstance(loaded, dict):
            raise ConfigError(f'{path}: expected a mapping of sections (data, model, loss, ...)')
        config = _merge(config, _numbers(loaded), str(path))
    for text in overrides:
        config = _merge(config, parse_override(text), f'override {text!r}')
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """Value checks that are cheap to do before anything is built."""
    train, schedule, evaluation = config['train'], config['schedule'], config['eval']
    if schedule['name'] not in SCHEDULES:
        raise ConfigError(f'schedule.name {schedule["name"]!r}: expected one of {SCHEDULES}')
    if evaluation['best_metric'] not in BEST_METRICS:
        raise ConfigError(f'eval.best_metric {evaluation["best_metric"]!r}: expected one of {BEST_METRICS}')
    if train['amp'] not in AMP_MODES:
        raise ConfigError(f'train.amp {train["amp"]!r}: expected one of {AMP_MODES}')
    for key in ('epochs', 'batch_size'):
        if not isinstance(train[key], int) or train[key] < 1:
            raise ConfigError(f'train.{key} must be an integer >= 1, got {train[key]!r}')
    if not (isinstance(config['optim']['lr'], (int, float)) and config['optim']['lr'] > 0):
        raise ConfigError(f'optim.lr must be a number > 0, got {config["optim"]["lr"]!r}')


# ----------------------------------------------------------------------------- data

@dataclass
class ChunkFolder:
    """What the trainer needs from a chunk folder (training.data.convert's layout and manifest)."""

    path: Path
    files: dict                      # split -> [chunk paths]
    semantic_labels: LabelSet
    detection_labels: LabelSet
    train_pixel_counts: np.ndarray | None   # (K,) labelled pixels per class in the train split
    complete: bool


def read_split(chunk_dir, split: str) -> 'ChunkFolder':
    """`read_chunk_folder` for one split; ValueError when that split has no chunks."""
    folder = read_chunk_folder(chunk_dir, splits=(split,))
    if not folder.files[split]:
        raise ValueError(f'{chunk_dir}: no chunks of split {split!r}')
    return folder


def read_chunk_folder(chunk_dir, splits=('train', 'val')) -> ChunkFolder:
    """Chunk files per split and label sets, from CHUNK_DIR/manifest.json when there is one.

    Without a manifest, files are found as CHUNK_DIR/<split>_*.npz and the label sets are the
    defaults in config/a2d2/.
    """
    path = Path(chunk_dir)
    if not path.is_dir():
        raise FileNotFoundError(f'{path}: no such chunk folder (write one with `python -m training.data.convert '
                                '--root A2D2_ROOT --out CHUNK_DIR`, or set data.chunks)')
    manifest = load_manifest(path)
    files: dict = {}
    if manifest is not None:
        try:
            for split in splits:
                files[split] = [path / e['file'] for e in manifest['chunks'] if e['split'] == split]
            semantic = LabelSet.from_dict(manifest['semantic_classes'])
            detection = LabelSet.from_dict(manifest['box_classes'])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f'{path / MANIFEST_NAME}: unusable manifest ({type(error).__name__}: {error})') from None
        counts = manifest.get('splits', {}).get('train', {}).get('class_pixel_counts')
        pixel_counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        complete = bool(manifest.get('complete', False))
    else:
        for split in splits:
            files[split] = sorted(path.glob(f'{split}_*.npz'))
        semantic = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
        detection = LabelSet.from_yaml(DEFAULT_BOX_CLASSES)
        pixel_counts, complete = None, True
    for split, paths in files.items():
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f'{path}: chunk files of split {split!r} listed in the manifest are '
                                    f'missing: {missing[:3]}')
    return ChunkFolder(path, files, semantic, detection, pixel_counts, complete)


def make_dataset(paths, model_config, detection_labels: LabelSet, max_objects: int = 128,
                 augment: bool = False, augment_config: dict | None = None,
                 chunk_cache_size: int = 4) -> ChunkDataset:
    """A ChunkDataset whose samples fit the model: its BEV grid, input size and class count."""
    from training.data.augment import AugmentConfig
    if not paths:
        raise FileNotFoundError('make_dataset: no chunk files for this split')
    values = dict(augment_config or {})
    if 'scale_range' in values:
        values['scale_range'] = tuple(values['scale_range'])
    try:
        augment_values = AugmentConfig(**values)
    except TypeError as error:
        raise ConfigError(f'data.augment_config: {error} (fields: see training/data/augment.py AugmentConfig)') from None
    config = DatasetConfig(grid=model_config.bev_grid, input_hw=tuple(model_config.image_hw),
                           num_box_classes=len(detection_labels), max_objects=int(max_objects),
                           augment=bool(augment), augment_config=augment_values,
                           chunk_cache_size=int(chunk_cache_size))
    return ChunkDataset([Path(p) for p in paths], config)


class ShardSampler(Sampler):
    """Indices rank, rank + world, rank + 2 world, ...: every frame exactly once over all ranks
    (no padding, unlike DistributedSampler), for evaluation."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_train_loader(dataset, batch_size: int, num_workers: int, seed: int, rank: int = 0,
                      world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """Shuffled loader whose order depends only on (seed, epoch): call sampler.set_epoch(epoch).

    Workers are not persistent, so each epoch's workers are seeded from the main process's torch
    RNG: a resumed run (RNG restored) repeats the augmentations of an uninterrupted one.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    prepare_for_loader_workers(num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_samples, worker_init_fn=init_worker, pin_memory=pin_memory)


def make_eval_loader(dataset, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1,
                     pin_memory: bool = False) -> DataLoader:
    """In-order loader over this rank's shard of the frames (all of them when world_size = 1)."""
    prepare_for_loader_workers(num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                      num_workers=num_workers, collate_fn=collate_samples, worker_init_fn=init_worker,
                      pin_memory=pin_memory)


def prepare_for_loader_workers(num_workers: int) -> None:
    """Switch OpenCV's thread pool off in this process when DataLoader workers will be forked.

    A worker forked after the parent used OpenCV's pool (debug pictures, a sample read in the
    parent) deadlocks on its first cv2 call: the pool's threads do not exist in the child.
    """
    if num_workers > 0:
        import cv2
        cv2.setNumThreads(0)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a collated batch moved to `device` (lists such as gt_boxes stay on the CPU)."""
    non_blocking = device.type == 'cuda'
    return {key: value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


# ----------------------------------------------------------------------------- learning rate

def lr_factor(step: int, total_steps: int, schedule: dict) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based) of `total_steps`.

    warmup_cosine: linear 1/W .. 1 over W warm-up steps, then cosine from 1 to min_lr_ratio.
    one_cycle: cosine from 1/div_factor up to 1 over pct_start of the steps, then cosine down
    to 1/(div_factor * final_div_factor) (torch's OneCycleLR without momentum cycling).
    constant: 1.
    """
    name = schedule['name']
    total = max(int(total_steps), 1)
    step = min(max(int(step), 0), total)
    if name == 'constant':
        return 1.0
    if name == 'warmup_cosine':
        warmup = schedule.get('warmup_steps')
        warmup = int(round(schedule['warmup_fraction'] * total)) if warmup is None else int(warmup)
        warmup = min(warmup, total - 1) if total > 1 else 0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        floor = float(schedule['min_lr_ratio'])
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == 'one_cycle':
        start = 1.0 / float(schedule['div_factor'])
        end = start / float(schedule['final_div_factor'])
        rise = max(int(round(float(schedule['pct_start']) * total)), 1)
        if step < rise:
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * step / rise))
        progress = (step - rise) / max(total - rise, 1)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f'schedule.name {name!r}: expected one of {SCHEDULES}')


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, schedule: dict):
    """LambdaLR stepped once per optimizer step; its state_dict holds only numbers."""
    def factor(step: int) -> float:
        return lr_factor(step, total_steps, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- files

def atomic_torch_save(obj, path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""
    return atomic_write(path, lambda stream: torch.save(obj, stream))


def write_json_atomic(path, values) -> Path:
    """JSON (NaN written as null), written atomically."""
    import json
    return atomic_write_text(path, json.dumps(json_ready(values), indent=1, allow_nan=False))


def json_ready(value):
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays and tensors -> numbers/lists."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- RNG

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


# ----------------------------------------------------------------------------- training state

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


def load_training_state(path) -> dict:
    """Read a training-state file (weights only, on the CPU), checking its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no training state to resume from (it is written after each epoch '
                                'as RUN_DIR/training_state.pt)')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise ValueError(f'{path}: not a loadable training state ({type(error).__name__}: '
                         f'{str(error).splitlines()[0] if str(error) else ""})') from None
    if not isinstance(state, dict) or state.get('format') != TRAINING_STATE_FORMAT:
        raise ValueError(f'{path}: not a training state file (format {TRAINING_STATE_FORMAT!r}); '
                         'model_*.pt files are deployable checkpoints, resume from training_state.pt')
    if state.get('format_version') != TRAINING_STATE_VERSION:
        raise ValueError(f'{path}: training state version {state.get("format_version")}, this code reads '
                         f'{TRAINING_STATE_VERSION}')
    return state


# ----------------------------------------------------------------------------- distributed

@dataclass
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = 'auto', backend: str = 'auto') -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), pick the device.

    device 'auto': cuda:LOCAL_RANK when CUDA is available, else CPU. backend 'auto': NCCL on
    CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if backend == 'auto':
            backend = 'nccl' if device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend=backend, init_method='env://')
    return DistContext(rank, world_size, local_rank, device)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def gather_to_main(obj, ctx: DistContext) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere (plain list without DDP)."""
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered if ctx.is_main else None


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of all parameters' bytes (in name order): equal digests = bitwise equal replicas."""
    import hashlib
    digest = hashlib.sha256()
    for name, parameter in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

