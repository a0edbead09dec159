"""The NOAH head module: parameters, configuration and the forward pass's dispatch.

:class:`NOAHHead` holds the parameters in two grouped 1x1 ``Conv2d`` modules named ``query`` (key
embedding) and ``value``, exactly as in the official checkpoints (output channel ``n*M + m``), so
released weights load unchanged. It validates its configuration and its input, and hands the
computation to the implementation chosen by name (:meth:`NOAHHead.set_impl`; see
:mod:`noah.head.registry`).

The ablation switches of the paper's Tables VIII-X (``attention``, ``merge``, ``kernel_size``)
change the formula; a head with any of them off its standard value (:attr:`NOAHHead.is_standard`
is false) is always computed by the reference ``"plain"`` path, so the faster implementations and
their logits kernels only ever see the standard head.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from noah.errors import ConfigError
from noah.head.layout import check_feature_map, init_projections, split_channels
from noah.head.registry import available_impls, get_impl

__all__ = ["NOAHHead", "NOAHOutput", "ATTENTIONS", "MERGES"]

#: how the key logits become attention (Tables VIII and X(c)): softmax over the positions
#: (standard), softmax over the classes at each position, or an independent sigmoid per element
ATTENTIONS = ("positions", "classes", "sigmoid")
#: how a block's local POCA map becomes its logits over the positions (Table IX): sum (standard),
#: average or maximum; the blocks' results are always summed
MERGES = ("sum", "avg", "max")


class NOAHOutput(NamedTuple):
    """What :meth:`NOAHHead.forward` returns with ``return_maps=True``.

    ``logits`` is ``(B, M)``; ``attention`` and ``value`` are ``(B, N, M, H, W)``: per POCA block,
    the softmax attention over positions and the value map (after dropout, as used).
    """

    logits: torch.Tensor
    attention: torch.Tensor
    value: torch.Tensor


class _RegisteredImpls:
    """``NOAHHead.IMPLS``: the names of the registered implementations, read at each access."""

    def __get__(self, obj: object, owner: type | None = None) -> tuple[str, ...]:
        return available_impls()


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
        attention: ``"positions"`` (standard: softmax over positions), ``"classes"`` (softmax over
            the classes at each position, Table VIII) or ``"sigmoid"`` (POCA variant (c), Table X).
        merge: how each block's local POCA map ``A * V`` is reduced over the positions:
            ``"sum"`` (standard), ``"avg"`` or ``"max"`` (Table IX); blocks are then summed.
        kernel_size: spatial size of the key and value projections: 1 (standard) or an odd
            ``k`` with ``k // 2`` zero padding (3 is POCA variant (d), Table X).
        impl: ``"fast"`` (default), ``"plain"``, ``"lean"`` or another registered
            implementation (:func:`noah.head.available_impls`); all give the same numbers, see
            :meth:`set_impl`.
        chunk_elements: working-set size, in map elements, of one chunk of the chunked paths
            (``"fast"`` CPU inference through PyTorch ops, and ``"lean"``; the compiled kernel
            blocks its work by itself); only speed and peak memory depend on it. ``None``: each
            path's default (:data:`noah.head.fast.INFERENCE_CHUNK`, :data:`noah.head.lean.LEAN_CHUNK`).
    """

    #: names of the registered implementations (:func:`noah.head.available_impls`), e.g. for CLI choices
    IMPLS = _RegisteredImpls()

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
        chunk_elements: int | None = None,
        attention: str = "positions",
        merge: str = "sum",
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}")
        if chunk_elements is not None and (not isinstance(chunk_elements, int) or chunk_elements <= 0):
            raise ConfigError(f"chunk_elements must be a positive integer, got {chunk_elements!r}")
        if attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        if merge not in MERGES:
            raise ConfigError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer (1 is the standard head), got {kernel_size!r}")
        key_channels, value_channels, _, _ = split_channels(in_channels, num_heads, key_ratio, head_split, kv_split)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.key_ratio = float(key_ratio)
        self.head_split = head_split
        self.kv_split = kv_split
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.chunk_elements = chunk_elements
        self.attention = attention
        self.merge = merge
        self.kernel_size = kernel_size
        out = num_heads * num_classes
        pad = kernel_size // 2
        self.query = nn.Conv2d(key_channels, out, kernel_size, padding=pad, groups=self.groups, bias=True)
        self.value = nn.Conv2d(value_channels, out, kernel_size, padding=pad, groups=self.groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.set_impl(impl)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_out) weights, zero biases."""
        init_projections(self.query, self.value)

    def set_impl(self, impl: str) -> "NOAHHead":
        """Choose the implementation by its registered name (``"fast"``, ``"plain"``, ``"lean"``,
        ...; :func:`noah.head.available_impls`); returns ``self``.

        ``"plain"`` is the reference formula, ``"fast"`` the quick one, ``"lean"`` the fast one
        with a training backward that keeps no ``(B, N, M, L)`` activations (recomputes them in
        class chunks; slower backward, a fraction of the memory). On float32 CPU tensors
        ``"fast"`` trains through a compiled forward + backward that keeps no maps either
        (:mod:`noah.head.cpu_train`). Only how dropout masks are drawn differs: ``"fast"``'s
        PyTorch path draws the same mask as ``"plain"`` for the same seed, its compiled kernel
        and ``"lean"`` draw their own (same distribution). While traced by ``torch.compile``,
        ``torch.export`` or the ONNX exporter, ``"fast"`` and ``"lean"`` both use the explicit
        matmul + softmax formulation (one graph, no Python loop; Inductor fuses it).

        The choice is kept but not used while the head is not :attr:`is_standard`: ablation
        switches are computed by ``"plain"`` alone.
        """
        get_impl(impl)  # an unknown name is a ConfigError listing the registered ones
        self.impl = impl
        return self

    @property
    def groups(self) -> int:
        return self.num_heads if self.head_split else 1

    @property
    def is_standard(self) -> bool:
        """True unless an ablation switch (``attention``, ``merge``, ``kernel_size``) changes the
        formula; only standard heads reach the implementation chosen by :meth:`set_impl` and its
        logits kernels (both splits on or off are standard: every implementation handles them)."""
        return self.attention == "positions" and self.merge == "sum" and self.kernel_size == 1

    def extra_repr(self) -> str:
        text = (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
            f"key_ratio={self.key_ratio}, head_split={self.head_split}, kv_split={self.kv_split}, impl={self.impl!r}"
        )
        if not self.is_standard:
            text += f", attention={self.attention!r}, merge={self.merge!r}, kernel_size={self.kernel_size}"
        return text

    def _check_input(self, x: torch.Tensor) -> None:
        check_feature_map(x, self.in_channels, type(self).__name__)

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor | NOAHOutput:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``.

        With ``return_maps=True``, a :class:`NOAHOutput` that also holds the attention and value
        maps ``(B, N, M, H, W)`` of the same pass.
        """
        self._check_input(x)
        if not self.is_standard:  # ablation switches: the reference path, never a kernel
            logits, attention, values = get_impl("plain").logits_and_maps(self, x)
            if not return_maps:
                return logits
        else:
            impl = get_impl(self.impl)
            if not return_maps:
                return impl.logits(self, x)
            logits, attention, values = impl.logits_and_maps(self, x)
        shape = (x.shape[0], self.num_heads, self.num_classes, x.shape[2], x.shape[3])
        return NOAHOutput(logits, attention.reshape(shape), values.reshape(shape))
