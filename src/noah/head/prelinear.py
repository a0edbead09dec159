"""POCA variant (f) of the paper's Table X: an extra linear layer before each embedding.

Each block's key group and value group first go through a 1x1 convolution of the same width
(``Ck/N -> Ck/N`` and ``Cv/N -> Cv/N``, with bias, no activation), then through the standard POCA
block. Per-block layers reproduce the paper's count for ResNet18 (11.73 M; full-width layers
would add 0.13 M instead of 0.03 M). The rest is the standard head applied to the transformed
features, so every implementation and kernel of :class:`~noah.head.NOAHHead` serves it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from noah.errors import ConfigError
from noah.head.catalog import NOAH_SWITCHES, POCAVariant, register_variant
from noah.head.layout import init_projections
from noah.head.module import NOAHHead, NOAHOutput

__all__ = ["PreLinearNOAHHead"]


class PreLinearNOAHHead(NOAHHead):
    """:class:`~noah.head.NOAHHead` with grouped 1x1 layers ``key_pre`` and ``value_pre`` in front
    of its key and value embeddings. Takes the same arguments; needs the second-level split (the
    two layers transform disjoint channel groups)."""

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 4, key_ratio: float = 0.5,
                 dropout: float = 0.0, **options: Any) -> None:
        if options.get("kv_split", True) is False:
            raise ConfigError("POCA variant (f) needs the second-level split (kv_split=True): its extra layers "
                              "transform the key and value channel groups separately")
        super().__init__(in_channels, num_classes, num_heads, key_ratio, dropout, **options)
        self.key_pre = nn.Conv2d(self.key_channels, self.key_channels, 1, groups=self.groups)
        self.value_pre = nn.Conv2d(self.value_channels, self.value_channels, 1, groups=self.groups)
        init_projections(self.key_pre, self.value_pre)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "key_pre"):  # NOAHHead.__init__ calls this before the layers exist
            init_projections(self.key_pre, self.value_pre)

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor | NOAHOutput:
        """As :meth:`NOAHHead.forward`, on the features after the two extra layers."""
        self._check_input(x)
        k = self.key_channels
        return super().forward(torch.cat([self.key_pre(x[:, :k]), self.value_pre(x[:, k:])], dim=1), return_maps)


def _build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
           **options: Any) -> nn.Module:
    return PreLinearNOAHHead(in_channels, num_classes, num_heads, key_ratio, dropout, **options)


register_variant(POCAVariant("f", "an extra per-block 1x1 layer of the same width before the key and the value "
                             "embeddings", _build, NOAH_SWITCHES))
