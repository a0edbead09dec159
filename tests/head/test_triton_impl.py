"""The ``"triton"`` implementation (noah.head.triton_impl) against SPEC §2's formula.

Without a GPU these run the Triton kernels on CPU tensors through Triton's interpreter
(``TRITON_INTERPRET=1``, set by tests/conftest.py before Triton is imported); with one, on CUDA
tensors. The interpreter runs every kernel op in Python, so shapes are small and each test makes
few calls; tiles are forced small where a test is about tile edges.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from noah import ConfigError, NOAHHead
from noah.head import triton_impl
from noah.head.layout import dropout_seed
from noah.head.registry import Call, kernels_for

triton = pytest.importorskip("triton", reason="the triton package is not installed (Linux + CUDA wheels ship it)")
from noah.head import triton_kernels  # noqa: E402  (after the importorskip)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and not triton_kernels.INTERPRETED:
    raise RuntimeError("the Triton tests need TRITON_INTERPRET=1 set before triton is imported (tests/conftest.py)")

SPLITS = [(True, True), (False, True), (True, False), (False, False)]


def make_head(c, m, n, r=0.5, dtype=torch.float64, **options):
    """A ``"triton"`` head with random weights and non-zero biases, on the test device."""
    head = NOAHHead(c, m, n, r, impl="triton", **options)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
        head.query.weight.mul_(0.5)  # key logits spread over a few units, as in a trained head
    return head.to(DEVICE, dtype)


def features(b, c, h, w, dtype=torch.float64, seed=1):
    x = torch.randn(b, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x.to(DEVICE, dtype)


def upstream(b, m, seed=2):
    """The gradient that flows into the logits."""
    return torch.randn(b, m, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def train_step(head, x, grad):
    """Logits, input gradient and parameter gradients of one backward pass through ``head``."""
    x = x.detach().clone().requires_grad_()
    head.zero_grad(set_to_none=True)
    logits = head(x)
    logits.backward(grad.to(logits.dtype))
    return [logits.detach(), x.grad] + [p.grad for p in head.parameters()]


def reference_step(head, x, grad, mask=None):
    """:func:`train_step` by the formula of SPEC §2 in float64 (einsum, softmax, product, sum).

    ``mask``: ``(B, N, M, L)`` scales applied to the values (dropout), or ``None``.
    """
    n, m = head.num_heads, head.num_classes
    wq, bq, wv, bv = (p.detach().double().requires_grad_() for p in head.parameters())
    xd = x.detach().double().requires_grad_()
    flat = xd.flatten(2)  # (B, C, L)
    fk, fv = (flat[:, : head.key_channels], flat[:, head.key_channels :]) if head.kv_split else (flat, flat)

    def embed(f, weight, bias):
        f = f.unflatten(1, (n, -1)) if head.head_split else f[:, None].expand(-1, n, -1, -1)
        return torch.einsum("bncl,nmc->bnml", f, weight.view(n, m, -1)) + bias.view(1, n, m, 1)

    keys, values = embed(fk, wq, bq), embed(fv, wv, bv)
    if mask is not None:
        values = values * mask.double()
    logits = (keys.softmax(dim=-1) * values).sum(dim=(1, 3))
    grads = torch.autograd.grad(logits, [xd, wq, bq, wv, bv], grad.double())
    return [logits.detach(), *grads]


def assert_close(actual, expected, tol):
    """Equal to ``tol`` relative to the largest expected magnitude (at least 1: the key-bias
    gradient is zero in exact arithmetic, so it is compared absolutely)."""
    assert actual.shape == expected.shape
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=tol * scale)


def assert_steps_close(got, want, tol):
    for a, e in zip(got, want, strict=True):
        assert_close(a, e, tol)


def small_tiles(monkeypatch, **sizes):
    """Force the tiles of every launch (defaults: the smallest ``tl.dot`` takes)."""
    tiles = triton_kernels.Tiles(**{"block_l": 16, "block_m": 16, "block_c": 16, "block_cw": 16, "splits": 1, **sizes})
    monkeypatch.setattr(triton_impl, "choose_tiles", lambda *args: tiles)


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_split,kv_split", SPLITS)
def test_float64_matches_the_formula_and_plain(head_split, kv_split):
    head = make_head(32, 5, 2, 0.25, head_split=head_split, kv_split=kv_split)  # ck != cv per block
    x, g = features(2, 32, 3, 3), upstream(2, 5)
    got = train_step(head, x, g)
    assert got[0].dtype == got[1].dtype == torch.float64
    assert_steps_close(got, reference_step(head, x, g), 1e-10)
    assert_steps_close(got, train_step(head.set_impl("plain"), x, g), 1e-10)


@pytest.mark.parametrize("head_split,kv_split", [(True, True), (False, False)])
def test_float32_matches_the_float64_formula(head_split, kv_split):
    head = make_head(32, 5, 2, 0.25, dtype=torch.float32, head_split=head_split, kv_split=kv_split)
    x, g = features(2, 32, 3, 3, torch.float32), upstream(2, 5)
    got = train_step(head, x, g)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert_steps_close(got, reference_step(head, x, g), 1e-5)
    with torch.no_grad():  # inference: the forward kernel alone
        assert_close(head.eval()(x), got[0], 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("head_split", [True, False])
def test_tile_edges(monkeypatch, head_split):
    """Several partial tiles in every direction: 20 positions in 16-position tiles, 20 classes in
    16-class tiles, 12 key and 28 value channels per block in 16-channel steps and gradient
    chunks, 3 images in 2 weight-gradient ranges."""
    small_tiles(monkeypatch, splits=2)
    c = 80 if head_split else 40  # 12 key and 28 value channels per block either way
    head = make_head(c, 20, 2, 0.3, head_split=head_split)
    x, g = features(3, c, 4, 5), upstream(3, 20)
    assert_steps_close(train_step(head, x, g), reference_step(head, x, g), 1e-10)


@pytest.mark.parametrize("b,c,m,n,h,w", [
    (2, 8, 1, 1, 2, 3),  # one class, one block
    (1, 32, 3, 8, 3, 3),  # eight blocks of 2 key and 2 value channels
    (2, 16, 4, 2, 1, 1),  # one position: the attention is 1
], ids=["M1-N1", "N8", "L1"])
def test_odd_shapes(b, c, m, n, h, w):
    head = make_head(c, m, n)
    x, g = features(b, c, h, w), upstream(b, m)
    assert_steps_close(train_step(head, x, g), reference_step(head, x, g), 1e-10)


@pytest.mark.slow
def test_21841_classes(monkeypatch):
    """ImageNet-21k's class count (the last class tile is partial). Wide class tiles keep the
    interpreter's program count down; the index arithmetic is the same as with 64."""
    if DEVICE.type == "cpu":
        small_tiles(monkeypatch, block_m=2048)
    head = make_head(16, 21841, 1)
    x, g = features(1, 16, 2, 2), upstream(1, 21841)
    assert_steps_close(train_step(head, x, g), reference_step(head, x, g), 1e-10)


def test_overflowing_keys_stay_exact():
    """Key logits far past float32's exp range: the running max keeps the softmax exact."""
    head = make_head(16, 3, 2, dtype=torch.float32)
    with torch.no_grad():
        head.query.weight.mul_(400)
    x, g = features(2, 16, 3, 3, torch.float32), upstream(2, 3)
    got = train_step(head, x, g)
    assert all(bool(t.isfinite().all()) for t in got)
    assert_steps_close(got, reference_step(head, x, g), 1e-5)


@pytest.mark.slow
def test_gradcheck_float64():
    """``torch.autograd.gradcheck`` of the autograd function (fast mode: one random direction)."""
    n, m, c, length = 2, 3, 8, 4
    x2d = torch.randn(length, c, dtype=torch.float64, device=DEVICE)  # one image, (L, C)
    wk, bk, wv, bv = (torch.randn(*shape, dtype=torch.float64, device=DEVICE)
                      for shape in ((n, m, c // 2 // n), (n, m), (n, m, c // 2 // n), (n, m)))
    weights = [wk, bk, wv, bv]
    inputs = [t.clone().requires_grad_() for t in [x2d[:, : c // 2], x2d[:, c // 2 :], *weights]]
    plan = triton_impl._Plan(batch=1, length=length, head_split=True, p=0.0, seed=0)
    assert torch.autograd.gradcheck(lambda *t: triton_impl.TritonPOCA.apply(*t, plan), inputs, fast_mode=True)


# -- dropout -------------------------------------------------------------------------------------


def test_dropout_uses_the_kernels_mask_in_forward_and_backward():
    """The mask drawn from the seed (regenerated by the mask kernel) gives the reference's logits
    and gradients: the backward used the forward's mask."""
    p, b, c, m, n, h, w = 0.5, 2, 16, 5, 2, 3, 3
    head = make_head(c, m, n, dropout=p).train()
    x, g = features(b, c, h, w), upstream(b, m)
    torch.manual_seed(5)
    got = train_step(head, x, g)
    torch.manual_seed(5)
    mask = triton_kernels.dropout_scales(b, n, m, h * w, dropout_seed(), p, DEVICE)
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    assert_steps_close(got, reference_step(head, x, g, mask), 1e-10)


@pytest.mark.slow
def test_dropout_is_reproducible_and_differs_between_steps():
    head = make_head(16, 5, 2, dtype=torch.float32, dropout=0.3).train()
    x, g = features(2, 16, 3, 3, torch.float32), upstream(2, 5)
    torch.manual_seed(3)
    first = train_step(head, x, g)
    torch.manual_seed(3)
    again = train_step(head, x, g)
    for a, e in zip(first, again, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert not torch.equal(train_step(head, x, g)[0], first[0])
    with torch.no_grad():  # eval mode: no dropout, the plain head's numbers
        assert_close(head.eval()(x), head.set_impl("plain")(x), 1e-5)


# -- half precision ------------------------------------------------------------------------------


@pytest.fixture
def bf16_dot():
    """Triton's interpreter multiplies the raw bits of bfloat16 ``tl.dot`` operands
    (triton-lang/triton#11584: it does not support bfloat16 yet). Within this fixture its
    ``create_dot`` widens them to float32 first: bf16 products are exact in float32, as in the
    tensor cores' bf16 x bf16 -> fp32 dot. (On a GPU the fixture does nothing.)"""
    if DEVICE.type != "cpu":
        yield
        return
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def widen(handle):
        if handle.dtype != triton.language.bfloat16:
            return handle
        data = (handle.data.astype(np.uint32) << 16).view(np.float32)
        return interpreter.TensorHandle(data, triton.language.float32)

    def create_dot(self, a, b, *args, **kwargs):
        return original(self, widen(a), widen(b), *args, **kwargs)

    interpreter.InterpreterBuilder.create_dot = create_dot
    try:
        yield
    finally:
        interpreter.InterpreterBuilder.create_dot = original


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)], ids=str)
def test_half_precision_inputs(bf16_dot, dtype, tol):
    """Half-precision features and weights: fp32 accumulation, so the error is the inputs'
    rounding (the reference computes in float64 from the same rounded numbers) plus the rounding of
    the map gradients to the operand dtype for the gradient matmuls (as autocast's backward does)."""
    head = make_head(32, 5, 2, dtype=dtype)
    x, g = features(2, 32, 3, 3, dtype), upstream(2, 5)
    got = train_step(head, x, g)
    assert got[0].dtype == got[1].dtype == head.query.weight.grad.dtype == dtype
    assert_steps_close(got, reference_step(head, x, g), tol)


def test_autocast_bf16_gives_float32_logits(bf16_dot):
    head = make_head(32, 5, 2, dtype=torch.float32)
    x, g = features(2, 32, 3, 3, torch.float32), upstream(2, 5)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = train_step(head, x, g)
    assert got[0].dtype == got[1].dtype == head.query.weight.grad.dtype == torch.float32
    rounded = make_head(32, 5, 2)  # the reference from the operands autocast rounded to bf16
    rounded.load_state_dict({k: v.bfloat16().double() for k, v in head.state_dict().items()})
    want = reference_step(rounded, x.bfloat16(), g)
    assert_close(got[0], want[0], 1e-5)  # products of bf16 values are exact in float32
    assert_steps_close(got[1:], want[1:], 2e-2)


# -- selection and errors ------------------------------------------------------------------------


def test_fast_uses_the_kernels_for_cuda_tensors_only(monkeypatch):
    """The ``"fast"`` implementation's ``applies`` (no GPU needed: a stand-in for a CUDA tensor)."""
    kernel = kernels_for("fast")[0]
    assert kernel.name == "triton_cuda" and kernel.run is triton_impl.triton_logits
    monkeypatch.setattr(triton_impl, "_gpu_supported", lambda index: True)
    head = NOAHHead(16, 5, 2)
    call = Call(needs_grad=True, dropout_active=False)

    def cuda(dtype=torch.float32):
        return SimpleNamespace(device=torch.device("cuda", 0), dtype=dtype)

    assert kernel.applies(head, cuda(), call)
    assert kernel.applies(head, cuda(), Call(needs_grad=False, dropout_active=False))  # inference too
    assert not kernel.applies(head, cuda(torch.bfloat16), call)  # float32 weights, no autocast
    assert kernel.applies(head.to(torch.bfloat16), cuda(torch.bfloat16), call)
    assert not kernel.applies(head.double(), cuda(torch.float64), call)  # float64: PyTorch ops
    head.float()
    assert not kernel.applies(head, torch.zeros(1, 16, 2, 2), call)  # never on CPU, interpreter or not
    with triton_impl.triton_disabled():
        assert not kernel.applies(head, cuda(), call)
    monkeypatch.setenv("NOAH_DISABLE_TRITON", "1")
    assert not kernel.applies(head, cuda(), call)
    monkeypatch.delenv("NOAH_DISABLE_TRITON")
    with FlopCounterMode(display=False):
        assert not kernel.applies(head, cuda(), call)  # a dispatch mode must see the ops
    monkeypatch.setattr(triton_impl, "_gpu_supported", lambda index: False)
    assert not kernel.applies(head, cuda(), call)
    monkeypatch.setattr(triton_impl, "_gpu_supported", lambda index: True)
    monkeypatch.setattr(triton_impl, "triton_available", lambda: False)
    assert not kernel.applies(head, cuda(), call)


def test_triton_impl_selects_its_kernel():
    assert [k.name for k in kernels_for("triton")] == ["triton"]
    head = make_head(16, 5, 2, dtype=torch.float32)
    x = features(2, 16, 3, 3, torch.float32)
    with torch.no_grad():
        assert kernels_for("triton")[0].applies(head, x, Call.of(head, x))
        out = head(x, return_maps=True)  # maps: the fast implementation's explicit path
        assert out.attention.shape == (2, 2, 5, 3, 3)
        assert_close(out.logits, head(x), 1e-6)


@pytest.mark.parametrize("case", ["no triton", "cpu without interpreter", "meta tensor"])
def test_where_it_cannot_run_is_a_one_line_config_error(monkeypatch, case):
    head = NOAHHead(16, 5, 2, impl="triton")
    x = torch.randn(2, 16, 3, 3)
    if case == "no triton":
        monkeypatch.setattr(triton_impl, "triton_available", lambda: False)
        expected = "needs the triton package"
    elif case == "cpu without interpreter":
        monkeypatch.setattr(triton_impl, "_kernels", lambda: SimpleNamespace(INTERPRETED=False))
        expected = "TRITON_INTERPRET=1"
    else:
        head, x = head.to("meta"), x.to("meta")
        expected = "got a meta tensor"
    with pytest.raises(ConfigError) as info:
        head(x)
    assert expected in str(info.value) and "\n" not in str(info.value)
    # traced (torch.compile / export) the explicit path runs wherever it can
    monkeypatch.setattr(triton_impl, "graph_mode", lambda: True)
    if case != "meta tensor":
        with torch.no_grad():
            assert_close(head(x), head.set_impl("plain")(x), 1e-5)


def test_under_a_dispatch_mode_the_ops_are_seen():
    head = make_head(16, 5, 2, dtype=torch.float32)
    x = features(2, 16, 3, 3, torch.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        logits = head(x)
    assert counter.get_total_flops() > 0
    with torch.no_grad():
        assert_close(logits, head(x), 1e-6)


def test_saves_no_maps_for_backward():
    """What the forward keeps: the inputs, the weights and three (B, N, M) statistics."""
    b, c, m, n, h, w = 2, 16, 40, 2, 4, 4
    head = make_head(c, m, n, dtype=torch.float32)
    x = features(b, c, h, w, torch.float32).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        head(x)
    elements = sum(t.numel() for t in saved)
    inputs = x.numel() + sum(p.numel() for p in head.parameters())
    assert elements <= inputs + 3 * b * n * m < b * n * m * h * w
