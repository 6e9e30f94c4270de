"""The training config: every key with its default, YAML files and `a.b=value` overrides.

`load_config(path, overrides)` = DEFAULT_CONFIG, deep-merged with the YAML file, then with each
override (values parsed as YAML), then `check_config`. Unknown keys are errors that name the key
and list the known ones (except under FREE_SECTIONS, whose keys the dataclasses they build check).
The meaning of every key: training/configs/short.yaml.
"""
from __future__ import annotations

import copy
from pathlib import Path

SCHEDULES = ('warmup_cosine', 'one_cycle', 'constant')
BEST_METRICS = ('combined', 'map', 'miou', 'loss')
AMP_MODES = ('auto', 'bf16', 'fp16', 'off')
BACKENDS = ('auto', 'nccl', 'gloo')   # torch.distributed process-group backends the trainer knows

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
        'frame_cache_mb': 2048,        # per process and split: resized images decoded once (0 = off)
        'heatmap_min_radius': 2,       # smallest Gaussian radius of the heatmap targets (output cells)
        'reg_radius': 0,               # box regression also at cells up to this far from each centre cell
        'cameras': None,               # cameras a sample uses, by A2D2 name (null: every view of the frame)
        'views_per_sample': 0,         # training: a random subset of this many views per sample (0: all)
    },
    'model': {'preset': 'default'},    # 'default' (CPU-sized) or 'gpu_large', then field overrides
    'loss': {
        'heatmap_weight': 1.0,
        'reg_weight': 0.25,
        'lambda_sem': 1.0,
        'class_weights': True,         # ENet weights from the manifest's train pixel histogram
        'class_weight_c': 1.02,        # ENet's c in 1 / log(c + f): larger = flatter weights
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
        'backend': 'auto',             # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
        'sync_batchnorm': True,        # CUDA DDP only
        'find_unused_parameters': False,
    },
}
FREE_SECTIONS = ('model', 'data.augment_config')   # keys checked by the dataclasses they build


class ConfigError(ValueError):
    """A training config file or override that cannot be used; the message says where."""


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
    if config['distributed']['backend'] not in BACKENDS:
        raise ConfigError(f'distributed.backend {config["distributed"]["backend"]!r}: expected one of {BACKENDS}')
    for key in ('epochs', 'batch_size'):
        if not isinstance(train[key], int) or train[key] < 1:
            raise ConfigError(f'train.{key} must be an integer >= 1, got {train[key]!r}')
    c = config['loss']['class_weight_c']
    if not (isinstance(c, (int, float)) and not isinstance(c, bool) and c > 1):
        raise ConfigError(f'loss.class_weight_c must be a number > 1 (weights are 1 / log(c + f)), got {c!r}')
    for key in ('reg_radius', 'heatmap_min_radius'):
        value = config['data'][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f'data.{key} must be an integer >= 0, got {value!r}')
    if not (isinstance(config['optim']['lr'], (int, float)) and config['optim']['lr'] > 0):
        raise ConfigError(f'optim.lr must be a number > 0, got {config["optim"]["lr"]!r}')
