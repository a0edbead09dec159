"""The ``"lean"`` implementation: the fast matmuls with a training backward that keeps no maps.

For training (autograd or dropout on) the logits come from :class:`LeanPOCA`, a custom autograd
function that saves only the input features and the weights and recomputes attention and values
class chunk by class chunk in backward, so training memory does not grow with ``B*N*M*L``
(slower backward, a fraction of the memory). Dropout masks are drawn per chunk from a generator
seeded from the global RNG and redrawn identically in backward: same distribution as the plain
path's masks, not the same draws. Maps (``return_maps=True``), inference and tracing are the
``"fast"`` implementation's.
"""

from __future__ import annotations

from typing import Any

import torch

from noah.head.fast import FastImpl
from noah.head.layout import Projection, autocast_operands, block_inputs, dropout_rate, dropout_seed
from noah.head.registry import LogitsKernel, register_impl, register_kernel

__all__ = ["LeanImpl", "LeanPOCA", "lean_logits", "LEAN_CHUNK"]

#: default chunk size of the lean training path, in map elements (~16 MiB of float32 per map)
LEAN_CHUNK = 1 << 22


def _class_chunk_maps(
    gk: torch.Tensor,
    gv: torch.Tensor,
    proj: Projection,
    classes: slice,
    batch: int,
    generator: torch.Generator | None,
    p: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Attention and (dropped-out) value maps ``(N, B, L, mc)`` of the classes in ``classes``.

    ``gk``/``gv`` are the ``(N, B*L, c)`` block operands. Post-matmul arithmetic runs in float32
    (or float64 for float64 inputs) whatever the matmul dtype. Returns ``(A, V, mask)`` where
    ``mask`` is the scaled dropout mask (``None`` without dropout).
    """
    n = gk.shape[0]
    acc = torch.float64 if gk.dtype == torch.float64 else torch.float32
    keys = torch.baddbmm(proj.bk[:, None, classes], gk, proj.wk[:, classes].transpose(1, 2))
    values = torch.baddbmm(proj.bv[:, None, classes], gv, proj.wv[:, classes].transpose(1, 2))
    keys = keys.to(acc).view(n, batch, -1, keys.shape[-1])
    values = values.to(acc).view(keys.shape)
    mask = None
    if p > 0.0:
        mask = torch.empty_like(values).bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)
        values = values * mask
    return keys.softmax(dim=2), values, mask


def _class_chunks(num_classes: int, per_class: int, budget: int) -> list[slice]:
    size = max(1, min(num_classes, budget // max(per_class, 1)))
    return [slice(m0, min(num_classes, m0 + size)) for m0 in range(0, num_classes, size)]


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class LeanPOCA(torch.autograd.Function):
    """POCA logits with chunked recomputation: saves the inputs only, never ``O(B*N*M*L)`` maps.

    ``forward(xk, xv, wk, bk, wv, bv, num_heads, batch, head_split, p, seed, budget)`` with
    ``xk``/``xv`` the ``(B*L, ck)``/``(B*L, cv)`` key/value features, weights as in
    :class:`~noah.head.layout.Projection`; returns float32 (float64) logits ``(B, M)``.
    """

    @staticmethod
    def forward(ctx, xk, xv, wk, bk, wv, bv, num_heads, batch, head_split, p, seed, budget):  # type: ignore[override]
        ctx.save_for_backward(xk, xv, wk, bk, wv, bv)
        ctx.config = (num_heads, batch, head_split, p, seed, budget)
        proj = Projection(wk, bk, wv, bv)
        gk, gv = block_inputs(xk, num_heads, head_split), block_inputs(xv, num_heads, head_split)
        generator = _generator(xk.device, seed) if p > 0.0 else None
        acc = torch.float64 if xk.dtype == torch.float64 else torch.float32
        logits = xk.new_empty(batch, wk.shape[1], dtype=acc)
        for classes in _class_chunks(wk.shape[1], num_heads * xk.shape[0], budget):
            attention, values, _ = _class_chunk_maps(gk, gv, proj, classes, batch, generator, p)
            torch.sum(attention.mul_(values).sum(2), 0, out=logits[:, classes])
        return logits

    @staticmethod
    def backward(ctx, grad_logits):  # type: ignore[override]
        xk, xv, wk, bk, wv, bv = ctx.saved_tensors
        num_heads, batch, head_split, p, seed, budget = ctx.config
        proj = Projection(wk, bk, wv, bv)
        gk, gv = block_inputs(xk, num_heads, head_split), block_inputs(xv, num_heads, head_split)
        generator = _generator(xk.device, seed) if p > 0.0 else None
        grads = {name: torch.zeros_like(t) for name, t in zip(("wk", "bk", "wv", "bv"), (wk, bk, wv, bv))}
        dgk = torch.zeros(gk.shape, dtype=gk.dtype, device=gk.device)
        dgv = torch.zeros(gv.shape, dtype=gv.dtype, device=gv.device)
        for classes in _class_chunks(wk.shape[1], num_heads * xk.shape[0], budget):
            attention, values, mask = _class_chunk_maps(gk, gv, proj, classes, batch, generator, p)
            g = grad_logits[:, classes].to(attention.dtype)[None, :, None, :]  # (1, B, 1, mc)
            pooled = (attention * values).sum(2, keepdim=True)  # (N, B, 1, mc)
            # d logits / d V = A;  d logits / d K = A * (V - sum_l A V)   (softmax Jacobian)
            d_keys = values.sub_(pooled).mul_(attention).mul_(g)
            d_values = attention.mul_(g) if mask is None else attention.mul_(g).mul_(mask)
            for d_map, operand, weight, dw, db, dx in (
                (d_keys, gk, wk, grads["wk"], grads["bk"], dgk),
                (d_values, gv, wv, grads["wv"], grads["bv"], dgv),
            ):
                d2 = d_map.flatten(1, 2).to(operand.dtype)  # (N, B*L, mc)
                dw[:, classes] = torch.bmm(d2.transpose(1, 2), operand)
                db[:, classes] = d2.sum(1)
                dx.baddbmm_(d2, weight[:, classes])
        dxk = dgk.transpose(0, 1).flatten(1) if head_split else dgk.sum(0)
        dxv = dgv.transpose(0, 1).flatten(1) if head_split else dgv.sum(0)
        return dxk, dxv, grads["wk"], grads["bk"], grads["wv"], grads["bv"], None, None, None, None, None, None


def lean_logits(head: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, M)`` through :class:`LeanPOCA`: in ``x``'s dtype, or float32 under autocast
    (the matmuls then run in the autocast dtype). Chunks of about ``head.chunk_elements``
    (default :data:`LEAN_CHUNK`) map elements."""
    p = dropout_rate(head)
    seed = dropout_seed() if p > 0.0 else 0
    tensors, autocast = autocast_operands(head, x)
    with torch.autocast(x.device.type, enabled=False):
        logits = LeanPOCA.apply(
            *tensors, head.num_heads, x.shape[0], head.head_split, p, seed, head.chunk_elements or LEAN_CHUNK,
        )
    return logits if autocast else logits.to(x.dtype)


class LeanImpl(FastImpl):
    """The fast implementation, with :func:`lean_logits` for training."""

    name = "lean"


register_impl(LeanImpl())
register_kernel(LogitsKernel("lean", ("lean",), lambda head, x, call: not call.inference, lean_logits, order=10))
