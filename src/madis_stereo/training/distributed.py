"""Process-group set-up for ``torchrun`` (NCCL on CUDA, gloo on CPU), collectives and a resumable sampler.

A single process (no ``WORLD_SIZE`` from torchrun) runs as rank 0 of 1 without a process group.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from madis_stereo.errors import InputError, first_line

__all__ = ["DistEnv", "ResumableSampler", "all_reduce_sum", "broadcast_from_main", "pick_device", "setup",
           "teardown"]

log = logging.getLogger(__name__)

DRAIN_S = 0.05  # teardown's pause for the process group's worker threads (see teardown)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank / world_size / local_rank and its device."""

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


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """"auto" (or None) -> this process's CUDA device when available, else CPU; otherwise ``torch.device(name)``.

    A device this machine does not have (``cuda`` on a CPU-only build or without a GPU, ``cuda:3`` with
    two GPUs, ``mps`` off Apple silicon) raises InputError with one line that says so.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"device {name!r} is not a device name ({first_line(err)})") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    _check_available(device, name)
    return device


def _check_available(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {name!r}: {why} (torch {torch.__version__}); use the cpu "
                             "instead")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r}: MPS (Apple silicon) is not available here; use the cpu instead")


def setup(device_name: str = "auto") -> DistEnv:
    """Join the torchrun process group when launched by torchrun (its RANK/WORLD_SIZE/LOCAL_RANK variables)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, device)
    return DistEnv(rank, world_size, local_rank, device)


def teardown(env: DistEnv) -> None:
    """Leave the process group; first let its worker threads release the last collective's tensors.

    A gloo worker thread frees a finished collective's tensors after the caller has its result, and needs
    the GIL to do it. If that has not happened before the interpreter shuts down, the thread dies holding
    them and the process aborts ("terminate called without an active exception", exit status -6 instead
    of the run's own; pytorch/pytorch#179291 describes the same crash). destroy_process_group cannot join
    those threads once a DDP model has existed (the group outlives it in C++), so the GIL is released here
    for a moment instead. No barrier: on an error path the other rank may never reach it.
    """
    if env.distributed and dist.is_initialized():
        time.sleep(DRAIN_S)
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over ranks (in place; identity for a single process)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Maximum over ranks (in place; identity for a single process)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_from_main(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Rank 0's value of ``tensor`` on every rank (in place)."""
    if env.distributed:
        moved = tensor.to(env.device)
        dist.broadcast(moved, src=0)
        tensor.copy_(moved.cpu())
    return tensor


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, disjoint per rank) that can start inside an epoch.

    ``set_position(epoch, start)`` skips this rank's first ``start`` indices of that epoch, so a resumed run
    sees exactly the samples an uninterrupted run would.
    """

    def __init__(self, dataset: Dataset, env: DistEnv, seed: int) -> None:
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
