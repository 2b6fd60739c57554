"""Data-parallel training under torchrun: process group, device, sharding, reductions.

``torchrun --nproc_per_node=N -m weight_compander train ...`` starts N processes and sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `process_group` reads them and
joins the job (gloo on CPU, nccl when CUDA is present). Every helper here is a no-op in a
single process, so the training loop has one code path for both.

The global batch is the config's ``batch_size``: each of the N ranks trains on every N-th
example of it, and DDP averages the gradients, which is the gradient of the global batch.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from weight_compander.harness.errors import ConfigError

__all__ = [
    "all_sum", "any_rank", "barrier", "broadcast", "broadcast_buffers", "check_batch_size",
    "device", "gather", "launched", "process_group", "rank_world", "shard", "wrap",
]


def launched() -> bool:
    """True in a process that torchrun started as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Join the torchrun job for the block and leave it after; yields (rank, world size).

    Outside torchrun, or when the caller already set up a group, this only reports it.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield rank_world()
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a standard build")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        yield rank_world()
        dist.barrier()  # leave together: a rank that tears down while its peer is still
    finally:            # busy (rank 0 writing files) can abort in gloo's threads
        gc.collect()  # DDP's reducer sits in reference cycles: free it while the group lives
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    """Where a rank trains: its GPU when CUDA is present (LOCAL_RANK under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_batch_size(batch_size: int, world: int) -> None:
    """Refuse a global batch the ranks cannot split evenly (their losses would weigh differently)."""
    if batch_size % world:
        raise ConfigError(
            f"batch_size: {batch_size} is not divisible by the {world} processes; the global "
            f"batch is split evenly between them, so choose a multiple of {world} (e.g. "
            f"{batch_size - batch_size % world or world})"
        )


def wrap(model: nn.Module) -> nn.Module:
    """`model` in DistributedDataParallel when there are several ranks, else `model` itself.

    Wrap after the reparameterization: DDP then syncs the raw tensors and the compander
    hyperparameters like any other parameter, so every rank keeps identical values.
    """
    if rank_world()[1] == 1:
        return model
    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(t: Tensor) -> Tensor:
    """This rank's share of a global batch: every world-th row, starting at its rank."""
    rank, world = rank_world()
    return t if world == 1 else t[rank::world]


def all_sum(t: Tensor) -> Tensor:
    """`t` summed over ranks (a new tensor on `t`'s device); `t` itself in one process."""
    if rank_world()[1] == 1:
        return t
    out = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any (e.g. one rank got SIGTERM)."""
    if rank_world()[1] == 1:
        return flag
    return bool(all_sum(torch.tensor([int(flag)])).item())


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; for small things such as a resume state)."""
    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    world = rank_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Each rank updates its running statistics from its own shard; evaluating and
    checkpointing rank 0's on all ranks keeps the ranks, and a resumed run, in step.
    """
    if rank_world()[1] > 1:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    return device() if dist.get_backend() == "nccl" else torch.device("cpu")
