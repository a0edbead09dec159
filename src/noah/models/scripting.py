"""A TorchScript stand-in for the NOAH head.

:class:`~noah.head.NOAHHead` picks among kernels at run time (compiled code, autograd functions,
chunked loops), which ``torch.jit.script`` cannot compile. :class:`ScriptablePOCA` shares the
head's parameters and computes the head's reference formula (its ``"plain"`` implementation:
grouped 1x1 convolutions, softmax over positions, product, sum), so a scripted model gives the
same numbers. :meth:`NOAHModel.__prepare_scriptable__ <noah.models.adapter.NOAHModel.__prepare_scriptable__>`
puts it in place when a model is scripted.
"""


import torch
from torch import nn

from noah.head import NOAHHead

__all__ = ["ScriptablePOCA"]


class ScriptablePOCA(nn.Module):
    """POCA logits ``(B, M)`` of a ``(B, C, H, W)`` map, with the parameters of ``head``.

    The ``query``/``value`` convolutions and the dropout are ``head``'s own modules (shared, not
    copied), so state-dict keys and values are those of the head.
    """

    num_heads: torch.jit.Final[int]
    num_classes: torch.jit.Final[int]
    key_channels: torch.jit.Final[int]
    kv_split: torch.jit.Final[bool]

    def __init__(self, head: NOAHHead) -> None:
        super().__init__()
        self.query = head.query
        self.value = head.value
        self.dropout = head.dropout
        self.num_heads = head.num_heads
        self.num_classes = head.num_classes
        self.key_channels = head.key_channels
        self.kv_split = head.kv_split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length = x.shape[0], x.shape[2] * x.shape[3]
        x_key, x_value = (x[:, : self.key_channels], x[:, self.key_channels :]) if self.kv_split else (x, x)
        keys = self.query(x_key).reshape(b, self.num_heads, self.num_classes, length)
        values = self.dropout(self.value(x_value).reshape(b, self.num_heads, self.num_classes, length))
        return (keys.softmax(dim=-1) * values).sum(dim=(1, 3))
