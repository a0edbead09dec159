"""The ``"triton"`` implementation: fused Triton kernels for the head's forward and backward.

:class:`TritonPOCA` is a custom autograd function whose forward (:mod:`noah.head.triton_kernels`)
saves only its inputs and three ``(B, N, M)`` statistics per call -- the row maximum of the key
logits, the softmax normaliser and each block's pooled output ``y_n`` -- never a ``(B, N, M, L)``
map; its backward recomputes key/value tiles from them and produces the gradients of the
features, weights and biases (the FlashAttention pattern). Float32, bfloat16 and float16 inputs
run with float32 accumulation (float64 with float64). Dropout on the values is drawn inside the
kernels from a seed taken from torch's global RNG, so ``torch.manual_seed`` reproduces a run and
the backward regenerates the forward's mask; the masks follow the same distribution as the plain
path's, not the same draws.

Where it runs:

* ``NOAHHead(impl="triton")`` / :meth:`NOAHHead.set_impl` selects it explicitly: CUDA tensors,
  or CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is first
  imported; that is how the tests run it). Anywhere else a forward raises a one-line
  :class:`~noah.errors.ConfigError`.
* The default ``"fast"`` implementation uses the same kernels for CUDA tensors (float32, bfloat16,
  float16, or any of them under autocast) on NVIDIA GPUs of compute capability 8.0 or newer when
  Triton is importable -- never for CPU tensors, which have their own kernels.
  ``NOAH_DISABLE_TRITON=1`` in the environment or :func:`triton_disabled` turns this off (for
  comparisons and benchmarks).

Maps (``return_maps=True``), tracing (``torch.compile``/export/ONNX), float64 under ``"fast"``
and calls under a TorchDispatchMode (e.g. the FLOP counter, which must see the ops) use the
``"fast"`` implementation's explicit path.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from noah.errors import ConfigError
from noah.head.fast import FastImpl
from noah.head.layout import autocast_operands, dispatch_mode_active, dropout_rate, dropout_seed, graph_mode
from noah.head.registry import Call, LogitsKernel, register_impl, register_kernel

__all__ = [
    "TritonImpl", "TritonPOCA", "triton_logits", "triton_available", "triton_disabled", "triton_status",
    "fast_uses_triton",
    "unavailable_reason",
    "choose_tiles",
]

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_disabled_depth = 0  # > 0 inside triton_disabled()


@functools.cache
def triton_available() -> bool:
    """True when the ``triton`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


def _kernels() -> ModuleType:
    """:mod:`noah.head.triton_kernels`, imported on first use (importing Triton takes a while)."""
    from noah.head import triton_kernels

    return triton_kernels


@contextmanager
def triton_disabled() -> Iterator[None]:
    """Within this block the ``"fast"`` implementation does not use the Triton kernels."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


def _enabled_for_fast() -> bool:
    return _disabled_depth == 0 and os.environ.get("NOAH_DISABLE_TRITON", "") in ("", "0")


@functools.cache
def _gpu_supported(index: int) -> bool:
    """The default path's GPUs: NVIDIA (not ROCm) with compute capability 8.0 or newer."""
    return torch.version.hip is None and torch.cuda.get_device_capability(index) >= (8, 0)


def triton_status() -> str:
    """One line saying whether ``"fast"`` uses the Triton kernels on this machine's GPU, and if not, why."""
    if not triton_available():
        return "not installed (the triton package); CUDA heads use PyTorch ops"
    if not _enabled_for_fast():
        return "disabled (NOAH_DISABLE_TRITON or triton_disabled()); CUDA heads use PyTorch ops"
    if not torch.cuda.is_available():
        return "available, no CUDA GPU here (impl 'triton' runs on CPU only under TRITON_INTERPRET=1)"
    if not _gpu_supported(torch.cuda.current_device()):
        return f"not used on {torch.cuda.get_device_name()} (needs NVIDIA compute capability 8.0+); PyTorch ops"
    return f"in use on {torch.cuda.get_device_name()} for float32/bfloat16/float16 heads"


def unavailable_reason(x: torch.Tensor) -> str | None:
    """Why the ``"triton"`` implementation cannot run on ``x`` (one line), or ``None`` if it can."""
    if not triton_available():
        return "NOAH head impl 'triton' needs the triton package, which is not installed; use impl 'fast'"
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu":
        if _kernels().INTERPRETED:
            return None
        return (
            "NOAH head impl 'triton' runs on CUDA tensors, or on CPU tensors only under Triton's interpreter "
            "(TRITON_INTERPRET=1 set before triton is first imported); got a cpu tensor, use impl 'fast' on CPU"
        )
    return f"NOAH head impl 'triton' runs on CUDA tensors; got a {x.device.type} tensor"


def _dtypes_fit(head: Any, x: torch.Tensor, floats: tuple[torch.dtype, ...]) -> bool:
    """Features and weights of one dtype in ``floats``; under autocast (which leaves float64
    alone) any of float32/bfloat16/float16, cast to the autocast dtype."""
    dtypes = {x.dtype, head.query.weight.dtype, head.value.weight.dtype}
    if torch.is_autocast_enabled(x.device.type):
        return dtypes <= set(_FLOATS) and torch.get_autocast_dtype(x.device.type) in _FLOATS
    return len(dtypes) == 1 and x.dtype in floats


def fast_uses_triton(device: torch.device) -> bool:
    """Whether the ``"fast"`` implementation hands floating-point heads on ``device`` to the Triton
    kernels (CUDA, Triton installed and not disabled, NVIDIA compute capability 8.0+)."""
    return (
        device.type == "cuda"
        and triton_available()
        and _enabled_for_fast()
        and _gpu_supported(device.index if device.index is not None else torch.cuda.current_device())
    )


def _applies_to_fast(head: Any, x: torch.Tensor, call: Call) -> bool:
    """The ``"fast"`` implementation's use of the kernels: CUDA tensors only (see the module doc)."""
    return fast_uses_triton(x.device) and _dtypes_fit(head, x, _FLOATS) and not dispatch_mode_active()


def _applies_to_triton(head: Any, x: torch.Tensor, call: Call) -> bool:
    """The ``"triton"`` implementation's use: wherever it can run (float64 too)."""
    return (
        unavailable_reason(x) is None
        and _dtypes_fit(head, x, _FLOATS + (torch.float64,))
        and not dispatch_mode_active()
    )


def _next_power_of_2(value: int, low: int, high: int) -> int:
    return min(high, max(low, 1 << max(0, value - 1).bit_length()))


#: per operand dtype: input channels per recomputation step, widest gradient chunk. With 32
#: positions x 64 classes per tile and 8 warps, these compile for sm_90 without register spills
#: (ptxas via ``cuobjdump --dump-resource-usage``; float32: 8 bytes in the weight-gradient kernel)
_CHANNEL_TILES = {torch.bfloat16: (64, 64), torch.float16: (64, 64), torch.float32: (16, 32), torch.float64: (16, 16)}


def choose_tiles(batch: int, length: int, classes: int, heads: int, key_channels: int, value_channels: int,
                 dtype: torch.dtype, device: torch.device) -> Any:
    """The :class:`~noah.head.triton_kernels.Tiles` of one call: a heuristic, not tuned on a GPU.

    A backward program owns a chunk of ``block_cw`` input channels and recomputes the key/value
    tiles over all channels, so a block with more channels than that recomputes once per chunk.
    """
    block_m = 64
    block_c, widest = _CHANNEL_TILES[dtype]
    block_cw = _next_power_of_2(max(key_channels, value_channels), 16, widest)
    splits = 1
    if device.type == "cuda":
        # enough weight-gradient programs to fill the GPU twice over
        programs = -(-classes // block_m) * heads * -(-max(key_channels, value_channels) // block_cw)
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        splits = max(1, min(batch, -(-2 * sms // programs)))
    return _kernels().Tiles(
        block_l=_next_power_of_2(length, 16, 32), block_m=block_m, block_c=block_c, block_cw=block_cw,
        splits=splits, forward_warps=8, backward_warps=8,
    )


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    """``tl.dot``'s float32 precision: IEEE unless torch allows TF32 for float32 matmuls."""
    tf32 = (
        dtype == torch.float32 and device.type == "cuda" and torch.version.hip is None
        and torch.get_float32_matmul_precision() != "highest"
    )
    return "tf32" if tf32 else "ieee"


class _Plan(NamedTuple):
    batch: int
    length: int
    head_split: bool
    p: float
    seed: int


class TritonPOCA(torch.autograd.Function):
    """POCA logits through the Triton kernels; saves the inputs and ``(B, N, M)`` statistics.

    ``forward(xk, xv, wk, bk, wv, bv, plan)``: ``xk``/``xv`` the ``(B*L, Ck)``/``(B*L, Cv)``
    key/value features, the weights as in :class:`~noah.head.layout.Projection` (same dtype as
    the features), ``plan`` a ``_Plan``. Returns logits ``(B, M)`` in float32 (float64 for
    float64 inputs).
    """

    @staticmethod
    def forward(ctx, xk, xv, wk, bk, wv, bv, plan):  # type: ignore[override]
        args = _kernel_args(xk, xv, wk, bk, wv, bv, plan)
        tiles = choose_tiles(plan.batch, plan.length, wk.shape[1], wk.shape[0], wk.shape[2], wv.shape[2],
                             xk.dtype, xk.device)
        stats = _kernels().forward_stats(args, tiles)
        ctx.save_for_backward(xk, xv, wk, bk, wv, bv, *stats)
        ctx.plan, ctx.tiles = plan, tiles
        return stats[2].sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logits):  # type: ignore[override]
        xk, xv, wk, bk, wv, bv, *stats = ctx.saved_tensors
        args = _kernel_args(xk, xv, wk, bk, wv, bv, ctx.plan)
        grad = grad_logits.to(args.acc_dtype).contiguous()
        kernels = _kernels()
        dxk = dxv = dwk = dbk = dwv = dbv = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dxk, dxv = kernels.backward_inputs(args, ctx.tiles, stats, grad, ctx.plan.head_split)
        if any(ctx.needs_input_grad[2:6]):
            dwk, dbk, dwv, dbv = (
                g.to(w.dtype) for g, w in zip(kernels.backward_weights(args, ctx.tiles, stats, grad), (wk, bk, wv, bv))
            )
        return dxk, dxv, dwk, dbk, dwv, dbv, None


def _kernel_args(xk, xv, wk, bk, wv, bv, plan: _Plan) -> Any:
    return _kernels().KernelArgs(
        xk, xv, wk, bk, wv, bv, plan.batch, plan.length,
        k_step=wk.shape[2] if plan.head_split else 0,
        v_step=wv.shape[2] if plan.head_split else 0,
        p=plan.p, seed=plan.seed, precision=_precision(xk.dtype, xk.device),
    )


def triton_logits(head: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, M)`` of ``head`` for ``x`` ``(B, C, H, W)`` through :class:`TritonPOCA`: in
    ``x``'s dtype, or float32 under autocast (the matmul operands then in the autocast dtype)."""
    p = dropout_rate(head)
    plan = _Plan(x.shape[0], x.shape[2] * x.shape[3], head.head_split, p, dropout_seed() if p > 0.0 else 0)
    tensors, autocast = autocast_operands(head, x)
    with torch.autocast(x.device.type, enabled=False):
        logits = TritonPOCA.apply(*tensors, plan)
    return logits if autocast else logits.to(x.dtype)


class TritonImpl(FastImpl):
    """The fast implementation with the Triton kernels for logits; a one-line
    :class:`~noah.errors.ConfigError` where they cannot run."""

    name = "triton"

    def logits(self, head: Any, x: torch.Tensor) -> torch.Tensor:
        if not graph_mode() and x.shape[0] > 0:
            reason = unavailable_reason(x)
            if reason is not None:
                raise ConfigError(reason)
        return super().logits(head, x)


register_impl(TritonImpl())
register_kernel(LogitsKernel("triton", ("triton",), _applies_to_triton, triton_logits, order=5))
register_kernel(LogitsKernel("triton_cuda", ("fast",), _applies_to_fast, triton_logits, order=5))
