"""What several TMRL processes share: averaged gradients, summed counters, one set of weights.

Each process owns its envs and its replay shard and computes losses on its own batches; before
every optimiser step the gradients are averaged over processes, so the weights stay equal on every
rank without wrapping modules in DDP (the SAC update runs several backward passes over different
module sets per step, which DDP's one-forward-one-backward bookkeeping does not fit).

The same all-reduce carries a flag saying whether any process saw a non-finite loss or gradient,
so every rank stops at the same step instead of one raising while the others wait forever.
With one process (or no process group) every function here is a cheap local no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient was NaN or infinite on some process; no optimiser step was taken."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def sync_gradients(params: Iterable[nn.Parameter], loss: torch.Tensor, name: str) -> None:
    """Average ``params``' gradients over processes; raise :class:`NonFiniteLossError` on every
    process if the loss or a gradient is not finite anywhere. Call between backward and step."""
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    bad = (~torch.isfinite(loss.detach())).any() | (~torch.isfinite(flat)).any()
    n = world_size()
    if n > 1:
        packed = torch.cat([flat, bad.float().reshape(1)])
        dist.all_reduce(packed)
        flat, bad = packed[:-1] / n, packed[-1] > 0
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).clone()
            offset += g.numel()
    else:  # a parameter the loss did not reach gets the zero gradient several processes would average to
        for p, g in zip(params, grads, strict=True):
            if p.grad is None:
                p.grad = g
    if bool(bad):
        raise NonFiniteLossError(f"{name} is not finite (value {loss.item()!r} on this process)")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers over processes (episode counters, success windows)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every process (equal weights from the first step)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
