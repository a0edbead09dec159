"""POCA variants (a) and (b) of the paper's Table X: POCA to ``M'`` channels, then a linear layer.

Both project each block's key and value groups to ``M'`` channels instead of the ``M`` classes
(the attention and the local POCA maps become ``(B, N, M', L)``) and add a linear layer to the
classes:

* (a) ``y = FC(sum_n sum_l A_n * V_n)``: the global POCA vector (``M'``) to ``M`` classes;
* (b) ``y = FC([sum_l A_1 * V_1, ..., sum_l A_N * V_N])``: each block summed over positions on
  its own, the ``N`` vectors concatenated (``N*M'``) to ``M`` classes.

The paper does not state ``M'``. The default is the width that reproduces its parameter counts
for ResNet18 (C=512, M=1000, N=4, r=1/2): ``M' = C`` for (a) (11.96 M) and ``M' = C/N`` for (b)
(11.76 M) -- in both the linear layer then takes ``C`` inputs, like the GAP baseline's. With few
classes (``M < C``) that "reduction" is a widening; ``key_width`` sets ``M'`` explicitly.
"""

from __future__ import annotations

import torch
from torch import nn

from noah.errors import ConfigError
from noah.head.catalog import POCAVariant, register_variant
from noah.head.layout import check_feature_map, init_projections, split_channels
from noah.head.plain import attention_from_keys

__all__ = ["ReducedPOCAHead"]


class ReducedPOCAHead(nn.Module):
    """POCA blocks of width ``M'`` plus a linear layer: ``(B, C, H, W)`` to ``(B, num_classes)``.

    Args:
        in_channels, num_classes, num_heads, key_ratio, dropout: as for :class:`~noah.head.NOAHHead`
            (both feature splits on; dropout on the value maps).
        key_width: ``M'``; ``None``: ``C`` (variant (a)) or ``C / N`` (variant (b)).
        concat: ``False`` for variant (a) (blocks summed, FC ``M' -> M``), ``True`` for (b)
            (blocks concatenated, FC ``N*M' -> M``).

    Parameters: ``query``/``value`` grouped 1x1 convs (``N*M'`` outputs, block-major) and ``fc``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_heads: int = 4,
        key_ratio: float = 0.5,
        dropout: float = 0.0,
        key_width: int | None = None,
        concat: bool = False,
    ) -> None:
        super().__init__()
        key_channels, value_channels, _, _ = split_channels(in_channels, num_heads, key_ratio)
        if key_width is None:
            key_width = max(1, in_channels // num_heads) if concat else in_channels
        if not isinstance(key_width, int) or isinstance(key_width, bool) or key_width <= 0:
            raise ConfigError(f"key_width must be a positive integer, got {key_width!r}")
        self.in_channels, self.num_classes, self.num_heads = in_channels, num_classes, num_heads
        self.key_ratio, self.key_channels = float(key_ratio), key_channels
        self.key_width, self.concat = key_width, concat
        self.query = nn.Conv2d(key_channels, num_heads * key_width, 1, groups=num_heads)
        self.value = nn.Conv2d(value_channels, num_heads * key_width, 1, groups=num_heads)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_heads * key_width if concat else key_width, num_classes)
        init_projections(self.query, self.value)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
                f"key_ratio={self.key_ratio}, key_width={self.key_width}, concat={self.concat}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``."""
        check_feature_map(x, self.in_channels, type(self).__name__)
        shape = (self.num_heads, self.key_width)
        keys = self.query(x[:, : self.key_channels]).flatten(2).unflatten(1, shape)  # (B, N, M', L)
        values = self.dropout(self.value(x[:, self.key_channels :]).flatten(2).unflatten(1, shape))
        pooled = (attention_from_keys(keys, "positions") * values).sum(dim=-1)  # (B, N, M')
        return self.fc(pooled.flatten(1) if self.concat else pooled.sum(dim=1))


def _variant(concat: bool):
    def build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
              key_width: int | None = None) -> nn.Module:
        return ReducedPOCAHead(in_channels, num_classes, num_heads, key_ratio, dropout, key_width, concat)

    return build


register_variant(POCAVariant("a", "key and value embeddings to M' channels, blocks summed, then an FC to M",
                             _variant(concat=False), ("key_width",)))
register_variant(POCAVariant("b", "key and value embeddings to M' channels, blocks concatenated, then an FC to M",
                             _variant(concat=True), ("key_width",)))
