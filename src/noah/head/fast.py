"""The ``"fast"`` implementation (the default): batched matmuls over one channels-last view.

:func:`explicit_logits_and_maps` computes keys and values of all blocks as two batched matmuls
``(N, B*L, c) @ (N, c, M)`` over :func:`~noah.head.layout.channels_last_features`, then an
explicit softmax over positions, product and sums; maps come out laid out ``(N, B, L, M)`` so
the reductions over positions run over contiguous class vectors. It serves ``return_maps=True``,
training, autocast, other devices, tracing (``torch.compile``/export/ONNX: one graph, no Python
loop) and every fallback.

For CPU inference in float32/float64 the ``"chunked"`` kernel (:func:`chunked_logits`) never
materialises the attention: since softmax ignores a per-class shift, the keys are computed from
*position-centred* features (``K - mean_l K``, which also drops the key bias) and pre-scaled by
``log2(e)``, so ``exp2`` of the matmul output is the unnormalised attention with no max pass;
``y = sum_n (sum_l E*V') / (sum_l E) + sum_n b_v`` with the value bias added once at the end,
worked through cache-sized (image, class) chunks. An overflowing exponential (a class whose key
logits spread more than ~88 over the positions) makes it give up, and the explicit path
recomputes with the exact max-subtracted softmax. In float32 the compiled kernel of
:mod:`noah.head.cpu_kernel` runs before it where it is built.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from noah.head.layout import LOG2E, block_inputs, channels_last_features, dropout_rate, projection
from noah.head.registry import Call, HeadImpl, LogitsKernel, Maps, register_impl, register_kernel

__all__ = ["FastImpl", "explicit_logits_and_maps", "chunked_logits", "cpu_inference", "INFERENCE_CHUNK"]

#: default chunk size of the chunked CPU inference path, in map elements (~4 MiB of float32 per
#: map; measured best of 2^17..2^22 on a 2-core EPYC for the ResNet18 and MobileNetV2 head shapes)
INFERENCE_CHUNK = 1 << 20


def _dropout_mask(head: Any, b: int, length: int, like: torch.Tensor) -> torch.Tensor:
    """The scaled dropout mask ``nn.Dropout`` would draw for the plain path's ``(B, N, M, L)``
    value map (same RNG calls, same order), permuted to the fast layout ``(N, B, L, M)``."""
    ones = like.new_ones(()).expand(b, head.num_heads, head.num_classes, length)
    return F.dropout(ones, head.dropout.p, training=True).permute(1, 0, 3, 2)


def explicit_logits_and_maps(head: Any, x: torch.Tensor) -> Maps:
    """Same numbers as the plain path, as two batched matmuls over the channels-last features.

    Returns logits ``(B, M)`` and the attention/value maps as ``(B, N, M, L)`` views of
    ``(N, B, L, M)`` tensors.
    """
    b, length = x.shape[0], x.shape[2] * x.shape[3]
    n, m = head.num_heads, head.num_classes
    proj = projection(head)
    xk, xv = channels_last_features(head, x)
    gk, gv = block_inputs(xk, n, head.head_split), block_inputs(xv, n, head.head_split)
    keys = torch.baddbmm(proj.bk[:, None], gk, proj.wk.transpose(1, 2)).view(n, b, length, m)
    values = torch.baddbmm(proj.bv[:, None], gv, proj.wv.transpose(1, 2)).view(n, b, length, m)
    if dropout_rate(head) > 0.0:
        values = values * _dropout_mask(head, b, length, values)
    attention = keys.softmax(dim=2)
    logits = (attention * values).sum(dim=2).sum(dim=0)
    return logits, attention.permute(1, 0, 3, 2), values.permute(1, 0, 3, 2)


def _prefix(buffer: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous ``shape`` view onto the start of a flat scratch ``buffer``."""
    return buffer[: math.prod(shape)].view(shape)


def _pool(
    gk: torch.Tensor, gv: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, images: int,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_l E V' / sum_l E`` per block, image and class: ``(N, images, mc)``.

    ``gk``/``gv``: ``(N, images*L, c)`` block operands (keys centred and scaled); ``wk``/``wv``:
    ``(N, c, mc)``; ``scratch``: optional ``(2, >= N*images*L*mc)`` buffer for the two maps.
    """
    n, rows, mc = gk.shape[0], gk.shape[1], wk.shape[2]
    out_e = out_v = None
    if scratch is not None:
        out_e, out_v = _prefix(scratch[0], n, rows, mc), _prefix(scratch[1], n, rows, mc)
    e = torch.bmm(gk, wk, out=out_e).exp2_().view(n, images, -1, mc)
    v = torch.bmm(gv, wv, out=out_v).view(e.shape)
    den = e.sum(dim=2)
    return e.mul_(v).sum(dim=2).div_(den)


def chunked_logits(head: Any, x: torch.Tensor) -> torch.Tensor | None:
    """Inference logits ``(B, M)`` without materialising the attention (see the module docstring).

    Works through (image, class) chunks of about ``head.chunk_elements`` (default
    :data:`INFERENCE_CHUNK`) map elements, reusing two scratch buffers. Returns ``None`` if some
    exponential overflowed (the caller falls back).
    """
    b, length = x.shape[0], x.shape[2] * x.shape[3]
    n, m = head.num_heads, head.num_classes
    xk, xv = channels_last_features(head, x)
    # keys from position-centred, log2(e)-scaled features: exp2(K') = exp(K - mean_l K)
    xk = xk.reshape(b, length, -1)
    xk = torch.sub(xk, xk.mean(dim=1, keepdim=True)).mul_(LOG2E).reshape(b * length, -1)
    wk = head.query.weight.view(n, m, -1).transpose(1, 2)  # (N, ck, M)
    wv = head.value.weight.view(n, m, -1).transpose(1, 2)
    bias = head.value.bias.view(n, m).sum(dim=0)  # sum_l A = 1: the value bias adds once per block

    budget = head.chunk_elements or INFERENCE_CHUNK
    images = max(1, min(b, budget // (n * length * m)))
    classes = m if images > 1 else max(1, min(m, budget // (n * length)))
    gk_all, gv_all = block_inputs(xk, n, head.head_split), block_inputs(xv, n, head.head_split)
    if head.head_split and (images < b or classes < m):
        # one block-major copy up front; otherwise bmm copies the strided operands per chunk
        gk_all, gv_all = gk_all.contiguous(), gv_all.contiguous()
    if images == b and classes == m:
        pooled = _pool(gk_all, gv_all, wk, wv, b)
    else:
        scratch = x.new_empty(2, n * images * length * classes)
        pooled = x.new_empty(n, b, m)
        for b0 in range(0, b, images):
            bc = min(images, b - b0)
            rows = slice(b0 * length, (b0 + bc) * length)
            gk, gv = gk_all[:, rows], gv_all[:, rows]
            for m0 in range(0, m, classes):
                cls = slice(m0, min(m, m0 + classes))
                pooled[:, b0 : b0 + bc, cls] = _pool(gk, gv, wk[:, :, cls], wv[:, :, cls], bc, scratch)
    logits = pooled.sum(dim=0).add_(bias)
    if not math.isfinite(float(logits.sum())):
        return None
    return logits


def cpu_inference(head: Any, x: torch.Tensor, call: Call) -> bool:
    """Where the kernels that skip the explicit softmax may run: CPU inference in float32 or
    float64, no autograd, no dropout, no autocast (the ``"chunked"`` kernel's ``applies``)."""
    return (
        call.inference
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


class FastImpl(HeadImpl):
    """Batched matmuls; logits alone through the registered kernels (see :mod:`noah.head.registry`)."""

    name = "fast"

    def logits_and_maps(self, head: Any, x: torch.Tensor) -> Maps:
        return explicit_logits_and_maps(head, x)


register_impl(FastImpl())
register_kernel(LogitsKernel("chunked", ("fast", "lean"), cpu_inference, chunked_logits, order=30))
