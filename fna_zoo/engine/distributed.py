"""torchrun / DDP helpers: NCCL on GPU, Gloo on CPU; a single process when not launched by torchrun."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ['DistInfo', 'init_distributed', 'barrier', 'all_gather_objects', 'average_gradients', 'broadcast_state', 'cleanup']


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = 'auto') -> DistInfo:
    """Join the torchrun process group if launched by torchrun, and pick the device.

    Args:
        device: 'auto' (CUDA when available), 'cpu' or 'cuda'.
    """
    if device not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device is {device!r}; expected 'auto', 'cpu' or 'cuda'")
    use_cuda = torch.cuda.is_available() if device == 'auto' else device == 'cuda'
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank, local = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        torch.cuda.set_device(local)
    dev = torch.device('cuda', local) if use_cuda else torch.device('cpu')
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if use_cuda else 'gloo')
    return DistInfo(rank, world, local, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj` (a one-element list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: 'list[torch.nn.Parameter]') -> None:
    """Average the gradients of `params` over the processes (one all-reduce; a no-op when not distributed).

    Every process must hold gradients for the same parameters (e.g. all sampled the same path).

    Args:
        params: The parameters whose `.grad` to average.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_state(module: 'torch.nn.Module') -> None:
    """Copy rank 0's parameters and buffers to every process (what DDP does when it wraps a model; a no-op
    when not distributed). Needed wherever gradients are averaged by hand (`average_gradients`).

    Args:
        module: The model.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
