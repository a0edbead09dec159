"""Process-group set-up for ``torchrun`` and the sharding of evaluation data.

``torchrun --nproc_per_node=K -m noah train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the group (NCCL on GPUs, gloo on CPU). A
plain ``noah train`` runs as a single process with the same code.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from noah.errors import ConfigError

__all__ = [
    "DistEnv", "init_distributed", "cleanup_distributed", "resolve_device", "ShardSampler", "all_reduce_sum",
    "all_reduce_max", "main_rank_first", "on_main_rank",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU if there is one, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum ``value`` over all ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def all_reduce_max(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise maximum of ``t`` over all ranks, as a new CPU int64 tensor (a copy of ``t``
    when not distributed)."""
    result = t.to(device=device, dtype=torch.int64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(result, op=dist.ReduceOp.MAX)
    return result.cpu()


def _on_rank_0_shared(fn: Callable[[], T], env: DistEnv) -> T | None:
    """``fn()`` on rank 0 (its result there, ``None`` elsewhere); if it raises, every rank raises
    that error, so no rank is left waiting for one that has already given up."""
    outcome: list = [None]
    if env.rank == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 -- handed to the other ranks, then re-raised
            try:
                pickle.dumps(exc)
                outcome[0] = exc
            except Exception:  # noqa: BLE001
                outcome[0] = RuntimeError(f"{type(exc).__name__}: {exc}")
            dist.broadcast_object_list(outcome, src=0)
            raise
        dist.broadcast_object_list(outcome, src=0)
        return result
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise outcome[0]
    return None


def main_rank_first(fn: Callable[[], T], env: DistEnv) -> T:
    """``fn()`` on rank 0 first, then on the other ranks (e.g. generating cached data once).

    If it raises on rank 0, every rank raises that error (the others do not call ``fn``).
    """
    if not env.distributed:
        return fn()
    result = _on_rank_0_shared(fn, env)
    return result if env.rank == 0 else fn()


def on_main_rank(fn: Callable[[], T], env: DistEnv) -> T | None:
    """``fn()`` on rank 0 only (e.g. claiming the run folder); ``None`` on the other ranks. If it
    raises on rank 0, every rank raises that error."""
    if not env.distributed:
        return fn()
    return _on_rank_0_shared(fn, env)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``length`` items, in order.

    Unlike ``DistributedSampler`` it never pads: every sample lands on exactly one rank, so
    metrics gathered from all ranks count each validation sample once (ranks may differ by one
    sample in length).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
