"""The ``"cpu_train"`` kernel: the head's training forward and backward on float32 CPU tensors.

:class:`FusedTrainPOCA` is a custom autograd function over the compiled ``noah._poca``
(``src/noah/csrc/train.c``). Its forward computes the logits in one pass over keys and values
(exact max-subtracted softmax, so no exponential can overflow) and keeps for backward only the
features (``x`` itself where it is NCHW-contiguous, else an NCHW copy, and the position-tiled
copy its matmuls read: ``O(B*C*L)``) and two numbers per image, block and class -- the softmax
normaliser and the block's pooled output (``O(B*N*M)``) -- never a ``(B, N, M, L)`` map. Its
backward recomputes keys and values a 16-class panel at a time and turns them into ``dX``,
``dWk``, ``dWv`` and ``dbv`` in the same pass (the FlashAttention pattern: with ``A = softmax(K)``
and ``y`` the pooled output, ``dV = A*g``, ``dK = A*(V - y)*g``). The key bias gets an exact zero
gradient: softmax ignores a per-class shift.

Dropout on the values is a hash of (seed, image, block, class, position) -- keep where
``hash >> 8 >= round(p * 2^24)``, scale by ``1/(1-p)`` -- regenerated in backward; the seed is
drawn from torch's global RNG, so ``torch.manual_seed`` makes runs reproducible. Those are not
the masks ``nn.Dropout`` would draw (same distribution, other draws), so only dropout-free
training gives the same numbers on every path.

Registered for the ``"fast"`` implementation: it is the default whenever autograd or dropout is
on, for float32 CPU tensors outside autocast, where the extension is built for an AVX2+FMA CPU
and not disabled (``NOAH_DISABLE_KERNEL=1``, :func:`~noah.head.cpu_kernel.kernel_disabled`),
and not under a dispatch mode or while traced. Elsewhere -- and when a logit comes out
non-finite -- the explicit PyTorch path computes, with autograd.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from noah.head.cpu_kernel import _poca, feature_rows, fused_available, fused_status, threads_for
from noah.head.layout import LOG2E, dispatch_mode_active, dropout_rate
from noah.head.registry import Call, LogitsKernel, register_kernel

__all__ = ["FusedTrainPOCA", "Layout", "train_available", "train_status", "fused_train_logits", "dropout_threshold"]


class Layout(NamedTuple):
    """The head's channel split as the kernel reads it (SPEC §2)."""

    heads: int
    head_split: bool
    kv_split: bool

    @classmethod
    def of(cls, head: Any) -> "Layout":
        return cls(head.num_heads, bool(head.head_split), bool(head.kv_split))


#: 16-class panels per backward work item: the dX matmul's inner dimension is 16 * GROUP classes
GROUP = 4


def train_available() -> bool:
    """True when the compiled training kernel is built, runs on this CPU and is not disabled."""
    return fused_available() and hasattr(_poca, "train_forward")


def train_status() -> str:
    """One line saying whether float32 CPU training uses the compiled kernel, and if not, why."""
    if train_available():
        return "in use"
    return "not in use (" + fused_status().split(";")[0] + "); training runs the PyTorch autograd path"


def dropout_threshold(p: float) -> tuple[int, float]:
    """The kernel's dropout parameters for rate ``p``: keep where ``hash >> 8 >= threshold``,
    and the scale of kept values; ``(0, 1.0)`` for no dropout."""
    if p <= 0.0:
        return 0, 1.0
    return min(1 << 24, round(p * (1 << 24))), 1.0 / (1.0 - p)


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    """A grouped 1x1 conv weight ``(N*M, c, 1, 1)`` as a contiguous ``(N*M, c)`` matrix."""
    return weight.detach().reshape(weight.shape[0], -1).contiguous()


def _numpy(*tensors: torch.Tensor | None) -> list[Any]:
    return [None if t is None else t.detach().numpy() for t in tensors]


class FusedTrainPOCA(torch.autograd.Function):
    """NOAH logits ``(B, M)`` with a fused backward; see the module docstring.

    ``forward(x, wk, bk, wv, bv, layout, threshold, keep_scale, seed)``: ``x`` ``(B, C, H, W)``
    float32 CPU features in any layout, the head's ``query``/``value`` conv parameters, a
    :class:`Layout`, and the dropout parameters (:func:`dropout_threshold`, ``seed`` < 2^64).
    ``bk`` only receives its (zero) gradient. Returns the logits and a 0-d bool tensor, true when
    every logit is finite (the kernel checks as it writes them; not differentiable).
    """

    @staticmethod
    def forward(ctx, x, wk, bk, wv, bv, layout, threshold, keep_scale, seed):  # type: ignore[override]
        b, c, h, w = x.shape
        wk2, wv2, bv1 = _matrix(wk), _matrix(wv), bv.detach().contiguous()
        classes = wk2.shape[0] // layout.heads
        # dW reads 6 channels' runs of positions at a time: cheap in NCHW, while channels-last rows
        # C floats apart fall into few L1 sets (C = 512: 2 KB), so other layouts are copied to NCHW
        rows = feature_rows(x.contiguous())
        tiles = x.new_empty(_poca.train_tiles_shape(b, h * w, layout.heads, wk2.shape[1], wv2.shape[1], *layout[1:]))
        stats = x.new_empty(2, b, layout.heads, classes)
        logits = x.new_empty(b, classes)
        threads = threads_for(layout.heads * b * h * w * classes)
        finite = _poca.train_forward(
            *_numpy(rows, tiles, wk2, wv2, bv1, stats, logits), *layout, threshold, keep_scale, seed,
            threads, LOG2E,
        )
        ctx.save_for_backward(rows, tiles, stats, wk, wv, bv)
        ctx.config = (layout, threshold, keep_scale, seed, threads)
        # the gradient comes back in x's layout where its channels are adjacent
        ctx.x_meta = (x.shape, x.stride(1) == 1 and h * w > 1)
        all_finite = torch.tensor(finite)
        ctx.mark_non_differentiable(all_finite)
        return logits, all_finite

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logits, _grad_finite):  # type: ignore[override]
        rows, tiles, stats, wk, wv, bv = ctx.saved_tensors
        layout, threshold, keep_scale, seed, threads = ctx.config
        shape, channels_last = ctx.x_meta
        need_x, need_wk, need_bk, need_wv, _ = ctx.needs_input_grad[:5]
        wk2, wv2 = _matrix(wk), _matrix(wv)
        dx = None
        if need_x:
            dx = torch.empty(shape, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        dwk = dwv = None
        if need_wk or need_wv:
            dwk, dwv = torch.empty_like(wk2), torch.empty_like(wv2)
        dbv = torch.empty(bv.shape)
        _poca.train_backward(
            *_numpy(rows, tiles, wk2, wv2, bv.detach().contiguous(), stats, grad_logits.float().contiguous()),
            *_numpy(None if dx is None else feature_rows(dx), dwk, dwv, dbv),
            *layout, threshold, keep_scale, seed, threads, LOG2E, GROUP,
        )
        return (
            dx,
            None if not need_wk else dwk.view(wk.shape),
            torch.zeros(wk.shape[0]) if need_bk else None,
            None if not need_wv else dwv.view(wv.shape),
            dbv,
            None, None, None, None,
        )


def fused_train_logits(head: Any, x: torch.Tensor) -> torch.Tensor | None:
    """Training logits ``(B, M)`` of ``head`` for float32 CPU features ``x`` ``(B, C, H, W)`` by
    :class:`FusedTrainPOCA`, or ``None`` if a logit is not finite (the explicit path then
    recomputes, so non-finite inputs give the reference's NaN/inf pattern)."""
    p = dropout_rate(head)
    # the dropout seed comes from the global RNG, so torch.manual_seed makes it reproducible
    seed = int(torch.randint(0, 2**62, (), device="cpu")) if p > 0.0 else 0
    threshold, keep_scale = dropout_threshold(p)
    logits, all_finite = FusedTrainPOCA.apply(
        x, head.query.weight, head.query.bias, head.value.weight, head.value.bias, Layout.of(head), threshold,
        keep_scale, seed,
    )
    return logits if bool(all_finite) else None


def _applies(head: Any, x: torch.Tensor, call: Call) -> bool:
    return (
        not call.inference
        and x.device.type == "cpu"
        and x.dtype == head.query.weight.dtype == head.value.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and train_available()
        and not dispatch_mode_active()
    )


register_kernel(LogitsKernel("cpu_train", ("fast",), _applies, fused_train_logits, order=15))
