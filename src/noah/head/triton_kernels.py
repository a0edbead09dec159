"""Triton kernels of the NOAH head: forward statistics and a backward that recomputes tiles.

Notation as in :mod:`noah.head`: ``B`` images, ``L`` positions, ``M`` classes, ``N`` POCA blocks;
block ``n`` of image ``b`` has keys ``K = Xk Wk_n^T + bk_n`` and values ``V = Xv Wv_n^T + bv_n``
(``L x M`` each, ``ck``/``cv`` input channels), dropout scales ``V`` to ``V'``, ``A = softmax_L(K)``
and ``y_n = sum_l A V'``. Three kernels, none of which writes an ``L x M`` map to memory:

* :func:`forward_stats` -- one program per (class tile, image, block) runs over position tiles
  with an online softmax and writes the per-(block, image, class) row maximum of ``K``, the
  softmax normaliser ``sum_l exp(K - max)`` and the pooled output ``y_n``;
* :func:`backward_weights` -- one program per (class tile, block, channel chunk, image range)
  recomputes the ``K``/``V`` tiles from the saved inputs and statistics, forms
  ``dV = A g`` (times the dropout scale) and ``dK = A (V' - y_n) g`` and accumulates
  ``dW = dMap^T X`` and ``db = sum_l dMap`` in registers (partial sums per image range, added up
  by the caller, so the result does not depend on scheduling);
* :func:`backward_inputs` -- one program per (position tile, image, channel chunk) recomputes
  the same tiles for every class and accumulates ``dX = dMap W`` (over all blocks that read the
  chunk when the first-level split is off), writing each input gradient once.

Matmul operands stay in the input dtype (float32, bfloat16, float16 or float64); every sum runs in
``ACC`` (float64 for float64 inputs, else float32). Dropout keeps element ``(b, n, m, l)`` when
``tl.rand(seed + b*N + n, m*L + l) >= p`` (Philox keyed per image and block), so the backward
regenerates the forward's mask.

This module imports Triton and defines its kernels at import: :mod:`noah.head.triton_impl`
imports it on first use. Under ``TRITON_INTERPRET=1`` (set before Triton is first imported) the
kernels run on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, NamedTuple

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

__all__ = [
    "Tiles", "KernelArgs", "INTERPRETED", "forward_stats", "backward_weights", "backward_inputs", "dropout_scales",
]


class Tiles(NamedTuple):
    """Tile sizes of one launch (powers of two, at least 16: ``tl.dot``'s smallest operand)."""

    #: positions per tile
    block_l: int
    #: classes per tile
    block_m: int
    #: input channels per step of the key/value recomputation
    block_c: int
    #: input channels of the gradient chunk a backward program owns (``dW``/``dX`` registers)
    block_cw: int
    #: image ranges of :func:`backward_weights` (its partial sums are added up afterwards)
    splits: int
    #: warps per program of the forward and of the backward kernels
    forward_warps: int = 4
    backward_warps: int = 8


class KernelArgs(NamedTuple):
    """What every launch needs besides the tiles: the head's operands and its shape.

    ``xk``/``xv``: ``(B*L, Ck)``/``(B*L, Cv)`` features (any strides); block ``n`` reads columns
    ``[n*k_step, n*k_step + ck)`` of ``xk`` (``k_step`` is ``ck`` with the first-level split, 0
    without) and likewise for ``xv``. ``wk``/``wv``: ``(N, M, ck)``/``(N, M, cv)``;
    ``bk``/``bv``: ``(N, M)``.
    """

    xk: torch.Tensor
    xv: torch.Tensor
    wk: torch.Tensor
    bk: torch.Tensor
    wv: torch.Tensor
    bv: torch.Tensor
    batch: int
    length: int
    k_step: int
    v_step: int
    p: float
    seed: int
    precision: str  # tl.dot's input_precision for float32 operands: "ieee" or "tf32"

    @property
    def heads(self) -> int:
        return self.wk.shape[0]

    @property
    def classes(self) -> int:
        return self.wk.shape[1]

    @property
    def acc_dtype(self) -> torch.dtype:
        return torch.float64 if self.xk.dtype == torch.float64 else torch.float32


# -- device functions ----------------------------------------------------------------------------


@triton.jit
def _project(x_ptr, sx_r, sx_c, col0, rows, row_mask, w_ptr, sw_m, sw_c, b_ptr, sb_m, offs_m, m_mask, channels,
             BL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """``X[rows, col0:col0+channels] @ W[offs_m]^T + b``: a ``(BL, BM)`` tile in ``ACC``."""
    out = tl.zeros((BL, BM), dtype=ACC)
    for c0 in range(0, channels, BC):
        offs_c = c0 + tl.arange(0, BC)
        c_mask = offs_c < channels
        x = tl.load(x_ptr + rows[:, None] * sx_r + (col0 + offs_c)[None, :] * sx_c,
                    mask=row_mask[:, None] & c_mask[None, :], other=0.0)
        w = tl.load(w_ptr + offs_m[None, :] * sw_m + offs_c[:, None] * sw_c,
                    mask=m_mask[None, :] & c_mask[:, None], other=0.0)
        out = tl.dot(x, w, out, input_precision=PRECISION, out_dtype=ACC)
    bias = tl.load(b_ptr + offs_m * sb_m, mask=m_mask, other=0.0).to(ACC)
    return out + bias[None, :]


@triton.jit
def _dropout_scale(seed, p, offs_l, offs_m, L, ACC: tl.constexpr):
    """The scaled dropout mask of a ``(BL, BM)`` tile: ``1/(1-p)`` where kept, else 0.

    ``seed`` is the (image, block)'s Philox key ``seed + b*N + n``; element ``(l, m)`` draws at
    counter ``m*L + l`` (32-bit counters: half the registers of 64-bit ones)."""
    keep = tl.rand(seed, offs_m[None, :] * L + offs_l[:, None]) >= p
    return tl.where(keep, 1.0 / (1.0 - p), 0.0).to(ACC)


@triton.jit
def _tiles(xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, kcol, vcol, b, offs_l, l_mask,
           wk_ptr, swk_m, swk_c, bk_ptr, sbk_m, wv_ptr, swv_m, swv_c, bv_ptr, sbv_m, offs_m, m_mask,
           seed, p, L, ck, cv,
           DROPOUT: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr,
           ACC: tl.constexpr, PRECISION: tl.constexpr):
    """Key logits (``-inf`` at positions past ``L``), dropped-out values and the dropout scale
    (1 without dropout) of one (image, block) tile, all ``(BL, BM)`` in ``ACC``; ``seed`` is
    the (image, block)'s dropout key."""
    rows = b * L + offs_l
    keys = _project(xk_ptr, sxk_r, sxk_c, kcol, rows, l_mask, wk_ptr, swk_m, swk_c, bk_ptr, sbk_m,
                    offs_m, m_mask, ck, BL, BM, BC, ACC, PRECISION)
    values = _project(xv_ptr, sxv_r, sxv_c, vcol, rows, l_mask, wv_ptr, swv_m, swv_c, bv_ptr, sbv_m,
                      offs_m, m_mask, cv, BL, BM, BC, ACC, PRECISION)
    keys = tl.where(l_mask[:, None], keys, float("-inf"))
    if DROPOUT:
        scale = _dropout_scale(seed, p, offs_l, offs_m, L, ACC)
    else:
        scale = tl.full((BL, BM), 1.0, dtype=ACC)
    return keys, values * scale, scale


@triton.jit
def _map_grads(keys, values, scale, row_max, denom, pooled, grad):
    """``dK = A (V' - y) g`` and ``dV = A g * scale`` of one tile (``A`` is 0 past ``L``)."""
    attention = tl.exp(keys - row_max[None, :]) / denom[None, :]
    d_values = attention * grad[None, :]
    d_keys = d_values * (values - pooled[None, :])
    return d_keys, d_values * scale


# -- kernels -------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["seed"])
def _forward_kernel(
    xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, k_step, v_step,
    wk_ptr, swk_n, swk_m, swk_c, bk_ptr, sbk_n, sbk_m,
    wv_ptr, swv_n, swv_m, swv_c, bv_ptr, sbv_n, sbv_m,
    max_ptr, denom_ptr, pooled_ptr,
    B, L, M, N, ck, cv, seed, p,
    DROPOUT: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    m_tile = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n = tl.program_id(2)
    offs_m = m_tile * BM + tl.arange(0, BM)
    m_mask = offs_m < M
    first = (b * N + n) * M
    run_max = tl.full((BM,), float("-inf"), dtype=ACC)
    run_sum = tl.zeros((BM,), dtype=ACC)
    run_acc = tl.zeros((BM,), dtype=ACC)
    for l0 in range(0, L, BL):
        offs_l = l0 + tl.arange(0, BL)
        keys, values, scale = _tiles(
            xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, n * k_step, n * v_step, b, offs_l, offs_l < L,
            wk_ptr + n * swk_n, swk_m, swk_c, bk_ptr + n * sbk_n, sbk_m,
            wv_ptr + n * swv_n, swv_m, swv_c, bv_ptr + n * sbv_n, sbv_m, offs_m, m_mask,
            seed + b * N + n, p, L, ck, cv, DROPOUT, BL, BM, BC, ACC, PRECISION)
        new_max = tl.maximum(run_max, tl.max(keys, axis=0))
        rescale = tl.exp(run_max - new_max)
        weights = tl.exp(keys - new_max[None, :])
        run_sum = run_sum * rescale + tl.sum(weights, axis=0)
        run_acc = run_acc * rescale + tl.sum(weights * values, axis=0)
        run_max = new_max
    out = first + offs_m
    tl.store(max_ptr + out, run_max, mask=m_mask)
    tl.store(denom_ptr + out, run_sum, mask=m_mask)
    tl.store(pooled_ptr + out, run_acc / run_sum, mask=m_mask)


@triton.jit(do_not_specialize=["seed"])
def _backward_weights_kernel(
    xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, k_step, v_step,
    wk_ptr, swk_n, swk_m, swk_c, bk_ptr, sbk_n, sbk_m,
    wv_ptr, swv_n, swv_m, swv_c, bv_ptr, sbv_n, sbv_m,
    max_ptr, denom_ptr, pooled_ptr, grad_ptr,
    dwk_ptr, dwv_ptr, dbk_ptr, dbv_ptr,
    B, L, M, N, ck, cv, seed, p, chunks, images_per_split,
    DROPOUT: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, BCW: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    m_tile = tl.program_id(0)
    n = tl.program_id(1)
    chunk = tl.program_id(2) % chunks
    split = tl.program_id(2) // chunks
    offs_m = m_tile * BM + tl.arange(0, BM)
    m_mask = offs_m < M
    offs_w = chunk * BCW + tl.arange(0, BCW)
    kw_mask = offs_w < ck
    vw_mask = offs_w < cv
    dwk = tl.zeros((BM, BCW), dtype=ACC)
    dwv = tl.zeros((BM, BCW), dtype=ACC)
    dbk = tl.zeros((BM,), dtype=ACC)
    dbv = tl.zeros((BM,), dtype=ACC)
    b_start = split.to(tl.int64) * images_per_split  # int64 loop index: b*L*stride may pass 2**31
    b_stop = tl.minimum(B, b_start + images_per_split)
    for b in range(b_start, b_stop):
        first = (b * N + n) * M
        row_max = tl.load(max_ptr + first + offs_m, mask=m_mask, other=0.0)
        denom = tl.load(denom_ptr + first + offs_m, mask=m_mask, other=1.0)
        pooled = tl.load(pooled_ptr + first + offs_m, mask=m_mask, other=0.0)
        grad = tl.load(grad_ptr + b * M + offs_m, mask=m_mask, other=0.0)
        for l0 in range(0, L, BL):
            offs_l = l0 + tl.arange(0, BL)
            l_mask = offs_l < L
            keys, values, scale = _tiles(
                xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, n * k_step, n * v_step, b, offs_l, l_mask,
                wk_ptr + n * swk_n, swk_m, swk_c, bk_ptr + n * sbk_n, sbk_m,
                wv_ptr + n * swv_n, swv_m, swv_c, bv_ptr + n * sbv_n, sbv_m, offs_m, m_mask,
                seed + b * N + n, p, L, ck, cv, DROPOUT, BL, BM, BC, ACC, PRECISION)
            d_keys, d_values = _map_grads(keys, values, scale, row_max, denom, pooled, grad)
            dbk += tl.sum(d_keys, axis=0)
            dbv += tl.sum(d_values, axis=0)
            rows = b * L + offs_l
            xk = tl.load(xk_ptr + rows[:, None] * sxk_r + (n * k_step + offs_w)[None, :] * sxk_c,
                         mask=l_mask[:, None] & kw_mask[None, :], other=0.0)
            xv = tl.load(xv_ptr + rows[:, None] * sxv_r + (n * v_step + offs_w)[None, :] * sxv_c,
                         mask=l_mask[:, None] & vw_mask[None, :], other=0.0)
            dwk = tl.dot(tl.trans(d_keys.to(xk.dtype)), xk, dwk, input_precision=PRECISION, out_dtype=ACC)
            dwv = tl.dot(tl.trans(d_values.to(xv.dtype)), xv, dwv, input_precision=PRECISION, out_dtype=ACC)
    part = (split * N + n).to(tl.int64) * M + offs_m  # row of the (splits, N, M, c) partial sums
    tl.store(dwk_ptr + part[:, None] * ck + offs_w[None, :], dwk, mask=m_mask[:, None] & kw_mask[None, :])
    tl.store(dwv_ptr + part[:, None] * cv + offs_w[None, :], dwv, mask=m_mask[:, None] & vw_mask[None, :])
    if chunk == 0:
        tl.store(dbk_ptr + part, dbk, mask=m_mask)
        tl.store(dbv_ptr + part, dbv, mask=m_mask)


@triton.jit(do_not_specialize=["seed"])
def _backward_inputs_kernel(
    xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, k_step, v_step,
    wk_ptr, swk_n, swk_m, swk_c, bk_ptr, sbk_n, sbk_m,
    wv_ptr, swv_n, swv_m, swv_c, bv_ptr, sbv_n, sbv_m,
    max_ptr, denom_ptr, pooled_ptr, grad_ptr,
    dxk_ptr, sdxk_r, sdxk_c, dxv_ptr, sdxv_r, sdxv_c,
    B, L, M, N, ck, cv, seed, p, chunks, blocks_per_program,
    DROPOUT: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, BCW: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    offs_l = tl.program_id(0) * BL + tl.arange(0, BL)
    l_mask = offs_l < L
    b = tl.program_id(1).to(tl.int64)
    chunk = tl.program_id(2) % chunks
    n_start = (tl.program_id(2) // chunks) * blocks_per_program
    offs_w = chunk * BCW + tl.arange(0, BCW)
    kw_mask = offs_w < ck
    vw_mask = offs_w < cv
    dxk = tl.zeros((BL, BCW), dtype=ACC)
    dxv = tl.zeros((BL, BCW), dtype=ACC)
    for n in range(n_start, n_start + blocks_per_program):
        first_n = (b * N + n) * M
        for m0 in range(0, M, BM):
            offs_m = m0 + tl.arange(0, BM)
            m_mask = offs_m < M
            row_max = tl.load(max_ptr + first_n + offs_m, mask=m_mask, other=0.0)
            denom = tl.load(denom_ptr + first_n + offs_m, mask=m_mask, other=1.0)
            pooled = tl.load(pooled_ptr + first_n + offs_m, mask=m_mask, other=0.0)
            grad = tl.load(grad_ptr + b * M + offs_m, mask=m_mask, other=0.0)
            keys, values, scale = _tiles(
                xk_ptr, sxk_r, sxk_c, xv_ptr, sxv_r, sxv_c, n * k_step, n * v_step, b, offs_l, l_mask,
                wk_ptr + n * swk_n, swk_m, swk_c, bk_ptr + n * sbk_n, sbk_m,
                wv_ptr + n * swv_n, swv_m, swv_c, bv_ptr + n * sbv_n, sbv_m, offs_m, m_mask,
                seed + b * N + n, p, L, ck, cv, DROPOUT, BL, BM, BC, ACC, PRECISION)
            d_keys, d_values = _map_grads(keys, values, scale, row_max, denom, pooled, grad)
            wk = tl.load(wk_ptr + n * swk_n + offs_m[:, None] * swk_m + offs_w[None, :] * swk_c,
                         mask=m_mask[:, None] & kw_mask[None, :], other=0.0)
            wv = tl.load(wv_ptr + n * swv_n + offs_m[:, None] * swv_m + offs_w[None, :] * swv_c,
                         mask=m_mask[:, None] & vw_mask[None, :], other=0.0)
            dxk = tl.dot(d_keys.to(wk.dtype), wk, dxk, input_precision=PRECISION, out_dtype=ACC)
            dxv = tl.dot(d_values.to(wv.dtype), wv, dxv, input_precision=PRECISION, out_dtype=ACC)
    rows = b * L + offs_l
    tl.store(dxk_ptr + rows[:, None] * sdxk_r + (n_start * k_step + offs_w)[None, :] * sdxk_c,
             dxk.to(dxk_ptr.dtype.element_ty), mask=l_mask[:, None] & kw_mask[None, :])
    tl.store(dxv_ptr + rows[:, None] * sdxv_r + (n_start * v_step + offs_w)[None, :] * sdxv_c,
             dxv.to(dxv_ptr.dtype.element_ty), mask=l_mask[:, None] & vw_mask[None, :])


@triton.jit(do_not_specialize=["seed"])
def _dropout_kernel(out_ptr, B, L, M, N, seed, p, BL: tl.constexpr, BM: tl.constexpr):
    m_tile = tl.program_id(0)
    image_block = tl.program_id(1).to(tl.int64)  # b*N + n
    offs_m = m_tile * BM + tl.arange(0, BM)
    for l0 in range(0, L, BL):
        offs_l = l0 + tl.arange(0, BL)
        scale = _dropout_scale(seed + image_block, p, offs_l, offs_m, L, tl.float32)
        where = (image_block * M + offs_m[None, :]) * L + offs_l[:, None]
        tl.store(out_ptr + where, scale, mask=(offs_m < M)[None, :] & (offs_l < L)[:, None])


#: the kernels run through Triton's interpreter (``TRITON_INTERPRET=1`` when Triton was imported)
INTERPRETED = isinstance(_forward_kernel, InterpretedFunction) and isinstance(tl.rand, InterpretedFunction)

_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


# -- launchers -----------------------------------------------------------------------------------


def _on_device(t: torch.Tensor) -> ContextManager:
    """Triton launches on the current CUDA device: make it ``t``'s."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def _operands(a: KernelArgs) -> tuple:
    """The leading arguments shared by the three head kernels, in their order."""
    return (
        a.xk, a.xk.stride(0), a.xk.stride(1), a.xv, a.xv.stride(0), a.xv.stride(1), a.k_step, a.v_step,
        a.wk, *a.wk.stride(), a.bk, *a.bk.stride(), a.wv, *a.wv.stride(), a.bv, *a.bv.stride(),
    )


def _meta(a: KernelArgs, tiles: Tiles, backward: bool) -> dict:
    meta = dict(DROPOUT=a.p > 0.0, BL=tiles.block_l, BM=tiles.block_m, BC=tiles.block_c,
                ACC=_TL_DTYPES[a.acc_dtype], PRECISION=a.precision, num_warps=tiles.forward_warps)
    if backward:
        meta.update(BCW=tiles.block_cw, num_warps=tiles.backward_warps)
    return meta


def _chunks(a: KernelArgs, tiles: Tiles) -> int:
    return triton.cdiv(max(a.wk.shape[2], a.wv.shape[2]), tiles.block_cw)


def forward_stats(a: KernelArgs, tiles: Tiles) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row maximum of the keys, softmax normaliser and pooled output ``y_n``, each ``(B, N, M)``
    in the accumulation dtype; the logits are ``pooled.sum(1)``."""
    n, m = a.heads, a.classes
    row_max, denom, pooled = torch.empty(3, a.batch, n, m, dtype=a.acc_dtype, device=a.xk.device).unbind(0)
    grid = (triton.cdiv(m, tiles.block_m), a.batch, n)
    with _on_device(a.xk):
        _forward_kernel[grid](
            *_operands(a), row_max, denom, pooled,
            a.batch, a.length, m, n, a.wk.shape[2], a.wv.shape[2], a.seed, a.p, **_meta(a, tiles, False),
        )
    return row_max, denom, pooled


def backward_weights(
    a: KernelArgs, tiles: Tiles, stats: tuple[torch.Tensor, ...], grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dWk (N, M, ck)``, ``dbk (N, M)``, ``dWv (N, M, cv)``, ``dbv (N, M)`` in the accumulation
    dtype, for the logits' gradient ``grad`` ``(B, M)`` (contiguous, accumulation dtype)."""
    n, m, ck, cv = a.heads, a.classes, a.wk.shape[2], a.wv.shape[2]
    per_split = triton.cdiv(a.batch, tiles.splits)
    splits = triton.cdiv(a.batch, per_split)
    chunks = _chunks(a, tiles)
    new = lambda *shape: torch.empty(splits, *shape, dtype=a.acc_dtype, device=a.xk.device)  # noqa: E731
    dwk, dwv, dbk, dbv = new(n, m, ck), new(n, m, cv), new(n, m), new(n, m)
    grid = (triton.cdiv(m, tiles.block_m), n, chunks * splits)
    with _on_device(a.xk):
        _backward_weights_kernel[grid](
            *_operands(a), *stats, grad, dwk, dwv, dbk, dbv,
            a.batch, a.length, m, n, ck, cv, a.seed, a.p, chunks, per_split, **_meta(a, tiles, True),
        )
    return dwk.sum(0), dbk.sum(0), dwv.sum(0), dbv.sum(0)


def backward_inputs(
    a: KernelArgs, tiles: Tiles, stats: tuple[torch.Tensor, ...], grad: torch.Tensor, head_split: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dXk`` and ``dXv``, shaped and typed like ``a.xk``/``a.xv`` (contiguous)."""
    n, m = a.heads, a.classes
    dxk = torch.empty_like(a.xk, memory_format=torch.contiguous_format)
    dxv = torch.empty_like(a.xv, memory_format=torch.contiguous_format)
    chunks = _chunks(a, tiles)
    groups, per_program = (n, 1) if head_split else (1, n)
    grid = (triton.cdiv(a.length, tiles.block_l), a.batch, groups * chunks)
    with _on_device(a.xk):
        _backward_inputs_kernel[grid](
            *_operands(a), *stats, grad, dxk, *dxk.stride(), dxv, *dxv.stride(),
            a.batch, a.length, m, n, a.wk.shape[2], a.wv.shape[2], a.seed, a.p, chunks, per_program,
            **_meta(a, tiles, True),
        )
    return dxk, dxv


def dropout_scales(batch: int, heads: int, classes: int, length: int, seed: int, p: float,
                   device: torch.device) -> torch.Tensor:
    """The scaled dropout mask ``(B, N, M, L)`` (float32) the head kernels draw for ``seed``."""
    out = torch.empty(batch, heads, classes, length, device=device)
    grid = (triton.cdiv(classes, 64), batch * heads)
    with _on_device(out):
        _dropout_kernel[grid](out, batch, length, classes, heads, seed, p, BL=16, BM=64)
    return out
