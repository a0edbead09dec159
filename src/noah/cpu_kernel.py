"""The optional compiled kernel of the head's CPU inference path: ``noah._poca``.

``noah._poca`` (``src/noah/csrc/poca.c``, built by ``pip install``) computes float32 NOAH logits
in one pass: both matmuls, the softmax over positions, the product and the sums, without writing
any ``(N, B, L, M)`` map to memory. It is optional: where it was not built (no C compiler at
install time), on CPUs without AVX2+FMA, or with ``NOAH_DISABLE_KERNEL=1`` in the environment, the
head computes the same numbers with PyTorch ops.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

try:
    from noah import _poca
except ImportError:  # not built: the PyTorch path takes over
    _poca = None

__all__ = ["fused_available", "fused_status", "kernel_disabled", "fused_logits"]

_LOG2E = 1.4426950408889634  # the kernel exponentiates base 2: keys are scaled by log2(e)
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


def _threads_for(elements: int) -> int:
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
    threads = _threads_for(heads * b * length * classes)
    arrays = [t.detach().numpy() for t in (x, wk, wv, bias, out)]
    finite = _poca.fused_poca(*arrays, heads, key_channels, value_offset, key_step, value_step, threads, _LOG2E)
    return out if finite else None
