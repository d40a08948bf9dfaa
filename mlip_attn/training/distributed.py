"""Multi-process data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

Each rank takes every world-size-th batch; gradients are averaged with one all-reduce of a flat
buffer after each backward pass, which is what DistributedDataParallel does, without its hooks
(those do not see the double backward through the force loss cleanly).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_parameters(model: torch.nn.Module) -> None:
    if dist.is_initialized():
        for p in model.state_dict().values():
            dist.broadcast(p, src=0)


def average_gradients(model: torch.nn.Module) -> None:
    if not dist.is_initialized():
        return
    params = list(model.parameters())
    for p in params:
        if p.grad is None:  # every rank must reduce the same buffer
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def sum_across_ranks(vec: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(vec)
    return vec


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
