"""The ``"csra"`` head: class-specific residual attention (Zhu and Wu, ICCV 2021), NOAH's closest
published relative and a multi-label baseline.

Each of ``H`` heads has a bias-free 1x1 classifier ``w_m`` per class; its class scores at every
position are ``s_m[l] = w_m . x_l / ||w_m||``. A head's logit adds to the class-agnostic average
``mean_l s_m`` a class-specific attention term weighted by ``lambda``:
``sum_l softmax_l(T s_m)[l] * s_m[l]`` at temperature ``T``, or ``max_l s_m`` for ``T = inf``.
The heads' logits are summed. The temperatures are CSRA's own for ``H`` = 1, 2, 4, 6, 8
(:data:`TEMPERATURES`); ``lambda = 0.1`` and one head are the defaults of its official code.
Unlike NOAH, the attention comes from the same scores it weights (no separate key embedding).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from noah.errors import ConfigError
from noah.head.catalog import HeadType, register_head_type
from noah.head.layout import check_feature_map

__all__ = ["CSRAHead", "TEMPERATURES"]

#: heads -> the temperature of each head (``inf``: max pooling), as in the CSRA paper
TEMPERATURES: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (1.0, math.inf),
    4: (1.0, 2.0, 4.0, math.inf),
    6: (1.0, 2.0, 3.0, 4.0, 5.0, math.inf),
    8: (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf),
}


class CSRAHead(nn.Module):
    """Class-specific residual attention: ``(B, C, H, W)`` to ``(B, num_classes)``.

    Args:
        in_channels: ``C``.
        num_classes: ``M``.
        num_heads: ``H``, one of 1, 2, 4, 6, 8 (each with CSRA's temperatures).
        lam: ``lambda``, weight of the attention term (> 0).

    Parameters: ``classifier``, a bias-free 1x1 conv ``C -> H*M`` (output channel ``h*M + m``).
    """

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 1, lam: float = 0.1) -> None:
        super().__init__()
        if num_heads not in TEMPERATURES:
            raise ConfigError(f"CSRA has temperatures for {', '.join(map(str, TEMPERATURES))} heads, got {num_heads!r}")
        if not float(lam) > 0.0:
            raise ConfigError(f"CSRA's lambda must be positive, got {lam!r}")
        self.in_channels, self.num_classes, self.num_heads, self.lam = in_channels, num_classes, num_heads, float(lam)
        self.temperatures = TEMPERATURES[num_heads]
        self.classifier = nn.Conv2d(in_channels, num_heads * num_classes, 1, bias=False)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
                f"lam={self.lam}, temperatures={self.temperatures}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``."""
        check_feature_map(x, self.in_channels, type(self).__name__)
        norms = self.classifier.weight.flatten(1).norm(dim=1)  # (H*M,)
        scores = (self.classifier(x).flatten(2) / norms[:, None]).unflatten(1, (self.num_heads, self.num_classes))
        logits = scores.mean(dim=-1).sum(dim=1)  # the class-agnostic part of every head
        for h, temperature in enumerate(self.temperatures):
            s = scores[:, h]  # (B, M, L)
            attended = s.amax(dim=-1) if math.isinf(temperature) else (s * (s * temperature).softmax(dim=-1)).sum(-1)
            logits = logits + self.lam * attended
        return logits


def _build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
           csra_heads: int = 1, csra_lambda: float = 0.1) -> nn.Module:
    return CSRAHead(in_channels, num_classes, csra_heads, csra_lambda)  # no dropout: CSRA has none


register_head_type(HeadType("csra", "class-specific residual attention (CSRA, multi-label baseline) with its "
                            "multi-head temperatures", _build, ("csra_heads", "csra_lambda"), uses=()))
