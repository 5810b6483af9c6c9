"""Data-parallel helpers: one process per device under `torchrun` (NCCL on GPUs, gloo on CPUs).

The sandwich rule runs several subnets per step on views of shared tensors, so DDP's hooks (one
reduction per backward, unused-parameter search) fit it badly. Instead each process accumulates
the gradients of all its micro-batches and subnets, and `all_reduce_` sums them once per
optimizer step, bucketed. Without `torchrun` (WORLD_SIZE unset or 1) every call is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from hwnas.device import resolve_device

BUCKET_ELEMENTS = 1 << 24


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the process group `torchrun` describes in the environment (if any); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    here = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
        here = True
    return DistInfo(rank, world, local_rank, dev, here)


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def all_reduce_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Sum `tensors` over all processes, in place, in buckets of one dtype."""
    if not info.active or not tensors:
        return
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        bucket, size = [], 0
        for t in group + [None]:
            if t is not None and (size + t.numel() <= BUCKET_ELEMENTS or not bucket):
                bucket.append(t)
                size += t.numel()
                continue
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            for dst, src in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                dst.copy_(src)
            bucket, size = ([t], t.numel()) if t is not None else ([], 0)


def broadcast_(tensors: list[torch.Tensor], info: DistInfo, src: int = 0) -> None:
    """Give every process rank `src`'s values of `tensors` (in place)."""
    if not info.active:
        return
    for t in tensors:
        dist.broadcast(t, src)
