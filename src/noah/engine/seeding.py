"""Seeds for reproducible runs: every random draw of a run is a function of ``(seed, epoch, ...)``.

* :func:`epoch_seed` -- the seed of one epoch on one rank (shuffling, dropout, Mixup);
* :func:`sample_seed` -- the seed of one training sample's augmentation in one epoch, so that a
  sample is augmented the same way whichever DataLoader worker loads it and whether or not the
  epoch was resumed half-way;
* :func:`isolated_rng` -- run code under a seed without disturbing the process's RNG streams.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

__all__ = ["epoch_seed", "sample_seed", "seed_everything", "isolated_rng", "set_deterministic"]


def _derive(*entropy: int) -> int:
    """A 63-bit seed derived from a tuple of non-negative integers; same tuple, same seed."""
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of ``epoch`` (``-1``: set-up) on ``rank`` of a run seeded with ``seed``."""
    return _derive(seed, epoch + 1, rank)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of dataset item ``index``'s augmentation in ``epoch`` (independent of the rank
    and the worker that loads it)."""
    return _derive(seed, epoch + 1, index, 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Within the block the global RNGs (Python, NumPy, torch CPU) are seeded with ``seed``; after
    it they continue exactly where they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (needed for bit-exact reruns; GPUs also need CUBLAS_WORKSPACE_CONFIG)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.cuda.is_available()
