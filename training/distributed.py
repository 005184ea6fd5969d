"""The process group of a torchrun launch (or a single process): rank, world size, device, and reductions.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is one process of rank 0. NCCL on CUDA, gloo on
CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str = "auto") -> ProcessGroup:
    """Joins the torchrun process group (when launched by torchrun) and picks this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank if chosen.index is None else chosen.index)
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return ProcessGroup(rank, local_rank, world_size, chosen)


def stop(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The mean of a tensor over all processes (itself in a single process)."""
    if not group.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / group.world_size
