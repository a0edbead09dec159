"""The NOAH head: pairwise object category attention (POCA) over a feature map.

For a feature map ``X`` with ``C`` channels at ``L = H*W`` positions, ``M`` classes, ``N`` POCA
blocks and key ratio ``r`` (SPEC §2):

* the first ``Ck = int(C*r)`` channels feed the key embedding, the other ``Cv = C - Ck`` the
  value embedding (second-level split);
* each part is cut into ``N`` equal consecutive channel groups (first-level split);
* block ``n`` projects its key group to ``K_n`` (``M x L``) and its value group to ``V_n``
  (``M x L``), both 1x1 projections with bias;
* ``A_n = softmax_L(K_n)``; the logits are ``y = sum_n sum_l A_n[:, l] * V_n[:, l]``.

The parameters live in two grouped 1x1 ``Conv2d`` modules named ``query`` (key embedding) and
``value``, exactly as in the official checkpoints (output channel ``n*M + m``), so released
weights load unchanged. How the forward pass uses them is an implementation detail.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from noah.errors import ConfigError, ShapeError

__all__ = ["NOAHHead", "NOAHOutput", "split_channels"]


class NOAHOutput(NamedTuple):
    """What :meth:`NOAHHead.forward` returns with ``return_maps=True``.

    ``logits`` is ``(B, M)``; ``attention`` and ``value`` are ``(B, N, M, H, W)``: per POCA block,
    the softmax attention over positions and the value map (after dropout, as used).
    """

    logits: torch.Tensor
    attention: torch.Tensor
    value: torch.Tensor


def _valid_head_counts(key_channels: int, value_channels: int, limit: int = 64) -> list[int]:
    return [n for n in range(1, limit + 1) if key_channels % n == 0 and value_channels % n == 0]


def split_channels(
    in_channels: int, num_heads: int, key_ratio: float, head_split: bool = True, kv_split: bool = True
) -> tuple[int, int, int, int]:
    """Work out the channel split of a NOAH head, or raise :class:`ConfigError`.

    Returns ``(key_channels, value_channels, key_group, value_group)``: how many input channels go
    to the key and value embeddings, and how many of them one POCA block's projection sees.
    """
    for name, value in (("in_channels", in_channels), ("num_heads", num_heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if kv_split:
        if not 0.0 < float(key_ratio) < 1.0:
            raise ConfigError(f"key_ratio must lie strictly between 0 and 1, got {key_ratio!r} (the paper uses 1/2, 1/4 or 1/8)")
        key_channels = int(in_channels * key_ratio)
        value_channels = in_channels - key_channels
        if key_channels == 0 or value_channels == 0:
            raise ConfigError(
                f"key_ratio={key_ratio} splits {in_channels} channels into {key_channels} key and "
                f"{value_channels} value channels; both must be at least 1 (try key_ratio=0.5)"
            )
    else:
        key_channels = value_channels = in_channels
    if not head_split:
        return key_channels, value_channels, key_channels, value_channels
    if key_channels % num_heads or value_channels % num_heads:
        valid = _valid_head_counts(key_channels, value_channels)
        raise ConfigError(
            f"num_heads={num_heads} does not divide the {key_channels} key and {value_channels} value "
            f"channels (in_channels={in_channels}, key_ratio={key_ratio}); valid num_heads: {valid}"
        )
    return key_channels, value_channels, key_channels // num_heads, value_channels // num_heads


class NOAHHead(nn.Module):
    """Non-glObal Attentive Head: ``(B, C, H, W)`` features to ``(B, num_classes)`` logits.

    Args:
        in_channels: ``C``, channels of the feature map.
        num_classes: ``M``.
        num_heads: ``N``, the number of POCA blocks.
        key_ratio: ``r``, share of the channels that feed the key embedding.
        dropout: dropout rate applied to the value maps during training.
        head_split: first-level split; ``False`` lets every block see all key/value channels.
        kv_split: second-level split; ``False`` feeds all ``C`` channels to both embeddings.
        impl: ``"fast"`` (batched matmuls over a channels-last copy) or ``"plain"`` (grouped
            ``conv2d`` as written in the paper). Both give the same numbers; see ``set_impl``.
    """

    IMPLS = ("fast", "plain")

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_heads: int = 4,
        key_ratio: float = 0.5,
        dropout: float = 0.0,
        head_split: bool = True,
        kv_split: bool = True,
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}")
        key_channels, value_channels, key_group, value_group = split_channels(
            in_channels, num_heads, key_ratio, head_split, kv_split
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.key_ratio = float(key_ratio)
        self.head_split = head_split
        self.kv_split = kv_split
        self.key_channels = key_channels
        self.value_channels = value_channels
        groups = num_heads if head_split else 1
        out = num_heads * num_classes
        self.query = nn.Conv2d(key_channels, out, kernel_size=1, groups=groups, bias=True)
        self.value = nn.Conv2d(value_channels, out, kernel_size=1, groups=groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.impl = "fast"
        self.set_impl(impl)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_out) weights, zero biases."""
        for conv in (self.query, self.value):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def set_impl(self, impl: str) -> "NOAHHead":
        """Choose the forward implementation (``"fast"`` or ``"plain"``); returns ``self``."""
        if impl not in self.IMPLS:
            raise ConfigError(f"unknown NOAH head impl {impl!r}; expected one of {', '.join(self.IMPLS)}")
        self.impl = impl
        return self

    @property
    def groups(self) -> int:
        return self.num_heads if self.head_split else 1

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
            f"key_ratio={self.key_ratio}, head_split={self.head_split}, kv_split={self.kv_split}, impl={self.impl!r}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ShapeError(
                f"NOAHHead expects a feature map of shape (B, C, H, W) with C={self.in_channels}, "
                f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"NOAHHead expects {self.in_channels} input channels (B, C, H, W), got {x.shape[1]} "
                f"in a tensor of shape {tuple(x.shape)}"
            )

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.kv_split:
            return x, x
        return x[:, : self.key_channels], x[:, self.key_channels :]

    def _logits_and_maps_plain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The formula as written: grouped 1x1 convolutions, softmax, product, sum.

        Returns logits ``(B, M)`` and attention/value maps ``(B, N, M, L)``.
        """
        b = x.shape[0]
        n, m = self.num_heads, self.num_classes
        x_key, x_value = self._inputs(x)
        keys = self.query(x_key).reshape(b, n, m, -1)
        values = self.dropout(self.value(x_value).reshape(b, n, m, -1))
        attention = keys.softmax(dim=-1)
        logits = (attention * values).sum(dim=(1, 3))
        return logits, attention, values

    def _project(self, conv: nn.Conv2d, x_cl: torch.Tensor) -> torch.Tensor:
        """Apply a (grouped) 1x1 conv to ``x_cl`` laid out ``(G, c, B*L)``; returns ``(N*M, B*L)``."""
        groups = self.groups
        weight = conv.weight.reshape(groups, -1, x_cl.shape[1])  # (G, N*M/G, c)
        bias = conv.bias.reshape(groups, -1, 1)
        return torch.baddbmm(bias, weight, x_cl).reshape(self.num_heads * self.num_classes, -1)

    def _logits_and_maps_fast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Same numbers as the plain path, computed as batched matmuls over ``(G, c, B*L)``.

        The outputs are laid out ``(N, M, B, L)`` so that the softmax and the sum run over the
        contiguous last axis. Returns logits ``(B, M)`` and maps ``(B, N, M, L)`` (views).
        """
        b, _, h, w = x.shape
        n, m, g, length = self.num_heads, self.num_classes, self.groups, h * w
        # (B, C, L) -> (C, B*L): one copy that both embeddings read from
        x_cl = x.reshape(b, -1, length).transpose(0, 1).reshape(x.shape[1], b * length)
        if self.kv_split:
            x_key, x_value = x_cl[: self.key_channels], x_cl[self.key_channels :]
        else:
            x_key = x_value = x_cl
        keys = self._project(self.query, x_key.reshape(g, -1, b * length)).reshape(n, m, b, length)
        values = self._project(self.value, x_value.reshape(g, -1, b * length)).reshape(n, m, b, length)
        values = self.dropout(values)
        attention = keys.softmax(dim=-1)
        logits = (attention * values).sum(dim=-1).sum(dim=0).t()
        return logits, attention.permute(2, 0, 1, 3), values.permute(2, 0, 1, 3)

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor | NOAHOutput:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``.

        With ``return_maps=True``, a :class:`NOAHOutput` that also holds the attention and value
        maps ``(B, N, M, H, W)`` of the same pass.
        """
        self._check_input(x)
        if self.impl == "plain":
            logits, attention, values = self._logits_and_maps_plain(x)
        else:
            logits, attention, values = self._logits_and_maps_fast(x)
        if not return_maps:
            return logits
        shape = (x.shape[0], self.num_heads, self.num_classes, x.shape[2], x.shape[3])
        return NOAHOutput(logits, attention.reshape(shape), values.reshape(shape))
