"""What the head's implementations share: the channel split and the operands built from it.

* :func:`split_channels` -- SPEC §2's two-level split of the ``C`` input channels, validated;
* :func:`channels_last_features` and :func:`block_inputs` -- the feature map as ``(B*L, c)``
  key/value matrices and their per-block ``(N, B*L, c/N)`` matmul operands (views, no copies
  where the input layout allows);
* :class:`Projection` -- the ``query``/``value`` conv parameters as per-block matrices;
* :func:`autocast_operands` -- those operands for a custom autograd function, autocast applied;
* :func:`dropout_rate`, :func:`dropout_seed`, :func:`graph_mode`, :func:`dispatch_mode_active` --
  the facts about a call that decide which path may run, and the seed of self-drawn masks;
* :func:`check_feature_map` -- the one-line error every head gives for an input of the wrong shape;
* :func:`init_projections` -- the official initialisation of POCA projections.

Implementations get the head module itself and read its attributes (``num_heads``,
``num_classes``, ``head_split``, ``kv_split``, ``key_channels``, ``query``, ``value``,
``dropout``, ``training``, ``chunk_elements``); nothing here imports the module.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils import _python_dispatch

from noah.errors import ConfigError, ShapeError

__all__ = [
    "LOG2E", "split_channels", "Projection", "projection", "channels_last_features", "block_inputs",
    "autocast_operands", "dropout_rate", "dropout_seed", "graph_mode", "dispatch_mode_active", "check_feature_map",
    "init_projections",
]

#: the paths that skip the max pass exponentiate base 2: keys are scaled by log2(e)
LOG2E = math.log2(math.e)


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


class Projection(NamedTuple):
    """The head's parameters as per-block matmul operands (views of the conv parameters).

    ``wk``/``wv`` are ``(N, M, ck)``/``(N, M, cv)``, ``bk``/``bv`` are ``(N, M)``.
    """

    wk: torch.Tensor
    bk: torch.Tensor
    wv: torch.Tensor
    bv: torch.Tensor


def projection(head: Any) -> Projection:
    """The ``query``/``value`` parameters of ``head`` as a :class:`Projection` (views, autograd
    flows through them)."""
    n, m = head.num_heads, head.num_classes
    return Projection(
        head.query.weight.view(n, m, -1), head.query.bias.view(n, m),
        head.value.weight.view(n, m, -1), head.value.bias.view(n, m),
    )


def channels_last_features(head: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value features of ``x`` ``(B, C, H, W)`` as ``(B*L, Ck)``/``(B*L, Cv)`` matrices
    over one channels-last view of ``x`` (free for channels_last inputs and for ``B == 1``, else
    one copy). Without the second-level split both are the whole ``(B*L, C)`` matrix."""
    b, c, h, w = x.shape
    if b == 1:
        x2d = x.reshape(c, h * w).t()
    elif x.is_contiguous(memory_format=torch.channels_last):
        x2d = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view
    else:
        # (B, C, L) -> (B, L, C): this 3-d transpose copies ~5x faster than a 4-d permute
        x2d = x.reshape(b, c, h * w).transpose(1, 2).contiguous().view(b * h * w, c)
    if not head.kv_split:
        return x2d, x2d
    return x2d[:, : head.key_channels], x2d[:, head.key_channels :]


def block_inputs(x2d: torch.Tensor, num_heads: int, head_split: bool) -> torch.Tensor:
    """``(R, c)`` features to the ``(N, R, c/N)`` per-block matmul operand (a view).

    Without the first-level split every block sees all ``c`` channels (a stride-0 expand).
    """
    if head_split:
        return x2d.unflatten(1, (num_heads, -1)).transpose(0, 1)
    return x2d.unsqueeze(0).expand(num_heads, -1, -1)


def autocast_operands(head: Any, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], bool]:
    """The operands ``(xk, xv, wk, bk, wv, bv)`` of a custom autograd function over ``x``
    (:func:`channels_last_features` and :func:`projection`), cast to the autocast dtype under
    autocast; and whether autocast is on (the function then runs with autocast off)."""
    xk, xv = channels_last_features(head, x)
    tensors = (xk, xv, *projection(head))
    autocast = torch.is_autocast_enabled(x.device.type)
    if autocast:
        dtype = torch.get_autocast_dtype(x.device.type)
        tensors = tuple(t.to(dtype) for t in tensors)
    return tensors, autocast


def dropout_seed() -> int:
    """A seed for dropout masks drawn from torch's global (CPU) RNG, so ``torch.manual_seed``
    reproduces the masks of the paths that draw their own."""
    return int(torch.randint(0, 2**62, (), device="cpu"))


def dropout_rate(head: Any) -> float:
    """The dropout rate applied to the value maps in this call: ``head.dropout.p`` in training
    mode, else 0."""
    return head.dropout.p if head.training else 0.0


def graph_mode() -> bool:
    """True while tracing for ``torch.compile``, ``torch.export``/ONNX or TorchScript."""
    # the TorchScript-based ONNX exporter traces, the dynamo-based one compiles
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()


def dispatch_mode_active() -> bool:
    """True under a TorchDispatchMode (FlopCounterMode, FakeTensorMode, ...): such a mode has to
    see every op, which a compiled kernel would hide from it."""
    return bool(getattr(_python_dispatch, "is_in_torch_dispatch_mode", lambda: False)())


def check_feature_map(x: torch.Tensor, in_channels: int, head: str) -> None:
    """:class:`ShapeError` unless ``x`` is a ``(B, C, H, W)`` map with ``C == in_channels``;
    ``head`` names the head in the message."""
    if x.dim() != 4:
        raise ShapeError(
            f"{head} expects a feature map of shape (B, C, H, W) with C={in_channels}, "
            f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ShapeError(
            f"{head} expects {in_channels} input channels (B, C, H, W), got {x.shape[1]} "
            f"in a tensor of shape {tuple(x.shape)}"
        )


def init_projections(*convs: nn.Conv2d) -> None:
    """The official initialisation of POCA projections: Kaiming-normal (fan_out) weights, zero biases."""
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
