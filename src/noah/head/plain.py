"""The ``"plain"`` implementation: the formula of SPEC §2 as written, the reference.

Grouped convolutions (the ``query``/``value`` modules themselves), softmax over positions,
product and sum. Every other implementation is tested against it. It also computes the ablation
switches of :class:`~noah.head.NOAHHead` (``attention``, ``merge``, ``kernel_size``: the heads
that are not ``is_standard``), which no other path handles.
"""

from __future__ import annotations

from typing import Any

import torch

from noah.head.registry import HeadImpl, Maps, register_impl

__all__ = ["PlainImpl", "attention_from_keys", "pool_positions"]


def attention_from_keys(keys: torch.Tensor, attention: str) -> torch.Tensor:
    """Attention from key logits ``(B, N, M, L)``: softmax over the positions (``"positions"``,
    the standard), over the classes (``"classes"``) or an element-wise sigmoid (``"sigmoid"``)."""
    if attention == "positions":
        return keys.softmax(dim=-1)
    if attention == "classes":
        return keys.softmax(dim=-2)
    return keys.sigmoid()


def pool_positions(local: torch.Tensor, merge: str) -> torch.Tensor:
    """Reduce local POCA maps ``(..., L)`` over the positions: ``"sum"`` (standard), ``"avg"``
    or ``"max"``."""
    if merge == "sum":
        return local.sum(dim=-1)
    if merge == "avg":
        return local.mean(dim=-1)
    return local.amax(dim=-1)


class PlainImpl(HeadImpl):
    """Grouped convolutions, softmax, product, sum; dropout through the head's ``nn.Dropout``."""

    name = "plain"

    def logits_and_maps(self, head: Any, x: torch.Tensor) -> Maps:
        n, m = head.num_heads, head.num_classes
        if head.kv_split:
            x_key, x_value = x[:, : head.key_channels], x[:, head.key_channels :]
        else:
            x_key = x_value = x
        keys = head.query(x_key).flatten(2).unflatten(1, (n, m))  # (B, N, M, L)
        values = head.dropout(head.value(x_value).flatten(2).unflatten(1, (n, m)))
        attention = attention_from_keys(keys, head.attention)
        logits = pool_positions(attention * values, head.merge).sum(dim=1)
        return logits, attention, values


register_impl(PlainImpl())
