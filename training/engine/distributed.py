"""This process's place in a torchrun job: process group, device, and the few collectives the trainer uses.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op on a single process, so the
trainer and the evaluation code run the same lines either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.engine.config import BACKENDS, ConfigError


@dataclass
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: str | None = None     # the process group's backend; None without one (a single process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend to start for `device`: 'auto' = NCCL on CUDA, gloo on CPU; ConfigError when the
    asked-for one is unknown, cannot drive `device` or is not built into this torch."""
    if backend not in BACKENDS:
        raise ConfigError(f'distributed.backend {backend!r}: expected one of {BACKENDS}')
    if backend == 'auto':
        return 'nccl' if device.type == 'cuda' else 'gloo'
    if backend == 'nccl' and device.type != 'cuda':
        raise ConfigError(f"distributed.backend 'nccl' needs CUDA devices, this process runs on {device}; "
                          "use gloo (or auto) on CPU")
    if not getattr(dist, f'is_{backend}_available')():
        raise ConfigError(f'distributed.backend {backend!r}: this torch build has no {backend} support; use auto')
    return backend


def init_distributed(device: str = 'auto', backend: str = 'auto') -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), pick the device.

    device 'auto': cuda:LOCAL_RANK when CUDA is available, else CPU. backend: see resolve_backend
    (its name is always checked, whether it can drive the device only when a group is started).
    """
    if backend not in BACKENDS:
        raise ConfigError(f'distributed.backend {backend!r}: expected one of {BACKENDS}')
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    used = None
    if world_size > 1:
        if dist.is_initialized():
            used = str(dist.get_backend())
        else:
            used = resolve_backend(backend, device)
            dist.init_process_group(backend=used, init_method='env://')
    return DistContext(rank, world_size, local_rank, device, used)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_from_main(value, ctx: DistContext):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not ctx.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


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
