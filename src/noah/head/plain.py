"""The ``"plain"`` implementation: the formula of SPEC §2 as written, the reference.

Grouped 1x1 convolutions (the ``query``/``value`` modules themselves), softmax over positions,
product and sum. Every other implementation is tested against it.
"""

from __future__ import annotations

from typing import Any

import torch

from noah.head.registry import HeadImpl, Maps, register_impl

__all__ = ["PlainImpl"]


class PlainImpl(HeadImpl):
    """Grouped convolutions, softmax, product, sum; dropout through the head's ``nn.Dropout``."""

    name = "plain"

    def logits_and_maps(self, head: Any, x: torch.Tensor) -> Maps:
        b, length = x.shape[0], x.shape[2] * x.shape[3]
        n, m = head.num_heads, head.num_classes
        if head.kv_split:
            x_key, x_value = x[:, : head.key_channels], x[:, head.key_channels :]
        else:
            x_key = x_value = x
        keys = head.query(x_key).reshape(b, n, m, length)
        values = head.dropout(head.value(x_value).reshape(b, n, m, length))
        attention = keys.softmax(dim=-1)
        logits = (attention * values).sum(dim=(1, 3))
        return logits, attention, values


register_impl(PlainImpl())
