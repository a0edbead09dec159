"""The fused CPU training kernel (``noah.head.cpu_train``) against the plain head.

Every test that expects the kernel checks that the head really went through it (a spy counts
the calls into ``noah._poca``), and compares logits and all gradients with the plain formulation
computed in float64: register-tile edges (classes not a multiple of 16, positions not a multiple
of 6, one position, one class), channel counts that are not multiples of 8, both split switches,
N = 1 and 8, 21,841 classes, NCHW / channels-last / strided / expanded inputs, huge key logits,
dropout (against masks rebuilt from the documented hash), threads, frozen parts, non-finite
inputs, what it saves for backward, and where it must stand aside.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from noah import NOAHHead
from noah.head import cpu_kernel, cpu_train

needs_kernel = pytest.mark.skipif(
    not cpu_train.train_available(), reason=f"fused CPU kernel not usable here: {cpu_kernel.fused_status()}"
)


class _Spy:
    """Stands in for ``noah._poca`` and counts the training entry points' calls."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name in ("train_forward", "train_backward"):
            def counted(*args):
                self.calls.append(name)
                return attr(*args)

            return counted
        return attr

    def count(self, name):
        return self.calls.count(name)


@pytest.fixture
def spy(monkeypatch):
    fake = _Spy(cpu_train._poca)
    monkeypatch.setattr(cpu_train, "_poca", fake)
    return fake


def heads_for(shape, head_split=True, kv_split=True, dropout=0.0, seed=0):
    """A float32 fast head with random parameters (non-zero biases) and a float64 plain copy."""
    c, m, n, r, _, _ = shape
    torch.manual_seed(seed)
    fast = NOAHHead(c, m, n, r, dropout=dropout, head_split=head_split, kv_split=kv_split).train()
    with torch.no_grad():
        for p in fast.parameters():
            p.normal_(0.0, 0.5)
    plain = NOAHHead(c, m, n, r, dropout=dropout, head_split=head_split, kv_split=kv_split, impl="plain")
    plain.load_state_dict(fast.state_dict())
    return fast, plain.double().train()


def step(head, x, grad):
    """Logits and the gradients of x, query weight, query bias, value weight, value bias."""
    head.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    logits = head(x)
    logits.backward(grad.to(logits.dtype))
    return [logits.detach(), x.grad] + [p.grad for p in (head.query.weight, head.query.bias, head.value.weight, head.value.bias)]


def assert_matches(got, want, rtol=1e-5, uniform_keys=False, kernel=True):
    """Each tensor within ``rtol`` of the largest entry of its float64 reference; the key bias
    gradient, zero in exact arithmetic (softmax ignores a per-class shift), is exactly zero from
    the kernel (``kernel=False``: within ``rtol`` of the value bias gradient's scale).

    ``uniform_keys``: the input is the same at every position, so the key weight gradient is
    zero in exact arithmetic too and is held to the value weight gradient's scale instead.
    """
    names = ("logits", "dx", "dwk", "dbk", "dwv", "dbv")
    for name, a, e in zip(names, got, want, strict=True):
        assert a.dtype == torch.float32 and a.shape == e.shape, name
        if name == "dbk":
            assert float(e.abs().max()) < 1e-9
            if kernel:
                assert torch.equal(a, torch.zeros_like(a))
            else:
                assert float(a.abs().max()) <= rtol * float(want[5].abs().max())
            continue
        scale = float(e.abs().max())
        if name == "dwk" and uniform_keys:
            scale = max(scale, float(want[4].abs().max()))
        err = float((a.double() - e).abs().max())
        assert err <= rtol * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g}"


SHAPES = [  # C, M, N, r, H, W
    (16, 5, 2, 0.5, 3, 3),  # fewer than 16 classes; 9 positions
    (32, 17, 4, 0.25, 2, 5),  # a second panel with one class; 4/12 channels per block
    (24, 33, 1, 1 / 3, 1, 1),  # one position; 8/16 channels
    (6, 1, 3, 0.5, 5, 7),  # one class, one channel per block, 35 positions
    (40, 70, 2, 0.5, 7, 7),  # 49 positions (4 x 6 + 5 x 5 rows), a group of 4 panels and a partial one
    (80, 20, 8, 0.5, 4, 3),  # N = 8, 5 channels per block
]
ids = lambda s: "C{}-M{}-N{}-r{:.2f}-{}x{}".format(*s)  # noqa: E731


@needs_kernel
@pytest.mark.parametrize("head_split,kv_split", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_logits_and_gradients_match_plain(spy, shape, head_split, kv_split):
    fast, plain = heads_for(shape, head_split, kv_split)
    c, m, _, _, h, w = shape
    x = torch.randn(3, c, h, w) + 0.5  # a common offset, as after a ReLU
    grad = torch.randn(3, m)
    assert_matches(step(fast, x, grad), step(plain, x.double(), grad))
    assert spy.count("train_forward") == spy.count("train_backward") == 1


@needs_kernel
def test_memory_layouts_of_the_input(spy):
    """NCHW, channels-last, a strided view and an expanded (zero-stride) input; the input
    gradient comes back in the input's layout where its channels are adjacent."""
    shape = (32, 20, 4, 0.5, 3, 4)
    fast, plain = heads_for(shape)
    grad = torch.randn(2, 20)
    x = torch.randn(2, 32, 3, 4)
    wide = torch.randn(2, 32, 3, 8)
    base = torch.randn(2, 32, 1, 1)
    for sample in (x.contiguous(memory_format=torch.channels_last), wide[..., ::2], base.expand(2, 32, 3, 4)):
        got = step(fast, sample, grad)
        assert_matches(got, step(plain, sample.double(), grad), uniform_keys=sample.stride(3) == 0)
    last = step(fast, x.contiguous(memory_format=torch.channels_last), grad)[1]
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert step(fast, x, grad)[1].is_contiguous()
    assert spy.count("train_backward") == 5


@needs_kernel
def test_token_features_as_vision_transformers_feed_them(spy):
    """(B, L, C) tokens after a class token, transposed to (B, C, H, W) without a copy."""
    shape = (48, 30, 4, 0.5, 4, 4)
    fast, plain = heads_for(shape)
    tokens = torch.randn(2, 17, 48)[:, 1:]
    x = tokens.transpose(1, 2).reshape(2, 48, 4, 4)
    grad = torch.randn(2, 30)
    assert_matches(step(fast, x, grad), step(plain, x.double(), grad))
    assert spy.count("train_forward") == 1


@needs_kernel
def test_many_classes(spy):
    shape = (16, 21841, 2, 0.5, 2, 2)
    fast, plain = heads_for(shape)
    x, grad = torch.randn(2, 16, 2, 2), torch.randn(2, 21841)
    assert_matches(step(fast, x, grad), step(plain, x.double(), grad))
    assert spy.count("train_backward") == 1


@needs_kernel
def test_huge_key_logits_need_no_fallback(spy):
    """The softmax subtracts the maximum, so logits spread over thousands stay exact."""
    shape = (16, 5, 2, 0.5, 3, 3)
    fast, plain = heads_for(shape)
    with torch.no_grad():
        for head in (fast, plain):
            head.query.weight.mul_(500.0)
    x, grad = torch.randn(2, 16, 3, 3), torch.randn(2, 5)
    with torch.no_grad():
        assert float(plain.query(x[:, :8].double()).abs().max()) > 1000
    assert_matches(step(fast, x, grad), step(plain, x.double(), grad))
    assert spy.count("train_backward") == 1


@needs_kernel
def test_threads_give_close_and_repeatable_numbers(monkeypatch, spy):
    """Weight gradients belong to one thread each (identical for any count); the input gradient
    is summed over the threads' buffers (rounding may differ, runs with one count do not)."""
    shape = (64, 70, 4, 0.5, 5, 5)
    fast, plain = heads_for(shape)
    x, grad = torch.randn(4, 64, 5, 5), torch.randn(4, 70)
    monkeypatch.setattr(cpu_kernel, "_PARALLEL_MIN", 0)
    previous = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 8):  # 8: more threads than cores and than some blocks' work items
            torch.set_num_threads(threads)
            results[threads] = step(fast, x, grad)
        again = step(fast, x, grad)
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(again, results[8], strict=True):
        assert torch.equal(a, b)
    for threads in (2, 8):
        for i, (a, b) in enumerate(zip(results[threads], results[1], strict=True)):
            assert torch.equal(a, b) if i != 1 else torch.allclose(a, b, rtol=0, atol=1e-6 * float(b.abs().max()))
    assert_matches(results[2], step(plain, x.double(), grad))


def hashed_keep_mask(seed: int, batch: int, heads: int, classes: int, length: int, p: float) -> torch.Tensor:
    """The kernel's documented dropout masks, rebuilt in int64 arithmetic: ``(B, N, M, L)``
    floats, 0 or 1/(1-p). Every product stays below 2^63 (both constants are below 2^31)."""
    low = 0xFFFFFFFF

    def mix(v):
        v = v ^ (v >> 16)
        v = (v * 0x21F0AAAD) & low
        v = v ^ (v >> 15)
        v = (v * 0x735A2D97) & low
        return v ^ (v >> 15)

    rows = torch.arange(batch * heads * classes, dtype=torch.int64)
    keys = mix(mix((rows & low) ^ (seed & low)) ^ (rows >> 32) ^ (seed >> 32))
    steps = (torch.arange(length, dtype=torch.int64) * 0x9E3779B9) & low
    hashed = mix((keys[:, None] + steps[None, :]) & low)
    threshold, scale = cpu_train.dropout_threshold(p)
    keep = (hashed >> 8) >= threshold
    mask = keep.to(torch.float32) * torch.tensor(scale, dtype=torch.float32)
    return mask.view(batch, heads, classes, length)


@needs_kernel
@pytest.mark.parametrize("head_split,kv_split", [(True, True), (False, False)])
def test_dropout_is_exact_with_the_hashed_masks(spy, head_split, kv_split):
    shape = (40, 70, 2, 0.5, 7, 7)
    c, m, n, _, h, w = shape
    p, b = 0.3, 3
    fast, plain = heads_for(shape, head_split, kv_split, dropout=p)
    x, grad = torch.randn(b, c, h, w), torch.randn(b, m)
    torch.manual_seed(5)
    got = step(fast, x, grad)

    torch.manual_seed(5)
    seed = int(torch.randint(0, 2**62, (), device="cpu"))  # what the kernel drew
    mask = hashed_keep_mask(seed, b, n, m, h * w, p).double()
    plain.dropout = torch.nn.Identity()
    original = plain.value.forward
    plain.value.forward = lambda t: (original(t).reshape(b, n, m, h * w) * mask).reshape(b, n * m, h, w)
    assert_matches(got, step(plain, x.double(), grad))
    assert spy.count("train_backward") == 1


@needs_kernel
def test_dropout_rate_reproducibility_and_fresh_masks(spy):
    shape = (16, 300, 2, 0.5, 8, 8)
    fast, _ = heads_for(shape, dropout=0.25)
    x, grad = torch.randn(4, 16, 8, 8), torch.randn(4, 300)
    torch.manual_seed(3)
    first = step(fast, x, grad)
    torch.manual_seed(3)
    again = step(fast, x, grad)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(step(fast, x, grad)[0], first[0])
    mask = hashed_keep_mask(12345, 4, 2, 300, 64, 0.25)  # 153,600 draws
    assert abs(float((mask == 0).float().mean()) - 0.25) < 0.005
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]


@needs_kernel
def test_dropout_without_autograd_uses_the_kernel_forward(spy):
    fast, _ = heads_for((16, 5, 2, 0.5, 3, 3), dropout=0.5)
    with torch.no_grad():
        logits = fast(torch.randn(2, 16, 3, 3))
    assert logits.shape == (2, 5) and spy.count("train_forward") == 1 and spy.count("train_backward") == 0


@needs_kernel
def test_frozen_input_or_frozen_head(spy):
    shape = (32, 20, 4, 0.5, 3, 3)
    fast, plain = heads_for(shape)
    x, grad = torch.randn(2, 32, 3, 3), torch.randn(2, 20)
    _, dx, dwk, _, dwv, dbv = step(plain, x.double(), grad)

    def close(a, e):
        return float((a.double() - e).abs().max()) <= 1e-5 * float(e.abs().max())

    fast(x).backward(grad)  # the input needs no gradient: no dX
    assert close(fast.query.weight.grad, dwk) and close(fast.value.weight.grad, dwv) and close(fast.value.bias.grad, dbv)
    fast.requires_grad_(False)
    xg = x.clone().requires_grad_()
    fast(xg).backward(grad)  # a frozen head: only dX
    assert close(xg.grad, dx)
    assert spy.count("train_backward") == 2


@needs_kernel
def test_saves_features_and_statistics_only():
    """Saved for backward: the input itself (no copy), its position-tiled copy (B*L*C floats) and
    two numbers per image, block and class -- not one (B, N, M, L) map."""
    shape = (64, 500, 4, 0.5, 7, 7)
    fast, _ = heads_for(shape)
    b, c, m, n, length = 8, 64, 500, 4, 49
    x = torch.randn(b, c, 7, 7, requires_grad=True)
    params = {p.data_ptr() for p in fast.parameters()}
    saved = {}

    def pack(t):
        if t.data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = fast(x)
    assert saved.pop(x.untyped_storage().data_ptr()) == 4 * b * length * c  # x's own storage
    assert sum(saved.values()) == 4 * (b * length * c + 2 * b * n * m)
    assert sum(saved.values()) < 4 * b * n * m * length / 10
    logits.sum().backward()


@needs_kernel
def test_non_finite_features_fall_back_to_the_reference(spy):
    fast, plain = heads_for((16, 5, 2, 0.5, 3, 3))
    x = torch.randn(2, 16, 3, 3)
    x[1, 3, 1, 1] = float("nan")
    got, want = fast(x.requires_grad_()), plain(x.double())
    assert spy.count("train_forward") == 1  # the kernel ran, saw a NaN logit, and handed over
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    got.nan_to_num().sum().backward()


@needs_kernel
def test_stands_aside_where_it_must(monkeypatch, spy):
    """Inference, float64, autocast, other implementations, kernel_disabled(),
    NOAH_DISABLE_KERNEL and dispatch modes all train through PyTorch ops."""
    shape = (16, 5, 2, 0.5, 3, 3)
    fast, plain = heads_for(shape)
    x, grad = torch.randn(2, 16, 3, 3), torch.randn(2, 5)
    with torch.no_grad():
        fast.eval()(x)
    fast.train()
    step(fast.double(), x.double(), grad)
    fast.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x.requires_grad_())
    for impl in ("plain", "lean"):
        step(fast.set_impl(impl), x, grad)
    fast.set_impl("fast")
    with cpu_kernel.kernel_disabled():
        assert_matches(step(fast, x, grad), step(plain, x.double(), grad), kernel=False)
    with FlopCounterMode(display=False):
        step(fast, x, grad)
    monkeypatch.setenv("NOAH_DISABLE_KERNEL", "1")
    step(fast, x, grad)
    assert spy.calls == []
    monkeypatch.delenv("NOAH_DISABLE_KERNEL")
    step(fast, x, grad)
    assert spy.count("train_backward") == 1
