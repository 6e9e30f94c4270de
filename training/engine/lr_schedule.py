"""The learning-rate schedule: warm-up + cosine, one-cycle or constant, per optimizer step.

`build_scheduler` wraps `lr_factor` in a LambdaLR, so the scheduler's state_dict holds only
numbers (the training-state file stays loadable with torch.load(weights_only=True)).
"""
from __future__ import annotations

import math

import torch

from training.engine.config import SCHEDULES, ConfigError


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
