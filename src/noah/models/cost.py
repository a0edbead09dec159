"""What a model costs to run: multiply-adds of one forward pass (parameters: ``count_parameters``)."""

from __future__ import annotations

import torch

__all__ = ["count_macs"]


def count_macs(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``model`` on ``example`` (torch's FLOP counter;
    MACs = FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return counter.get_total_flops() // 2
