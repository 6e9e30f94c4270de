"""Train the multi-task network on NPZ chunks (training.data.convert output).

    python -m training.engine.train --config training/configs/short.yaml [key=value ...] [--set key=value]
        [--out RUN_DIR] [--resume] [--device auto|cpu|cuda]
    torchrun --nproc_per_node=N -m training.engine.train --config ... --out RUN_DIR     # DDP

Overrides use the config's dotted keys, values in YAML: `optim.lr=1e-3`, `train.epochs=3`,
`data.chunks=/data/a2d2_chunks`, `model.bev_grid.cell_m=0.5`. Every key is listed with its
meaning in training/configs/short.yaml (defaults: training/engine/config.py DEFAULT_CONFIG).

The shape of torchvision's references/detection: `run` sets up the process, builds the data
(`build_data`) and the network, loss, optimizer and schedule (`build_learner`), `resume`s, then
per epoch `train_epoch` (`train_one_epoch`), `validate` (training/evaluation/evaluate.py, shared
with the evaluation CLI) and `save_epoch`. What a run writes to RUN_DIR (rank 0 only):
- config.yaml: the resolved config (what --resume reads when no --config is given).
- model_last.pt / model_best.pt: deployable checkpoints (mtl_perception_ros.core.checkpoint: the
  node loads them alone), after every epoch / when the validation score improves.
  The score is eval.best_metric: `combined` = mean of BEV mAP and mIoU (default), or `map`,
  `miou`, `loss` (-total val loss). An epoch without evaluation never becomes the best.
- training_state.pt: model, loss (uncertainty weights), optimizer, LR schedule, AMP scaler,
  epoch, global step, best score, and every rank's RNG states (torch.load(weights_only=True)
  reads it). `--resume` continues from it: an interrupted run repeats the epoch it was in and
  then goes on exactly as an uninterrupted one (same data order, augmentations and weights,
  bit for bit on CPU with num_workers = 0; CUDA kernels may differ in the last bits).
- metrics_history.json: one entry per epoch (train loss means, lr, validation metrics, score).
- pictures/: train_step_XXXXXXX.png every train.picture_every_steps optimizer steps (a training
  sample: GT | predicted | difference heatmaps, GT | predicted semantics | overlay) and
  val_epoch_XXX.png (the first validation frame) after every evaluation.
- tensorboard/: scalars train/<loss term> (raw and weighted), train/lr, train/grad_norm,
  train_epoch/<term>, val/<metric> (map, ap/<class>, ap/<class>@<t>m, miou, iou/<class>,
  pixel_accuracy, loss/<term>), and the pictures.
- train.log: the console log.

Multi-GPU: DistributedDataParallel over the model and the loss (whose uncertainty weights are
parameters too), the process group's backend from distributed.backend (auto = NCCL on CUDA,
gloo on CPU; train.log names the one used), DistributedSampler reseeded every epoch, BatchNorm
converted to SyncBatchNorm on CUDA (distributed.sync_batchnorm). train.batch_size is per
process. Validation is split across the ranks and merged on rank 0 (training/evaluation/evaluate.py).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mtl_perception_ros.core.atomic_file import atomic_write_json, atomic_write_text, json_ready
from mtl_perception_ros.core.checkpoint import save_checkpoint
from mtl_perception_ros.core.model import ModelConfig, MultiTaskNet, parameter_summary
from training.data.chunks import ChunkError, ChunkReader
from training.provenance import provenance
from training.data.dataset import ChunkDataset, collate_samples, model_arguments
from training.engine.config import ConfigError, load_config
from training.engine.data_loading import (ChunkFolder, make_dataset, make_eval_loader, make_train_loader,
                                          prepare_for_loader_workers, read_chunk_folder, to_device)
from training.engine.distributed import (DistContext, barrier, broadcast_from_main, cleanup_distributed,
                                         gather_to_main, init_distributed, parameter_digest)
from training.engine.losses import MultiTaskLoss, semantic_class_weights
from training.engine.lr_schedule import build_scheduler
from training.engine.training_state import (TrainingStateError, capture_rng_state, load_training_state,
                                            restore_rng_state, save_training_state, seed_everything)
from training.evaluation.evaluate import EvaluationResult, autocast_context, evaluate
from training.pictures.debug_pictures import debug_picture
from training.pictures.draw import write_png

LOG = logging.getLogger('training.engine.train')
STATE_NAME = 'training_state.pt'
HISTORY_NAME = 'metrics_history.json'
CONFIG_NAME = 'config.yaml'


# ----------------------------------------------------------------------------- building blocks

def build_model_config(model_section: dict, semantic_labels, detection_labels) -> ModelConfig:
    """ModelConfig from the config's `model` section: preset, then field overrides.

    The class counts come from the label sets (the chunks' manifest); a `num_*_classes` in the
    config must agree with them.
    """
    values = dict(model_section)
    preset = values.pop('preset', 'default')
    presets = {'default': ModelConfig, 'gpu_large': ModelConfig.gpu_large}
    if preset not in presets:
        raise ConfigError(f'model.preset {preset!r}: expected one of {sorted(presets)}')
    base = presets[preset]().to_dict()
    for key, count in (('num_det_classes', len(detection_labels)), ('num_sem_classes', len(semantic_labels))):
        if key in values and int(values[key]) != count:
            raise ConfigError(f'model.{key} = {values[key]} but the chunks\' label set has {count} classes; '
                              'leave it out (it is taken from the manifest)')
        values[key] = count
    grid = values.pop('bev_grid', None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f'model.bev_grid must be a mapping of BevGrid fields, got {grid!r}')
    unknown = sorted(set(grid) - set(base['bev_grid']))
    if unknown:
        raise ConfigError(f'model.bev_grid: unknown keys {unknown}; known: {sorted(base["bev_grid"])}')
    base['bev_grid'].update(grid)
    base.update(values)
    try:
        return ModelConfig.from_dict(base)
    except (TypeError, ValueError) as error:
        raise ConfigError(f'model: {error}') from None


def train_pixel_counts(folder, num_classes: int) -> np.ndarray:
    """(K,) labelled pixels per semantic class in the train split: the manifest's, else the chunks'."""
    if folder.train_pixel_counts is not None and len(folder.train_pixel_counts) == num_classes:
        return folder.train_pixel_counts
    counts = np.zeros(256, np.int64)
    for path in folder.files['train']:
        counts += ChunkReader(path).class_pixel_counts.sum(axis=0)
    return counts[:num_classes]


def build_criterion(loss_cfg: dict, folder, num_sem_classes: int) -> MultiTaskLoss:
    class_weights = None
    if loss_cfg['class_weights']:
        counts = train_pixel_counts(folder, num_sem_classes)
        if counts.sum() > 0:
            class_weights = semantic_class_weights(counts, float(loss_cfg['class_weight_c']))
        else:
            LOG.warning('loss.class_weights: the train split has no labelled pixels; using no class weights')
    return MultiTaskLoss(heatmap_weight=loss_cfg['heatmap_weight'], reg_weight=loss_cfg['reg_weight'],
                         sem_weight=loss_cfg['lambda_sem'], class_weights=class_weights,
                         reg_code_weights=loss_cfg['reg_code_weights'],
                         uncertainty_weighting=bool(loss_cfg['uncertainty_weighting']))


def build_optimizer(modules, optim_cfg: dict) -> torch.optim.AdamW:
    """AdamW; weight decay only on weight matrices / kernels (not biases, norms, log-variances)."""
    decay, no_decay = [], []
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad:
                (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [{'params': decay, 'weight_decay': float(optim_cfg['weight_decay'])},
              {'params': no_decay, 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=float(optim_cfg['lr']), betas=tuple(optim_cfg['betas']))


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: None on CPU or with 'off'; 'auto' = bf16 where supported, else fp16."""
    if device.type != 'cuda' or mode == 'off':
        return None
    if mode == 'auto':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {'bf16': torch.bfloat16, 'fp16': torch.float16}[mode]


class TrainStep(nn.Module):
    """Network + loss in one module, so DDP synchronises the loss's parameters too."""

    def __init__(self, model: MultiTaskNet, criterion: MultiTaskLoss):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: dict):
        outputs = self.model(**model_arguments(batch))
        total, terms = self.criterion(outputs, batch)
        return total, terms, outputs


class RunLog:
    """Rank 0's outputs: TensorBoard scalars/images, pictures and the metrics history."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard_images: bool):
        self.run_dir = run_dir
        self.enabled = enabled
        self.tensorboard_images = tensorboard_images
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir=str(run_dir / 'tensorboard'))
            except ImportError as error:   # tensorboard is pinned; still train without it
                LOG.warning('no TensorBoard logging (%s)', error)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(f'{prefix}/{name}', value, step)

    def picture(self, name: str, picture: np.ndarray, step: int) -> None:
        if not self.enabled:
            return
        write_png(self.run_dir / 'pictures' / f'{name}.png', picture)
        if self.writer is not None and self.tensorboard_images:
            self.writer.add_image(name.rsplit('_', 1)[0], picture, step, dataformats='HWC')

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def load_history(run_dir: Path) -> list:
    import json
    path = run_dir / HISTORY_NAME
    if not path.is_file():
        return []
    with open(path, encoding='utf-8') as stream:
        history = json.load(stream)
    return history if isinstance(history, list) else []


# ----------------------------------------------------------------------------- one epoch

def train_one_epoch(train_step: nn.Module, optimizer, scheduler, scaler, loader, *, device: torch.device,
                    amp_dtype, grad_clip_norm, max_steps: int | None, epoch: int, global_step: int,
                    ctx: DistContext, run_log: RunLog, log_every: int, picture_every: int,
                    picture_fn=None, progress: bool = True) -> tuple[int, dict]:
    """One pass over `loader` (at most `max_steps` batches). Returns (global step, mean of each
    loss term over the epoch, averaged over the ranks)."""
    train_step.train()
    parameters = [p for p in train_step.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(total=steps, desc=f'epoch {epoch + 1}', leave=False, disable=not (progress and ctx.is_main))
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        batch = to_device(batch, device)
        with autocast_context(device, amp_dtype):
            total, terms, outputs = train_step(batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f'loss is {float(total)} at epoch {epoch + 1}, step {global_step + 1} '
                                     f'({ {k: float(v) for k, v in terms.items()} }); lower optim.lr or set '
                                     'optim.grad_clip_norm')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        grad_norm = None
        if grad_clip_norm:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, float(grad_clip_norm))
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        global_step += 1
        values = {name: float(value) for name, value in terms.items()}
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.update(1)
        bar.set_postfix(loss=f'{values["total"]:.3f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
        if ctx.is_main and log_every and global_step % log_every == 0:
            extra = {'lr': optimizer.param_groups[0]['lr']}
            if grad_norm is not None:
                extra['grad_norm'] = float(grad_norm)
            run_log.scalars('train', {**values, **extra}, global_step)
        if ctx.is_main and picture_every and global_step % picture_every == 0 and picture_fn is not None:
            run_log.picture(f'train_step_{global_step:07d}', picture_fn(batch, outputs), global_step)
    bar.close()
    names = sorted(sums)
    totals = torch.tensor([sums[n] for n in names] + [float(min(steps, i + 1) if steps else 0)],
                          dtype=torch.float64)
    if ctx.enabled:
        dist.all_reduce(totals)
    count = max(float(totals[-1]), 1.0)
    return global_step, {name: float(totals[k]) / count for k, name in enumerate(names)}


# ----------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m training.engine.train', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=None, help='training config YAML (training/configs/short.yaml)')
    parser.add_argument('overrides', nargs='*', metavar='key=value', help='config overrides, e.g. optim.lr=1e-3')
    parser.add_argument('--set', dest='set_overrides', action='append', default=[], metavar='key=value',
                        help='a config override (repeatable)')
    parser.add_argument('--out', default=None, help='run folder (default runs/<config name>-<time>)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run in --out from its training_state.pt')
    parser.add_argument('--device', default='auto', help='auto (cuda:LOCAL_RANK if available), cpu, cuda')
    parser.add_argument('--stop-after-epoch', type=int, default=None, metavar='N',
                        help='end the process once N epochs are complete, as if it were stopped there '
                             '(time-limited job slots; continue later with --resume)')
    return parser.parse_intermixed_args(argv)   # overrides may come before or after the options


def _setup_logging(run_dir: Path, ctx: DistContext) -> None:
    LOG.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    LOG.propagate = False
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S')
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    LOG.addHandler(console)
    if ctx.is_main:
        file_handler = logging.FileHandler(run_dir / 'train.log', encoding='utf-8')
        file_handler.setFormatter(formatter)
        LOG.addHandler(file_handler)


def resolve_config(args) -> dict:
    """The config from the command line (--resume without --config: the run folder's config.yaml);
    refuses to overwrite a run without --resume."""
    overrides = list(args.overrides) + list(args.set_overrides)
    stray = [o for o in overrides if '=' not in o]
    if stray:
        raise ConfigError(f'overrides must look like key=value, got {stray}')
    config_path = args.config
    if args.resume:
        if args.out is None:
            raise ConfigError('--resume needs --out RUN_DIR (the run to continue)')
        state_path = Path(args.out) / STATE_NAME
        if not state_path.is_file():
            raise ConfigError(f'--resume: {state_path} does not exist (nothing to resume)')
        if config_path is None:
            config_path = Path(args.out) / CONFIG_NAME
    else:
        if args.out is not None and (Path(args.out) / STATE_NAME).exists():
            raise ConfigError(f'{args.out} already holds a run ({STATE_NAME}); add --resume to continue it '
                              'or choose another --out')
        if config_path is None:
            raise ConfigError('--config is required (e.g. training/configs/short.yaml)')
    return load_config(config_path, overrides)


def resolve_run_dir(args, ctx: DistContext) -> Path:
    """--out, else runs/<config name>-<time> (rank 0's time on every rank)."""
    if args.out is not None:
        return Path(args.out)
    stem = Path(args.config).stem if args.config else 'run'
    return Path(broadcast_from_main(str(Path('runs') / f'{stem}-{datetime.now().strftime("%Y%m%d-%H%M%S")}'), ctx))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        ctx = init_distributed(args.device, config['distributed']['backend'])
        return run(args, config, resolve_run_dir(args, ctx), ctx)
    except (ConfigError, ChunkError, TrainingStateError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()


# ----------------------------------------------------------------------------- the steps of a run

@dataclass
class RunData:
    """The chunk folder, the model config its label sets give, and the datasets and loaders over it."""

    folder: ChunkFolder
    model_cfg: ModelConfig
    train_set: ChunkDataset
    val_set: ChunkDataset | None
    train_loader: DataLoader
    val_loader: DataLoader | None

    def picture(self, batch: dict, outputs: dict) -> np.ndarray:
        """The debug picture of the first frame of a batch (training.pictures.debug_pictures)."""
        return debug_picture(batch, outputs, self.model_cfg.bev_grid, self.folder.detection_labels,
                             self.folder.semantic_labels)


@dataclass
class Learner:
    """What the optimizer steps change and how: network, loss, optimizer, schedule, AMP, step counts."""

    model: MultiTaskNet
    criterion: MultiTaskLoss
    train_step: nn.Module            # TrainStep, in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    epochs: int
    steps_per_epoch: int


@dataclass
class Progress:
    """Where the run stands: completed epochs, optimizer steps, the best score, the history (rank 0's)."""

    epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    history: list = field(default_factory=list)


@dataclass
class Run:
    """What the per-epoch steps share."""

    config: dict
    run_dir: Path
    ctx: DistContext
    data: RunData
    learner: Learner
    progress: Progress
    log: RunLog


def run(args, config: dict, run_dir: Path, ctx: DistContext) -> int:
    """A whole run: set up, build data and learner, resume, then per epoch train, evaluate, save."""
    setup_process(run_dir, config['train'], ctx)
    data = build_data(config, ctx)
    learner = build_learner(config, data, ctx)
    progress, state = Progress(), None
    if args.resume:
        state = resume(run_dir, learner, progress, ctx)
    if ctx.is_main:
        import yaml
        atomic_write_text(run_dir / CONFIG_NAME, yaml.safe_dump(json_ready(config), sort_keys=False))
    LOG.info('run %s: %d train / %d val frames, %s on %s, %d steps per epoch, AMP %s',
             run_dir, len(data.train_set), len(data.val_set) if data.val_set else 0,
             f'{ctx.world_size} processes' + (f' ({ctx.backend})' if ctx.backend else ''), ctx.device,
             learner.steps_per_epoch, learner.amp_dtype if learner.amp_dtype is not None else 'off')
    LOG.info('parameters: %s', parameter_summary(learner.model))
    run_log = RunLog(run_dir, ctx.is_main, bool(config['train']['pictures_to_tensorboard']))
    if state is not None:   # last, so that nothing built after it draws from the restored generators
        restore_rng(state, int(config['train']['seed']), progress.epoch, ctx)
    this = Run(config, run_dir, ctx, data, learner, progress, run_log)
    try:
        for epoch in range(progress.epoch, learner.epochs):
            started = time.perf_counter()
            train_means = train_epoch(this, epoch)
            result = validate(this, epoch)
            save_epoch(this, epoch, train_means, result, started)
            if args.stop_after_epoch is not None and args.stop_after_epoch <= epoch + 1 < learner.epochs:
                LOG.info('stopping after epoch %d as asked (--stop-after-epoch); continue with --resume',
                         epoch + 1)
                break
    finally:
        run_log.close()
    if ctx.is_main and progress.best_epoch:
        LOG.info('done: %s (best %s = %.4f at epoch %d)', run_dir, config['eval']['best_metric'],
                 progress.best_score, progress.best_epoch)
    elif ctx.is_main:
        LOG.info('done: %s (no validation, so no model_best.pt)', run_dir)
    return 0


def setup_process(run_dir: Path, train_cfg: dict, ctx: DistContext) -> None:
    """Run folder, logging, torch threads, determinism and the seeds of this process."""
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    _setup_logging(run_dir, ctx)
    if train_cfg['threads']:
        torch.set_num_threads(int(train_cfg['threads']))
    if train_cfg['deterministic']:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif ctx.device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    seed_everything(int(train_cfg['seed']) + ctx.rank)


def build_data(config: dict, ctx: DistContext) -> RunData:
    """The chunk folder's splits as datasets fitting the model, and this rank's loaders."""
    data_cfg, train_cfg, eval_cfg = config['data'], config['train'], config['eval']
    prepare_for_loader_workers(int(data_cfg['num_workers']))
    folder = read_chunk_folder(data_cfg['chunks'], (data_cfg['train_split'], data_cfg['val_split']))
    folder.files.setdefault('train', folder.files[data_cfg['train_split']])
    if not folder.complete:
        LOG.warning('%s: the manifest says the conversion is not complete; training on what is there',
                    folder.path)
    model_cfg = build_model_config(config['model'], folder.semantic_labels, folder.detection_labels)
    dataset_args = dict(model_config=model_cfg, detection_labels=folder.detection_labels,
                        max_objects=data_cfg['max_objects'], chunk_cache_size=data_cfg['chunk_cache_size'],
                        frame_cache_mb=data_cfg['frame_cache_mb'], heatmap_min_radius=data_cfg['heatmap_min_radius'],
                        reg_radius=data_cfg['reg_radius'],
                        cameras=data_cfg['cameras'], views_per_sample=data_cfg['views_per_sample'])
    train_set = make_dataset(folder.files[data_cfg['train_split']], augment=data_cfg['augment'],
                             augment_config=data_cfg['augment_config'], **dataset_args)
    val_files = folder.files[data_cfg['val_split']]
    val_set = make_dataset(val_files, **dataset_args) if val_files else None
    pin = ctx.device.type == 'cuda'
    train_loader = make_train_loader(train_set, train_cfg['batch_size'], data_cfg['num_workers'],
                                     int(train_cfg['seed']), ctx.rank, ctx.world_size, pin)
    val_loader = None if val_set is None else make_eval_loader(
        val_set, eval_cfg['batch_size'] or train_cfg['batch_size'], data_cfg['num_workers'], ctx.rank,
        ctx.world_size, pin)
    if val_set is None:
        LOG.warning('no %r chunks in %s: no validation, no best checkpoint', data_cfg['val_split'], folder.path)
    for name, dataset in (('train', train_set), ('val', val_set)):
        if dataset is not None and dataset.frame_cache is not None:
            LOG.info('frame cache (%s): %d of %d frames resized once, %.0f MB in %s', name,
                     dataset.frame_cache.slots, len(dataset), dataset.frame_cache.megabytes, dataset.frame_cache.folder)
    return RunData(folder, model_cfg, train_set, val_set, train_loader, val_loader)


def build_learner(config: dict, data: RunData, ctx: DistContext) -> Learner:
    """Network, loss (with the train split's class weights), DDP wrapper, optimizer, schedule, AMP."""
    train_cfg, dist_cfg, device = config['train'], config['distributed'], ctx.device
    model = MultiTaskNet(data.model_cfg).to(device)
    criterion = build_criterion(config['loss'], data.folder, data.model_cfg.num_sem_classes).to(device)
    if ctx.enabled and device.type == 'cuda' and dist_cfg['sync_batchnorm']:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_step = TrainStep(model, criterion)
    if ctx.enabled:
        train_step = nn.parallel.DistributedDataParallel(
            train_step, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=bool(dist_cfg['find_unused_parameters']))
    optimizer = build_optimizer([model, criterion], config['optim'])
    steps_per_epoch = len(data.train_loader)
    if train_cfg['max_steps_per_epoch']:
        steps_per_epoch = min(steps_per_epoch, int(train_cfg['max_steps_per_epoch']))
    epochs = int(train_cfg['epochs'])
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, config['schedule'])
    amp_dtype = amp_dtype_for(train_cfg['amp'], device)
    scaler = torch.amp.GradScaler('cuda', enabled=amp_dtype == torch.float16)
    return Learner(model, criterion, train_step, optimizer, scheduler, scaler, amp_dtype, epochs, steps_per_epoch)


def resume(run_dir: Path, learner: Learner, progress: Progress, ctx: DistContext) -> dict:
    """Load RUN_DIR/training_state.pt into `learner` and `progress`; returns the state (for its RNG)."""
    history = load_history(run_dir) if ctx.is_main else []
    state = load_training_state(run_dir / STATE_NAME)
    try:
        learner.model.load_state_dict(state['model'])
        learner.criterion.load_state_dict(state['criterion'])
        learner.optimizer.load_state_dict(state['optimizer'])
        learner.scheduler.load_state_dict(state['scheduler'])
        if state['scaler'] is not None and learner.scaler.is_enabled():
            learner.scaler.load_state_dict(state['scaler'])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        reason = ' '.join(line.strip() for line in str(error).splitlines()[:2])
        raise TrainingStateError(f'{run_dir / STATE_NAME}: does not fit the network, loss or optimizer of this '
                                 f'config (was it changed?): {type(error).__name__}: {reason}') from None
    progress.epoch, progress.global_step = state['epoch'], state['global_step']
    progress.best_score, progress.best_epoch = state['best_score'], state['best_epoch']
    progress.history = [entry for entry in history if entry.get('epoch', 0) <= progress.epoch]
    LOG.info('resumed %s after epoch %d (step %d, best score %.4f at epoch %d)', run_dir, progress.epoch,
             progress.global_step, progress.best_score, progress.best_epoch)
    return state


def restore_rng(state: dict, seed: int, start_epoch: int, ctx: DistContext) -> None:
    """This rank's RNG states from the training state; a reseed when the number of processes changed."""
    if len(state['rng']) == ctx.world_size:
        restore_rng_state(state['rng'][ctx.rank])
    else:
        LOG.warning('resuming with %d processes, the state has RNG states of %d: reseeding',
                    ctx.world_size, len(state['rng']))
        seed_everything(seed + 1000 * start_epoch + ctx.rank)


def train_epoch(run: Run, epoch: int) -> dict:
    """One epoch of optimizer steps; returns the mean of each loss term (over all ranks)."""
    train_cfg, learner = run.config['train'], run.learner
    run.data.train_loader.sampler.set_epoch(epoch)
    run.progress.global_step, train_means = train_one_epoch(
        learner.train_step, learner.optimizer, learner.scheduler, learner.scaler, run.data.train_loader,
        device=run.ctx.device, amp_dtype=learner.amp_dtype, grad_clip_norm=run.config['optim']['grad_clip_norm'],
        max_steps=learner.steps_per_epoch, epoch=epoch, global_step=run.progress.global_step, ctx=run.ctx,
        run_log=run.log, log_every=train_cfg['log_every_steps'], picture_every=train_cfg['picture_every_steps'],
        picture_fn=run.data.picture, progress=train_cfg['progress'])
    return train_means


def validate(run: Run, epoch: int) -> EvaluationResult | None:
    """Rank 0's weights on the validation split, in epochs that evaluate (every eval_every_epochs and
    the last); None in the others or without validation chunks."""
    every = int(run.config['train']['eval_every_epochs'] or 0)
    if run.ctx.enabled:   # BatchNorm statistics differ per rank: evaluate (and save) rank 0's
        for buffer in run.learner.model.buffers():
            dist.broadcast(buffer, src=0)
    if run.data.val_loader is None or not every or ((epoch + 1) % every and epoch + 1 != run.learner.epochs):
        return None
    eval_cfg, data = run.config['eval'], run.data
    return evaluate(run.learner.model, data.val_loader, grid=data.model_cfg.bev_grid,
                    detection_labels=data.folder.detection_labels, semantic_labels=data.folder.semantic_labels,
                    device=run.ctx.device, criterion=run.learner.criterion,
                    score_threshold=eval_cfg['score_threshold'], max_detections=eval_cfg['max_detections'],
                    nms_radius_m=eval_cfg['nms_radius_m'], amp_dtype=run.learner.amp_dtype, ctx=run.ctx,
                    progress=run.config['train']['progress'], description=f'validate {epoch + 1}')


def save_epoch(run: Run, epoch: int, train_means: dict, result: EvaluationResult | None, started: float) -> None:
    """After an epoch: checkpoints, metrics history, TensorBoard, the validation picture and the
    training state (rank 0), then every rank waits for them."""
    rng_states = gather_to_main(capture_rng_state(), run.ctx)
    digests = gather_to_main(parameter_digest(run.learner.model), run.ctx)   # DDP keeps replicas bitwise equal
    if run.ctx.is_main:
        if len(set(digests)) > 1:
            LOG.error('epoch %d: the %d DDP replicas have different weights (digests %s)',
                      epoch + 1, len(digests), digests)
        summary, score, is_best = record_epoch(run, epoch, train_means, result, started)
        learner, progress = run.learner, run.progress
        save_training_state(run.run_dir / STATE_NAME, model=learner.model, criterion=learner.criterion,
                            optimizer=learner.optimizer, scheduler=learner.scheduler, scaler=learner.scaler,
                            epoch=epoch + 1, global_step=progress.global_step, best_score=progress.best_score,
                            best_epoch=progress.best_epoch, config=run.config, rng_states=rng_states,
                            world_size=run.ctx.world_size, replica_digests=digests)
        log_epoch(epoch, learner.epochs, progress.global_step, train_means, summary, is_best, started)
    barrier(run.ctx)


def record_epoch(run: Run, epoch: int, train_means: dict, result: EvaluationResult | None,
                 started: float) -> tuple[dict | None, float, bool]:
    """Rank 0: score, model_last.pt / model_best.pt, metrics history, TensorBoard, the validation
    picture. Returns (validation summary, score, whether it is the best so far)."""
    eval_cfg, data, learner, progress, run_dir = (run.config['eval'], run.data, run.learner, run.progress,
                                                  run.run_dir)
    score = result.score(eval_cfg['best_metric']) if result is not None else math.nan
    is_best = math.isfinite(score) and score > progress.best_score
    if is_best:
        progress.best_score, progress.best_epoch = score, epoch + 1
    summary = result.summary() if result is not None else None
    labels = (data.folder.semantic_labels, data.folder.detection_labels)
    extra = {'epoch': epoch + 1, 'global_step': progress.global_step, 'score': score,
             'best_metric': eval_cfg['best_metric'], 'metrics': summary, 'train_losses': train_means,
             'config': json_ready(run.config), 'provenance': provenance(data.folder.path)}
    save_checkpoint(run_dir / 'model_last.pt', learner.model, *labels, extra)
    if is_best:
        save_checkpoint(run_dir / 'model_best.pt', learner.model, *labels, extra)
    progress.history.append({
        'epoch': epoch + 1, 'global_step': progress.global_step, 'lr': learner.optimizer.param_groups[0]['lr'],
        'epoch_time_s': time.perf_counter() - started, 'train': train_means, 'val': summary, 'score': score,
        'is_best': is_best, 'best_score': progress.best_score, 'best_epoch': progress.best_epoch})
    atomic_write_json(run_dir / HISTORY_NAME, progress.history)
    run.log.scalars('train_epoch', train_means, progress.global_step)
    if summary is not None:
        run.log.scalars('val', {**summary, 'score': score}, progress.global_step)
        batch = to_device(collate_samples([data.val_set[0]]), run.ctx.device)
        with torch.no_grad():
            learner.model.eval()
            outputs = learner.model(**model_arguments(batch))
            learner.model.train()
        run.log.picture(f'val_epoch_{epoch + 1:03d}', data.picture(batch, outputs), progress.global_step)
    run.log.flush()
    return summary, score, is_best


def log_epoch(epoch: int, epochs: int, global_step: int, train_means: dict, summary: dict | None, is_best: bool,
              started: float) -> None:
    message = (f'epoch {epoch + 1}/{epochs} step {global_step} '
               f'loss {train_means.get("total", math.nan):.4f} '
               f'(heatmap {train_means.get("heatmap", math.nan):.4f}, '
               f'reg {train_means.get("reg", math.nan):.4f}, sem {train_means.get("sem", math.nan):.4f})')
    if summary is not None:
        message += (f' | val mAP {summary["map"]:.4f} mIoU {summary["miou"]:.4f} '
                    f'pixel acc {summary["pixel_accuracy"]:.4f} loss {summary.get("loss/total", math.nan):.4f}'
                    f'{" (best)" if is_best else ""}')
    LOG.info('%s [%.1f s]', message, time.perf_counter() - started)


if __name__ == '__main__':
    sys.exit(main())
