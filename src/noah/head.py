"""The NOAH head: pairwise object category attention (POCA) over a feature map.

For a feature map ``X`` with ``C`` channels at ``L = H*W`` positions, ``M`` classes, ``N`` POCA
blocks and key ratio ``r`` (SPEC §2):

* the first ``Ck = int(C*r)`` channels feed the key embedding, the other ``Cv = C - Ck`` the
  value embedding (second-level split);
* each part is cut into ``N`` equal consecutive channel groups (first-level split);
* block ``n`` projects its key group to ``K_n`` (``M x L``) and its value group to ``V_n``
  (``M x L``), both 1x1 projections with bias;
* ``A_n = softmax_L(K_n)``; the logits are ``y = sum_n sum_l A_n[:, l] * V_n[:, l]``.

The parameters live in two grouped 1x1 ``Conv2d`` modules named ``query`` (key embedding) and
``value``, exactly as in the official checkpoints (output channel ``n*M + m``), so released
weights load unchanged. How the forward pass uses them is an implementation detail; three
implementations compute the same numbers (see :meth:`NOAHHead.set_impl`):

``"plain"``
    the formula as written (grouped ``conv2d``, softmax, product, sum) -- the reference.
``"fast"`` (default)
    batched matmuls over one channels-last view of ``X``. Without autograd on CPU it never
    materialises the attention: since softmax ignores a per-class shift, the keys are computed
    from *position-centred* features (``K - mean_l K``, which also drops the key bias) and
    pre-scaled by ``log2(e)``, so ``exp2`` of the matmul output is the unnormalised attention with
    no max pass; ``y = sum_n (sum_l E*V') / (sum_l E) + sum_n b_v`` with the value bias added
    once at the end. In float32 this runs in the compiled kernel of :mod:`noah.cpu_kernel`
    (matmuls, exponentials and sums fused, no map written to memory) where it is built, else in
    cache-sized chunks of PyTorch ops. An overflowing exponential (a class whose key logits
    spread more than ~88 over the positions) is detected and the logits recomputed with the
    exact max-subtracted softmax. With autograd, under ``torch.compile``/export or a dispatch
    mode, with autocast or on other devices it uses the same matmuls with an explicit softmax.
``"lean"``
    the fast matmuls inside a custom autograd function that keeps only the input for backward
    and recomputes attention and values class chunk by class chunk, so training memory does not
    grow with ``B*N*M*L``. Dropout masks are drawn per chunk from a generator seeded from the
    global RNG and redrawn identically in backward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _python_dispatch

from noah import cpu_kernel
from noah.errors import ConfigError, ShapeError

__all__ = ["NOAHHead", "NOAHOutput", "split_channels"]

_LOG2E = math.log2(math.e)


class NOAHOutput(NamedTuple):
    """What :meth:`NOAHHead.forward` returns with ``return_maps=True``.

    ``logits`` is ``(B, M)``; ``attention`` and ``value`` are ``(B, N, M, H, W)``: per POCA block,
    the softmax attention over positions and the value map (after dropout, as used).
    """

    logits: torch.Tensor
    attention: torch.Tensor
    value: torch.Tensor


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


def _graph_mode() -> bool:
    """True while tracing for ``torch.compile``, ``torch.export``/ONNX or TorchScript."""
    # the TorchScript-based ONNX exporter traces, the dynamo-based one compiles
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()


def _dispatch_mode_active() -> bool:
    """True under a TorchDispatchMode (FlopCounterMode, FakeTensorMode, ...): such a mode has to
    see every op, which the compiled kernel would hide from it."""
    return bool(getattr(_python_dispatch, "is_in_torch_dispatch_mode", lambda: False)())


def _block_inputs(x2d: torch.Tensor, num_heads: int, head_split: bool) -> torch.Tensor:
    """``(R, c)`` features to the ``(N, R, c/N)`` per-block matmul operand (a view).

    Without the first-level split every block sees all ``c`` channels (a stride-0 expand).
    """
    if head_split:
        return x2d.unflatten(1, (num_heads, -1)).transpose(0, 1)
    return x2d.unsqueeze(0).expand(num_heads, -1, -1)


def _prefix(buffer: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous ``shape`` view onto the start of a flat scratch ``buffer``."""
    return buffer[: math.prod(shape)].view(shape)


class _Projection(NamedTuple):
    """The head's parameters as per-block matmul operands (views of the conv parameters).

    ``wk``/``wv`` are ``(N, M, ck)``/``(N, M, cv)``, ``bk``/``bv`` are ``(N, M)``.
    """

    wk: torch.Tensor
    bk: torch.Tensor
    wv: torch.Tensor
    bv: torch.Tensor


def _class_chunk_maps(
    gk: torch.Tensor,
    gv: torch.Tensor,
    proj: _Projection,
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


class _LeanPOCA(torch.autograd.Function):
    """POCA logits with chunked recomputation: saves the inputs only, never ``O(B*N*M*L)`` maps.

    ``forward(xk, xv, wk, bk, wv, bv, num_heads, batch, head_split, p, seed, budget)`` with
    ``xk``/``xv`` the ``(B*L, ck)``/``(B*L, cv)`` key/value features, weights as in
    :class:`_Projection`; returns float32 (float64) logits ``(B, M)``.
    """

    @staticmethod
    def forward(ctx, xk, xv, wk, bk, wv, bv, num_heads, batch, head_split, p, seed, budget):  # type: ignore[override]
        ctx.save_for_backward(xk, xv, wk, bk, wv, bv)
        ctx.config = (num_heads, batch, head_split, p, seed, budget)
        proj = _Projection(wk, bk, wv, bv)
        gk, gv = _block_inputs(xk, num_heads, head_split), _block_inputs(xv, num_heads, head_split)
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
        proj = _Projection(wk, bk, wv, bv)
        gk, gv = _block_inputs(xk, num_heads, head_split), _block_inputs(xv, num_heads, head_split)
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


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


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
        impl: ``"fast"`` (default), ``"plain"`` or ``"lean"``; all give the same numbers, see
            :meth:`set_impl` and the module docstring.
        chunk_elements: working-set size, in map elements, of one chunk of the chunked paths
            (``"fast"`` CPU inference through PyTorch ops, and ``"lean"``; the compiled kernel
            blocks its work by itself); only speed and peak memory depend on it.
    """

    IMPLS = ("fast", "plain", "lean")

    #: default chunk size of the fast CPU inference path (~4 MiB of float32 per map; measured
    #: best of 2^17..2^22 on a 2-core EPYC for the ResNet18 and MobileNetV2 head shapes)
    INFERENCE_CHUNK = 1 << 20
    #: default chunk size of the lean training path (~16 MiB of float32 per map)
    LEAN_CHUNK = 1 << 22

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
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}")
        if chunk_elements is not None and (not isinstance(chunk_elements, int) or chunk_elements <= 0):
            raise ConfigError(f"chunk_elements must be a positive integer, got {chunk_elements!r}")
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
        out = num_heads * num_classes
        self.query = nn.Conv2d(key_channels, out, kernel_size=1, groups=self.groups, bias=True)
        self.value = nn.Conv2d(value_channels, out, kernel_size=1, groups=self.groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.impl = "fast"
        self.set_impl(impl)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_out) weights, zero biases."""
        for conv in (self.query, self.value):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def set_impl(self, impl: str) -> "NOAHHead":
        """Choose the implementation: ``"fast"``, ``"plain"`` or ``"lean"``; returns ``self``.

        ``"plain"`` is the reference formula, ``"fast"`` the quick one, ``"lean"`` the fast one
        with a training backward that keeps no ``(B, N, M, L)`` activations (recomputes them in
        class chunks; slower backward, a fraction of the memory). Only how dropout masks are
        drawn differs: ``"fast"`` draws the same mask as ``"plain"`` for the same seed,
        ``"lean"`` draws its own (same distribution). While traced by ``torch.compile``,
        ``torch.export`` or the ONNX exporter, ``"fast"`` and ``"lean"`` both use the explicit
        matmul + softmax formulation (one graph, no Python loop; Inductor fuses it).
        """
        if impl not in self.IMPLS:
            raise ConfigError(f"unknown NOAH head impl {impl!r}; expected one of {', '.join(self.IMPLS)}")
        self.impl = impl
        return self

    @property
    def groups(self) -> int:
        return self.num_heads if self.head_split else 1

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
            f"key_ratio={self.key_ratio}, head_split={self.head_split}, kv_split={self.kv_split}, impl={self.impl!r}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ShapeError(
                f"NOAHHead expects a feature map of shape (B, C, H, W) with C={self.in_channels}, "
                f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"NOAHHead expects {self.in_channels} input channels (B, C, H, W), got {x.shape[1]} "
                f"in a tensor of shape {tuple(x.shape)}"
            )

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.kv_split:
            return x, x
        return x[:, : self.key_channels], x[:, self.key_channels :]

    @property
    def _dropout_active(self) -> bool:
        return self.training and self.dropout.p > 0.0

    def _projection(self) -> _Projection:
        n, m = self.num_heads, self.num_classes
        return _Projection(
            self.query.weight.view(n, m, -1), self.query.bias.view(n, m),
            self.value.weight.view(n, m, -1), self.value.bias.view(n, m),
        )

    # -- reference -----------------------------------------------------------------------------

    def _logits_and_maps_plain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The formula as written: grouped 1x1 convolutions, softmax, product, sum.

        Returns logits ``(B, M)`` and attention/value maps ``(B, N, M, L)``.
        """
        b, length = x.shape[0], x.shape[2] * x.shape[3]
        n, m = self.num_heads, self.num_classes
        x_key, x_value = self._inputs(x)
        keys = self.query(x_key).reshape(b, n, m, length)
        values = self.dropout(self.value(x_value).reshape(b, n, m, length))
        attention = keys.softmax(dim=-1)
        logits = (attention * values).sum(dim=(1, 3))
        return logits, attention, values

    # -- fast ----------------------------------------------------------------------------------

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value features as ``(B*L, Ck)``/``(B*L, Cv)`` matrices over one channels-last
        view of ``x`` (free for channels_last inputs and for ``B == 1``, else one copy)."""
        b, c, h, w = x.shape
        if b == 1:
            x2d = x.reshape(c, h * w).t()
        elif x.is_contiguous(memory_format=torch.channels_last):
            x2d = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view
        else:
            # (B, C, L) -> (B, L, C): this 3-d transpose copies ~5x faster than a 4-d permute
            x2d = x.reshape(b, c, h * w).transpose(1, 2).contiguous().view(b * h * w, c)
        if not self.kv_split:
            return x2d, x2d
        return x2d[:, : self.key_channels], x2d[:, self.key_channels :]

    def _dropout_mask(self, b: int, length: int, like: torch.Tensor) -> torch.Tensor:
        """The scaled dropout mask ``nn.Dropout`` would draw for the plain path's ``(B, N, M, L)``
        value map (same RNG calls, same order), permuted to the fast layout ``(N, B, L, M)``."""
        ones = like.new_ones(()).expand(b, self.num_heads, self.num_classes, length)
        return F.dropout(ones, self.dropout.p, training=True).permute(1, 0, 3, 2)

    def _logits_and_maps_fast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Same numbers as the plain path, as two batched matmuls over the channels-last features.

        Maps come out laid out ``(N, B, L, M)`` so that the reductions over positions run over
        contiguous class vectors. Returns logits ``(B, M)`` and the maps as ``(B, N, M, L)`` views.
        """
        b, length = x.shape[0], x.shape[2] * x.shape[3]
        n, m = self.num_heads, self.num_classes
        proj = self._projection()
        xk, xv = self._features(x)
        gk, gv = _block_inputs(xk, n, self.head_split), _block_inputs(xv, n, self.head_split)
        keys = torch.baddbmm(proj.bk[:, None], gk, proj.wk.transpose(1, 2)).view(n, b, length, m)
        values = torch.baddbmm(proj.bv[:, None], gv, proj.wv.transpose(1, 2)).view(n, b, length, m)
        if self._dropout_active:
            values = values * self._dropout_mask(b, length, values)
        attention = keys.softmax(dim=2)
        logits = (attention * values).sum(dim=2).sum(dim=0)
        return logits, attention.permute(1, 0, 3, 2), values.permute(1, 0, 3, 2)

    def _logits_fused(self, x: torch.Tensor) -> torch.Tensor | None:
        """Float32 CPU inference logits ``(B, M)`` by the fused kernel (:mod:`noah.cpu_kernel`).

        The kernel centres the key features over positions (softmax ignores a per-class shift,
        so the key bias drops out too) and adds the value bias once per block, since the
        attention sums to one. The weights are read as they are at this call (no packed copy is
        kept between calls, so even writes through ``.data`` are seen). Returns ``None`` if some
        logit is not finite (an exponential overflowed, or the features were not finite); the
        caller then recomputes.
        """
        b, c, h, w = x.shape
        n, m = self.num_heads, self.num_classes
        if x.is_contiguous(memory_format=torch.channels_last):
            x3d = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, L, C) views either way
        else:
            x3d = x.reshape(b, c, h * w).transpose(1, 2)
        wk = self.query.weight.detach().reshape(n * m, -1).contiguous()
        wv = self.value.weight.detach().reshape(n * m, -1).contiguous()
        key_channels, value_offset = (c, 0) if not self.kv_split else (self.key_channels, self.key_channels)
        steps = (wk.shape[1], wv.shape[1]) if self.head_split else (0, 0)
        bias = self.value.bias.detach().contiguous()
        return cpu_kernel.fused_logits(x3d, wk, wv, bias, n, key_channels, value_offset, *steps)

    def _logits_chunked(self, x: torch.Tensor) -> torch.Tensor | None:
        """Inference logits ``(B, M)`` without materialising the attention (see module docstring).

        Works through (image, class) chunks of about ``chunk_elements`` map elements, reusing two
        scratch buffers. Returns ``None`` if some exponential overflowed (caller falls back).
        """
        b, length = x.shape[0], x.shape[2] * x.shape[3]
        n, m = self.num_heads, self.num_classes
        xk, xv = self._features(x)
        # keys from position-centred, log2(e)-scaled features: exp2(K') = exp(K - mean_l K)
        xk = xk.reshape(b, length, -1)
        xk = torch.sub(xk, xk.mean(dim=1, keepdim=True)).mul_(_LOG2E).reshape(b * length, -1)
        wk = self.query.weight.view(n, m, -1).transpose(1, 2)  # (N, ck, M)
        wv = self.value.weight.view(n, m, -1).transpose(1, 2)
        bias = self.value.bias.view(n, m).sum(dim=0)  # sum_l A = 1: the value bias adds once per block

        budget = self.chunk_elements or self.INFERENCE_CHUNK
        images = max(1, min(b, budget // (n * length * m)))
        classes = m if images > 1 else max(1, min(m, budget // (n * length)))
        gk_all, gv_all = _block_inputs(xk, n, self.head_split), _block_inputs(xv, n, self.head_split)
        if self.head_split and (images < b or classes < m):
            # one block-major copy up front; otherwise bmm copies the strided operands per chunk
            gk_all, gv_all = gk_all.contiguous(), gv_all.contiguous()
        if images == b and classes == m:
            pooled = self._pool(gk_all, gv_all, wk, wv, b)
        else:
            scratch = x.new_empty(2, n * images * length * classes)
            pooled = x.new_empty(n, b, m)
            for b0 in range(0, b, images):
                bc = min(images, b - b0)
                rows = slice(b0 * length, (b0 + bc) * length)
                gk, gv = gk_all[:, rows], gv_all[:, rows]
                for m0 in range(0, m, classes):
                    cls = slice(m0, min(m, m0 + classes))
                    pooled[:, b0 : b0 + bc, cls] = self._pool(gk, gv, wk[:, :, cls], wv[:, :, cls], bc, scratch)
        logits = pooled.sum(dim=0).add_(bias)
        if not math.isfinite(float(logits.sum())):
            return None
        return logits

    @staticmethod
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

    def _logits_lean(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` through :class:`_LeanPOCA` (memory-lean backward)."""
        xk, xv = self._features(x)
        proj = self._projection()
        p = self.dropout.p if self._dropout_active else 0.0
        # the generator seed comes from the global RNG, so torch.manual_seed makes it reproducible
        seed = int(torch.randint(0, 2**62, (), device="cpu")) if p > 0.0 else 0
        device_type = x.device.type
        tensors = (xk, xv, *proj)
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            tensors = tuple(t.to(dtype) for t in tensors)
        with torch.autocast(device_type, enabled=False):
            logits = _LeanPOCA.apply(
                *tensors, self.num_heads, x.shape[0], self.head_split, p, seed,
                self.chunk_elements or self.LEAN_CHUNK,
            )
        return logits

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor | NOAHOutput:
        """Logits ``(B, M)`` for features ``(B, C, H, W)``.

        With ``return_maps=True``, a :class:`NOAHOutput` that also holds the attention and value
        maps ``(B, N, M, H, W)`` of the same pass.
        """
        self._check_input(x)
        if self.impl == "plain":
            logits, attention, values = self._logits_and_maps_plain(x)
        elif return_maps:
            logits, attention, values = self._logits_and_maps_fast(x)
        else:
            return self._logits(x)
        if not return_maps:
            return logits
        shape = (x.shape[0], self.num_heads, self.num_classes, x.shape[2], x.shape[3])
        return NOAHOutput(logits, attention.reshape(shape), values.reshape(shape))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pick the fastest exact path for logits only (``impl`` is ``"fast"`` or ``"lean"``)."""
        if _graph_mode() or x.shape[0] == 0:  # one traceable graph; an empty batch needs no chunks
            return self._logits_and_maps_fast(x)[0]
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in (self.query.weight, self.value.weight))
        )
        if self.impl == "lean" and (needs_grad or self._dropout_active):
            logits = self._logits_lean(x)
            return logits if torch.is_autocast_enabled(x.device.type) else logits.to(x.dtype)
        chunkable = (
            not needs_grad
            and not self._dropout_active
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu")
        )
        fused = (
            chunkable
            and x.dtype == self.query.weight.dtype == self.value.weight.dtype == torch.float32
            and cpu_kernel.fused_available()
            and not _dispatch_mode_active()
        )
        if fused:
            logits = self._logits_fused(x)
            if logits is not None:
                return logits
        elif chunkable:
            logits = self._logits_chunked(x)
            if logits is not None:
                return logits
        return self._logits_and_maps_fast(x)[0]
