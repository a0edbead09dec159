"""The ``"sa"`` head of the paper's Table XI: one self-attention layer over positions, GAP, FC.

Every position of the ``(B, C, H, W)`` feature map is a token. One single-head scaled
dot-product self-attention layer (``q, k, v = x W_q, x W_k, x W_v``, each ``C -> d`` with bias;
``softmax(q k^T / sqrt(d)) v``) mixes the tokens, global average pooling over the tokens gives a
``d``-vector, and a linear layer ``d -> M`` the logits (dropout before it, as in the GAP head).

The paper gives the linear layer 512 inputs on ResNet50 (C = 2048), so ``d = C/4`` by default.
Its 27.04 M for ResNet50 does not follow from the text: this reading has 27.17 M
(``3*(C*d + d) + d*M + M`` = 3.66 M on top of the 23.51 M backbone); the paper leaves out which
projections its layer has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noah.errors import ConfigError
from noah.head.catalog import HeadType, register_head_type
from noah.head.layout import check_feature_map

__all__ = ["SelfAttentionHead"]


class SelfAttentionHead(nn.Module):
    """Self-attention over positions, average pooling, linear: ``(B, C, H, W)`` to ``(B, M)``.

    Args:
        in_channels: ``C``.
        num_classes: ``M``.
        dim: ``d``, width of the attention layer and input of the linear layer (default ``C // 4``).
        dropout: dropout before the linear layer.

    Parameters: ``qkv`` (``nn.Linear(C, 3d)``: query, key and value rows in that order) and ``fc``.
    """

    def __init__(self, in_channels: int, num_classes: int, dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        dim = max(1, in_channels // 4) if dim is None else dim
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ConfigError(f"the self-attention head's dim must be a positive integer, got {dim!r}")
        self.in_channels, self.num_classes, self.dim = in_channels, num_classes, dim
        self.qkv = nn.Linear(in_channels, 3 * dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, dim={self.dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``."""
        check_feature_map(x, self.in_channels, type(self).__name__)
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (B, L, d)
        return self.fc(self.dropout(mixed.mean(dim=1)))


def _build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
           sa_dim: int | None = None) -> nn.Module:
    return SelfAttentionHead(in_channels, num_classes, sa_dim, dropout)


register_head_type(HeadType("sa", "one self-attention layer over positions, GAP, FC (the paper's Table XI)",
                            _build, ("sa_dim",), uses=("dropout",)))
