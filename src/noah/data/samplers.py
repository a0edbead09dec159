"""Class-balanced sampling for long-tailed training sets."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from noah.errors import DataError

__all__ = ["class_balanced_sampler", "class_balanced_weights"]


def class_balanced_weights(labels: Sequence[int]) -> torch.Tensor:
    """``(N,)`` float64 weights ``1 / (images of the sample's class)``: every class is drawn
    equally often, whatever its size."""
    if len(labels) == 0:
        raise DataError("class-balanced sampling needs a non-empty training set")
    counts = Counter(int(label) for label in labels)
    return torch.tensor([1.0 / counts[int(label)] for label in labels], dtype=torch.float64)


def class_balanced_sampler(
    labels: Sequence[int], num_samples: int | None = None, generator: torch.Generator | None = None
) -> WeightedRandomSampler:
    """A sampler drawing ``num_samples`` (default: ``len(labels)``, one epoch) indices with
    replacement, each class with the same probability, uniformly within a class.

    Seed ``generator`` per epoch for reproducible draws. One process only: under DDP every rank
    would need the same generator seed and a disjoint share of the draws.
    """
    weights = class_balanced_weights(labels)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)
