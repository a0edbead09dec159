"""POCA variant (e) of the paper's Table X: one attention map per block, shared by all classes.

No second-level split: block ``n`` sees its ``C/N`` channels (first-level split) for both
embeddings. Its key embedding projects them to a single channel, ``A_n = softmax_L(K_n)`` of
shape ``(1, L)``, which weights the ``M`` value maps alike: ``y = sum_n sum_l A_n[l] V_n[:, l]``
-- attention that says *where*, but no longer *where for which class*. Parameters
``C + N + C*M + N*M`` (ResNet18: 11.69 M, as the paper's table).
"""

from __future__ import annotations

import torch
from torch import nn

from noah.head.catalog import POCAVariant, register_variant
from noah.head.layout import check_feature_map, init_projections, split_channels
from noah.head.plain import attention_from_keys

__all__ = ["SharedAttentionHead"]


class SharedAttentionHead(nn.Module):
    """``(B, C, H, W)`` to ``(B, num_classes)`` with one class-agnostic attention map per block.

    Parameters: ``query`` (grouped 1x1 conv, ``C -> N``) and ``value`` (grouped 1x1 conv,
    ``C -> N*M``, output channel ``n*M + m``); dropout on the value maps.
    """

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        split_channels(in_channels, num_heads, 0.5, head_split=True, kv_split=False)  # C % N == 0, or ConfigError
        self.in_channels, self.num_classes, self.num_heads = in_channels, num_classes, num_heads
        self.query = nn.Conv2d(in_channels, num_heads, 1, groups=num_heads)
        self.value = nn.Conv2d(in_channels, num_heads * num_classes, 1, groups=num_heads)
        self.dropout = nn.Dropout(dropout)
        init_projections(self.query, self.value)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``."""
        check_feature_map(x, self.in_channels, type(self).__name__)
        attention = attention_from_keys(self.query(x).flatten(2).unsqueeze(2), "positions")  # (B, N, 1, L)
        values = self.dropout(self.value(x).flatten(2).unflatten(1, (self.num_heads, self.num_classes)))
        return (attention * values).sum(dim=(1, 3))


def _build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float) -> nn.Module:
    return SharedAttentionHead(in_channels, num_classes, num_heads, dropout)


register_variant(POCAVariant("e", "no second-level split; one spatial attention map per block shared by all classes",
                             _build))
