"""Data loaders of a run: a replayable training loader and sharded evaluation loaders.

Training batches are a function of ``(seed, epoch)`` alone: the shuffling order comes from a
generator (or ``DistributedSampler``) seeded per epoch, and each sample is augmented under its
own seed (:func:`~noah.engine.seeding.sample_seed`), whichever DataLoader worker loads it. So an
epoch can be replayed from any batch -- what resuming from a mid-epoch checkpoint needs -- and
the number of workers does not change the numbers.
"""

from __future__ import annotations

import itertools
import signal
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from noah.engine.distributed import DistEnv, ShardSampler
from noah.engine.seeding import epoch_seed, isolated_rng, sample_seed
from noah.errors import NoahError

__all__ = ["TrainLoader", "eval_loader", "batches"]


class _SampleSeeded(Dataset):
    """``dataset[i]`` loaded and augmented under :func:`sample_seed` of the current epoch."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with isolated_rng(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]


class _Skipping(Sampler[int]):
    """The indices of ``inner`` after the first ``skip`` of them."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner, self.skip = inner, 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _ignore_stop_signals(_worker_id: int) -> None:
    # A scheduler signals the whole process group; the trainer decides when to stop, and its
    # workers must keep serving it until then.
    for name in ("SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class TrainLoader:
    """The training DataLoader of a run, replayable by epoch and batch.

    ``len()`` is the number of batches in a full epoch; :meth:`epoch` gives the batches of one
    epoch, optionally starting at a later batch. Full batches only (BatchNorm and Mixup want
    them), unless a rank's share of the data is smaller than one batch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, seed: int, env: DistEnv) -> None:
        self.seed, self.env = seed, env
        self.samples = _SampleSeeded(dataset, seed)
        self.generator = torch.Generator()
        if env.distributed:
            inner: Sampler[int] = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank,
                                                     shuffle=True, seed=seed)
        else:
            inner = RandomSampler(dataset, generator=self.generator)
        self.sampler = _Skipping(inner)
        drop_last = len(dataset) // env.world_size >= batch_size
        self.loader = DataLoader(self.samples, batch_size=batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=workers, pin_memory=env.device.type == "cuda", generator=self.generator,
                                 worker_init_fn=_ignore_stop_signals if workers > 0 else None)

    def __len__(self) -> int:
        skip, self.sampler.skip = self.sampler.skip, 0
        try:
            return len(self.loader)
        finally:
            self.sampler.skip = skip

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterable[Any]:
        """The batches of ``epoch`` from batch ``start_batch`` on (the same batches, in the same
        order, with the same augmentation, as batches ``start_batch, ...`` of a full pass)."""
        self.samples.epoch = epoch
        self.generator.manual_seed(epoch_seed(self.seed, epoch, self.env.rank))
        if isinstance(self.sampler.inner, DistributedSampler):
            self.sampler.inner.set_epoch(epoch)
        self.sampler.skip = start_batch * self.loader.batch_size
        return batches(self.loader)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, env: DistEnv) -> DataLoader:
    """An evaluation loader over this rank's disjoint shard of ``dataset`` (every sample is
    evaluated on exactly one rank)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), env.rank, env.world_size),
                      num_workers=workers, pin_memory=env.device.type == "cuda")


def batches(loader: Iterable) -> Iterator[Any]:
    """Iterate ``loader``; a :class:`NoahError` raised in a worker process comes out with its own
    one-line message (the DataLoader wraps it in the worker's traceback)."""
    try:
        yield from loader
    except NoahError as exc:
        text = str(exc)
        if "Original Traceback" not in text:
            raise
        last = [line for line in text.splitlines() if line.strip()][-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        raise type(exc)(last[len(prefix):] if last.startswith(prefix) else last) from None
