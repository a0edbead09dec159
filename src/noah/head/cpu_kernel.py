"""The ``"cpu_fused"`` kernel: float32 CPU inference logits by the compiled ``noah._poca``.

``noah._poca`` (``src/noah/csrc/poca.c``, built by ``pip install``) computes float32 NOAH logits
in one pass: both matmuls, the softmax over positions, the product and the sums, without writing
any ``(N, B, L, M)`` map to memory. Like the chunked path of :mod:`noah.head.fast` it centres the
keys over positions and exponentiates base 2 with no max pass, and gives up (``None``, the
explicit path recomputes) when an exponential overflows. :func:`fused_logits` wraps the
extension; :func:`fused_head_logits` feeds it a head's features and weights; the kernel is
registered for the ``"fast"`` and ``"lean"`` implementations ahead of the chunked path.

It is optional: where it was not built (no C compiler at install time), on CPUs without
AVX2+FMA, with ``NOAH_DISABLE_KERNEL=1`` in the environment or inside :func:`kernel_disabled`,
the head computes the same numbers with PyTorch ops. Under a TorchDispatchMode (e.g. the FLOP
counter) it stands aside too, so that the mode sees the head's ops.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from noah.head.fast import cpu_inference
from noah.head.layout import LOG2E, dispatch_mode_active
from noah.head.registry import Call, LogitsKernel, register_kernel

try:
    from noah import _poca
except ImportError:  # not built: the PyTorch path takes over
    _poca = None

__all__ = [
    "fused_available", "fused_status", "kernel_disabled", "fused_logits", "fused_head_logits", "feature_rows",
    "threads_for",
]

#: below this many map elements (N*B*L*M) one thread does the whole head
_PARALLEL_MIN = 1 << 16
_disabled_depth = 0  # > 0 inside kernel_disabled()


def fused_available() -> bool:
    """True when :func:`fused_logits` is built, runs on this CPU and is not disabled."""
    return (
        _poca is not None
        and bool(_poca.vectorized)
        and _disabled_depth == 0
        and os.environ.get("NOAH_DISABLE_KERNEL", "") in ("", "0")
    )


@contextmanager
def kernel_disabled() -> Iterator[None]:
    """Within this block the head uses its PyTorch path (for comparisons and benchmarks)."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


def fused_status() -> str:
    """One line saying whether the fused CPU kernel is used, and if not, why."""
    if _poca is None:
        return "not built (no C compiler at install time?); the head uses PyTorch ops"
    if not _poca.vectorized:
        return "built, but this CPU lacks AVX2+FMA; the head uses PyTorch ops"
    if not fused_available():
        return "disabled (NOAH_DISABLE_KERNEL or kernel_disabled()); the head uses PyTorch ops"
    return "in use (x86-64 AVX2+FMA, " + ("OpenMP threads)" if _poca.openmp else "one thread: built without OpenMP)")


def threads_for(elements: int) -> int:
    """OpenMP threads for a kernel call over ``elements`` map elements: torch's count, or 1 for small calls."""
    return max(1, torch.get_num_threads()) if elements >= _PARALLEL_MIN else 1


def fused_logits(
    x: torch.Tensor,
    wk: torch.Tensor,
    wv: torch.Tensor,
    bias: torch.Tensor,
    heads: int,
    key_channels: int,
    value_offset: int,
    key_step: int,
    value_step: int,
) -> torch.Tensor | None:
    """NOAH logits ``(B, M)`` of float32 CPU features, or ``None`` if one is not finite.

    ``x``: ``(B, L, C)`` with any (non-negative) strides, so an NCHW map goes in as
    ``x.view(B, C, L).transpose(1, 2)`` without a copy. Block ``n``'s keys are channels
    ``[n*key_step, n*key_step + ck)`` (all within the first ``key_channels``), its values
    ``[value_offset + n*value_step, ... + cv)``. ``wk``/``wv``: the head's weights as contiguous
    ``(N*M, ck)``/``(N*M, cv)`` matrices (block-major rows, as in the grouped conv); ``bias``:
    the value bias ``(N*M,)``. Large heads are split over class panels across
    ``torch.get_num_threads()`` OpenMP threads (PyTorch's own, when the extension was built with
    OpenMP). ``None`` means an exponential overflowed (a class whose key logits, centred over
    the positions, exceed ~88) or the features were not finite.
    """
    b, length = x.shape[0], x.shape[1]
    classes = wk.shape[0] // heads
    out = torch.empty(b, classes)
    threads = threads_for(heads * b * length * classes)
    arrays = [t.detach().numpy() for t in (x, wk, wv, bias, out)]
    finite = _poca.fused_poca(*arrays, heads, key_channels, value_offset, key_step, value_step, threads, LOG2E)
    return out if finite else None


def feature_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` as ``(B, L, C)``: a view for NCHW and channels-last layouts (and
    whenever ``reshape`` needs no copy), which the kernels read through its strides."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return x.reshape(b, c, h * w).transpose(1, 2)


def fused_head_logits(head: Any, x: torch.Tensor) -> torch.Tensor | None:
    """Float32 CPU inference logits ``(B, M)`` of ``head`` for ``x`` ``(B, C, H, W)`` by
    :func:`fused_logits`, or ``None`` if some logit is not finite (the caller recomputes).

    The kernel centres the key features over positions (softmax ignores a per-class shift, so
    the key bias drops out too) and adds the value bias once per block, since the attention sums
    to one. The weights are read as they are at this call (no packed copy is kept between calls,
    so even writes through ``.data`` are seen).
    """
    c = x.shape[1]
    n, m = head.num_heads, head.num_classes
    x3d = feature_rows(x)
    wk = head.query.weight.detach().reshape(n * m, -1).contiguous()
    wv = head.value.weight.detach().reshape(n * m, -1).contiguous()
    key_channels, value_offset = (c, 0) if not head.kv_split else (head.key_channels, head.key_channels)
    steps = (wk.shape[1], wv.shape[1]) if head.head_split else (0, 0)
    bias = head.value.bias.detach().contiguous()
    return fused_logits(x3d, wk, wv, bias, n, key_channels, value_offset, *steps)


def _applies(head: Any, x: torch.Tensor, call: Call) -> bool:
    return (
        cpu_inference(head, x, call)
        and x.dtype == head.query.weight.dtype == head.value.weight.dtype == torch.float32
        and fused_available()
        and not dispatch_mode_active()
    )


register_kernel(LogitsKernel("cpu_fused", ("fast", "lean"), _applies, fused_head_logits, order=20))
