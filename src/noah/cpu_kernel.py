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

__all__ = ["PANEL", "fused_available", "fused_status", "kernel_disabled", "pack_weight", "fused_logits_"]

#: classes per weight panel of the kernel
PANEL = 16
#: below this many map elements (N*B*L*M) one thread does the whole head
_PARALLEL_MIN = 1 << 16
_disabled_depth = 0  # > 0 inside kernel_disabled()


def fused_available() -> bool:
    """True when :func:`fused_logits_` is built, runs on this CPU and is not disabled."""
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


def pack_weight(weight: torch.Tensor, heads: int, classes: int, scale: float = 1.0) -> torch.Tensor:
    """A grouped 1x1 conv weight ``(N*M, c, 1, 1)``, times ``scale``, as the kernel's panels.

    Returns a contiguous float32 ``(N, ceil(M/16), c, 16)`` tensor: for each block and each group
    of 16 classes, the ``c x 16`` matrix ``scale * W^T`` (classes past ``M`` are zero).
    """
    c = weight.shape[1]
    panels = -(-classes // PANEL)
    packed = weight.new_zeros(heads, panels * PANEL, c, dtype=torch.float32)
    packed[:, :classes] = weight.detach().view(heads, classes, c) * scale
    return packed.view(heads, panels, PANEL, c).transpose(2, 3).contiguous()


def _threads_for(elements: int) -> int:
    return max(1, torch.get_num_threads()) if elements >= _PARALLEL_MIN else 1


def fused_logits_(
    xk: torch.Tensor,
    xv: torch.Tensor,
    wk: torch.Tensor,
    wv: torch.Tensor,
    out: torch.Tensor,
    key_step: int,
    value_step: int,
) -> bool:
    """Add ``sum_n sum_l 2^(xk_n wk_n) (xv_n wv_n) / sum_l 2^(xk_n wk_n)`` to ``out`` in place.

    ``xk``/``xv``: float32 ``(B, L, channels)`` CPU features, any (positive) strides, so NCHW
    maps go in as ``x.view(B, C, L).transpose(1, 2)`` without a copy; block ``n`` reads channels
    ``[n*key_step, n*key_step + ck)`` of ``xk`` (``ck`` from ``wk``), likewise for values. The
    key features must be centred over each image's positions and ``wk`` scaled by ``log2(e)``.
    ``wk``/``wv``: :func:`pack_weight` panels; ``out``: float32 ``(B, M)`` with contiguous rows.
    Large heads are split over class panels across ``torch.get_num_threads()`` OpenMP threads
    (PyTorch's own, when the extension was built with OpenMP). Returns whether every entry of
    ``out`` is finite afterwards: an overflowing exponential (a class whose centred key logits
    exceed ~88) makes one non-finite, as do non-finite features.
    """
    heads = wk.shape[0]
    threads = _threads_for(heads * out.shape[0] * xk.shape[1] * out.shape[1])
    arrays = [t.detach().numpy() for t in (xk, xv, wk, wv, out)]
    return _poca.fused_poca(*arrays, heads, key_step, value_step, 0, wk.shape[1], threads)
