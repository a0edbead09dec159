"""The training loader replays any epoch from any batch, with any number of workers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from noah.engine.distributed import DistEnv
from noah.engine.loaders import TrainLoader


class _RandomAugmented(Dataset):
    """Item i: its index plus draws from all three global RNGs (as augmentations make them)."""

    def __len__(self) -> int:
        return 22

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        noise = [random.random(), float(np.random.rand()), float(torch.rand(()))]
        return torch.tensor([float(index), *noise]), index


def _epoch(loader: TrainLoader, epoch: int, start: int = 0) -> list[torch.Tensor]:
    return [x for x, _ in loader.epoch(epoch, start)]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_replays_from_any_batch_with_the_same_samples_and_augmentation(workers: int) -> None:
    loader = TrainLoader(_RandomAugmented(), batch_size=4, workers=0, seed=3, env=DistEnv())
    other = TrainLoader(_RandomAugmented(), batch_size=4, workers=workers, seed=3, env=DistEnv())
    assert len(loader) == 5  # 22 // 4 full batches
    full = _epoch(loader, epoch=1)
    assert len(full) == 5 and all(b.shape == (4, 4) for b in full)
    rng_before = torch.get_rng_state()
    tail = _epoch(other, epoch=1, start=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading draws nothing from the trainer's RNG
    assert len(tail) == 2 and all(torch.equal(a, b) for a, b in zip(full[3:], tail))
    assert len(other) == 5  # a partial epoch does not change the epoch length
    assert not torch.equal(torch.cat(_epoch(loader, epoch=2)), torch.cat(full))  # a new order and new draws


def test_the_order_and_the_draws_depend_on_the_seed() -> None:
    a = torch.cat(_epoch(TrainLoader(_RandomAugmented(), 4, 0, seed=1, env=DistEnv()), 0))
    b = torch.cat(_epoch(TrainLoader(_RandomAugmented(), 4, 0, seed=2, env=DistEnv()), 0))
    assert not torch.equal(a[:, 0], b[:, 0]) and not torch.equal(a[:, 1:], b[:, 1:])
