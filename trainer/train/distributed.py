"""Process-group plumbing shared by the training recipes, so each recipe reads the same under torchrun or alone.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them a recipe is one process and every helper here is
a no-op, so single-process runs need no process group at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK): rank 0 of each node does the node-local I/O."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; initialises the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(f"cuda:{local_rank()}") if torch.cuda.is_available() else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def global_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over all ranks (one all-reduce), or the values themselves in one process.

    Every rank must pass the same keys in the same order: the values travel as one tensor."""
    if not dist.is_initialized() or not values:
        return values
    packed = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(values, (packed / dist.get_world_size()).tolist(), strict=True))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one: collective decisions (checkpoint and stop on SIGTERM) must
    be taken by all ranks at the same step, or the first collective of the odd one out hangs."""
    if not dist.is_initialized():
        return flag
    packed = torch.tensor([int(flag)], device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


T = TypeVar("T")


def local_rank_first(work: Callable[[], T]) -> T:
    """`work` on each node's first process, then on its others: a download into the node's cache happens once
    and the other processes find it there."""
    if local_rank() == 0:
        result = work()
        barrier()
        return result
    barrier()
    return work()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group (if any) so torchrun sees a clean exit."""
    if dist.is_initialized():
        dist.destroy_process_group()
