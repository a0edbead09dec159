"""The fused CPU kernel (``noah._poca`` through :mod:`noah.head.cpu_kernel`) against the plain head.

The kernel is the default float32 CPU inference path wherever it is built; every test here
checks that the head really went through it (a spy counts the calls) and that it gives the plain
formulation's numbers: register-tile edges (classes not a multiple of 16, positions not a
multiple of 6, single positions), both split switches, NCHW / channels_last / strided inputs,
OpenMP threads, a forked worker, overflow, NaN, weight changes and the FLOP counter.
"""

from __future__ import annotations

import multiprocessing
import platform
import shutil
import sys

import pytest
import torch

from noah import NOAHHead
from noah.head import cpu_kernel

needs_kernel = pytest.mark.skipif(
    not cpu_kernel.fused_available(), reason=f"fused CPU kernel not usable here: {cpu_kernel.fused_status()}"
)


def _cpu_has_avx2_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64" and shutil.which("cc")),
    reason="the build check is for x86-64 Linux with a C compiler",
)
def test_kernel_is_built_where_it_can_be():
    """setup.py marks the extension optional, so a broken build would only warn: fail here."""
    assert cpu_kernel._poca is not None, "noah._poca was not built: run pip install -e . and read the compiler error"
    assert bool(cpu_kernel._poca.vectorized) == _cpu_has_avx2_fma()
    assert cpu_kernel._poca.openmp, "noah._poca was built without OpenMP: it would run on one thread"


@pytest.fixture
def spy(monkeypatch):
    """Counts calls of the fused kernel."""
    calls = []
    real = cpu_kernel.fused_logits

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_kernel, "fused_logits", counting)
    return calls


def heads_for(shape, head_split=True, kv_split=True, seed=0):
    """A plain head with random parameters (non-zero biases) and a fast copy of it."""
    c, m, n, r, _, _ = shape
    torch.manual_seed(seed)
    plain = NOAHHead(c, m, n, r, head_split=head_split, kv_split=kv_split, impl="plain").eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0.0, 0.5)
    fast = NOAHHead(c, m, n, r, head_split=head_split, kv_split=kv_split).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def assert_matches(actual, expected, rtol=1e-5):
    scale = float(expected.abs().max().clamp_min(1.0))
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


SHAPES = [  # C, M, N, r, H, W
    (16, 5, 2, 0.5, 3, 3),  # fewer than 16 classes; 9 positions = one 6-tile + 3 single rows
    (32, 17, 4, 0.25, 2, 5),  # a second panel with one class
    (24, 33, 1, 1 / 3, 1, 1),  # one position: single rows only
    (40, 16, 2, 0.5, 6, 1),  # exactly one tile and one panel
    (6, 3, 3, 0.5, 2, 2),  # one channel per block
    (256, 100, 4, 0.25, 7, 7),  # a real-sized head
]
ids = lambda s: "C{}-M{}-N{}-r{:.2f}-{}x{}".format(*s)  # noqa: E731


@needs_kernel
@pytest.mark.parametrize("head_split,kv_split", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_fused_matches_plain(spy, shape, head_split, kv_split):
    plain, fast = heads_for(shape, head_split, kv_split)
    c, _, _, _, h, w = shape
    x = torch.randn(3, c, h, w) + 0.5  # a common offset, as after a ReLU
    with torch.no_grad():
        expected = plain(x)
        assert_matches(fast(x), expected)
        assert_matches(fast(x[:1]), expected[:1])
        assert_matches(fast(x.contiguous(memory_format=torch.channels_last)), expected)
        wide = torch.randn(3, c, h, 2 * w)
        assert_matches(fast(wide[..., ::2]), plain(wide[..., ::2]))  # a strided view
        same = x[:1, :, :1, :1].expand(3, c, h, w)  # zero strides
        assert_matches(fast(same), plain(same))
    with torch.inference_mode():
        assert_matches(fast(x), expected)
    assert len(spy) == 6


@needs_kernel
def test_threads_split_classes_and_give_identical_numbers(monkeypatch, spy):
    plain, fast = heads_for((64, 70, 4, 0.5, 5, 5))
    x = torch.randn(4, 64, 5, 5)
    previous = torch.get_num_threads()
    with torch.no_grad():
        torch.set_num_threads(1)
        single = fast(x)
        monkeypatch.setattr(cpu_kernel, "_PARALLEL_MIN", 0)
        try:
            torch.set_num_threads(2)
            parallel = fast(x)
            torch.set_num_threads(8)  # more threads than cores, and than some heads' panels
            many = fast(x)
        finally:
            torch.set_num_threads(previous)
        expected = plain(x)
    assert torch.equal(single, parallel) and torch.equal(single, many)
    assert_matches(single, expected)
    assert len(spy) == 3


def _forked_child_logits(threads: int) -> list:
    torch.set_num_threads(threads)  # what DataLoader workers do (libgomp cannot fork a team)
    torch.manual_seed(3)
    head = NOAHHead(64, 70, 4, 0.5).eval()
    with torch.no_grad():
        return head(torch.ones(2, 64, 5, 5)).tolist()


@needs_kernel
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_kernel_runs_in_a_forked_worker_after_the_parent_used_threads(monkeypatch):
    monkeypatch.setattr(cpu_kernel, "_PARALLEL_MIN", 0)
    previous = torch.get_num_threads()
    try:
        here = _forked_child_logits(2)  # the parent runs a parallel region first
        with multiprocessing.get_context("fork").Pool(1) as pool:
            there = pool.apply_async(_forked_child_logits, (1,)).get(timeout=120)
    finally:
        torch.set_num_threads(previous)
    assert there == here


@needs_kernel
def test_overflowing_keys_fall_back_to_the_exact_softmax(spy):
    plain, fast = heads_for((16, 5, 2, 0.5, 3, 3))
    with torch.no_grad():
        for head in (plain, fast):
            head.query.weight.mul_(500.0)
        x = torch.randn(2, 16, 3, 3)
        expected = plain(x)
        assert torch.isfinite(expected).all()
        assert cpu_kernel.fused_head_logits(fast, x) is None  # 2^(centred key) overflowed
        assert_matches(fast(x), expected)


@needs_kernel
def test_nan_features_give_nan_logits_like_plain():
    plain, fast = heads_for((16, 5, 2, 0.5, 3, 3))
    x = torch.randn(2, 16, 3, 3)
    x[1, 3, 1, 1] = float("nan")  # a key channel of image 1
    with torch.no_grad():
        expected, got = plain(x), fast(x)
    assert torch.isnan(expected[1]).all() and torch.isnan(got[1]).all()
    assert_matches(got[0], expected[0])


@needs_kernel
def test_every_weight_change_is_seen():
    """Nothing is cached between calls: in-place updates, loads, replacements and even writes
    through ``.data`` (which do not bump the version counter) show in the next forward."""
    plain, fast = heads_for((32, 20, 4, 0.5, 3, 3))
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad():
        fast(x)
        for head in (plain, fast):  # in place, as an optimizer step does
            head.value.weight.mul_(-2.0)
            head.query.weight.add_(0.1)
        assert_matches(fast(x), plain(x))
        plain.reset_parameters()
        fast.load_state_dict(plain.state_dict())
        assert_matches(fast(x), plain(x))
        fast.value.weight = torch.nn.Parameter(plain.value.weight * 3)  # replaced outright
        plain.value.weight.mul_(3)
        assert_matches(fast(x), plain(x))
    for head in (plain, fast):
        head.query.weight.data[3].mul_(4.0)  # one class of block 0, behind autograd's back
    with torch.no_grad():
        assert_matches(fast(x), plain(x))


def test_disabling_the_kernel_keeps_the_numbers(monkeypatch, spy):
    plain, fast = heads_for((32, 20, 4, 0.5, 3, 3))
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad(), cpu_kernel.kernel_disabled():
        assert not cpu_kernel.fused_available()
        assert_matches(fast(x), plain(x))
    monkeypatch.setenv("NOAH_DISABLE_KERNEL", "1")
    assert not cpu_kernel.fused_available()
    assert "PyTorch ops" in cpu_kernel.fused_status()
    with torch.no_grad():
        assert_matches(fast(x), plain(x))
    assert spy == []


@needs_kernel
def test_kernel_rejects_bad_buffers():
    poca = cpu_kernel._poca
    w = torch.randn(2 * 5, 4)  # 2 blocks, 5 classes, 4 channels per block
    bias = torch.zeros(2 * 5)
    x = torch.randn(1, 3, 16)  # 8 key channels, then 8 value channels

    def call(x=x, w=w, out=None, heads=2, keys=8, step=4, threads=1):
        out = torch.zeros(1, 5) if out is None else out
        return poca.fused_poca(x.numpy(), w.numpy(), w.numpy(), bias.numpy(), out.numpy(), heads, keys, 8, step, step,
                               threads, 1.0)

    assert call() is True
    with pytest.raises(TypeError, match="float32"):
        call(x=x.double())
    with pytest.raises(ValueError, match="inconsistent"):
        call(step=6)  # block 1 would read past the 8 key channels
    with pytest.raises(ValueError, match="inconsistent"):
        call(keys=20)  # more key channels than x has
    with pytest.raises(ValueError, match="inconsistent"):
        call(heads=3)
    with pytest.raises(ValueError, match="inconsistent"):
        call(threads=0)
    with pytest.raises(ValueError, match="inconsistent"):
        call(out=torch.zeros(2, 5))  # two images' logits for one image
    with pytest.raises(ValueError, match="contiguous"):
        call(w=torch.randn(4, 10).t())


@needs_kernel
def test_flop_counter_still_sees_the_head(spy):
    """Under a TorchDispatchMode the head takes the op-by-op path, so its MACs are counted."""
    from torch.utils.flop_counter import FlopCounterMode

    c, m, length, b = 32, 20, 9, 2
    _, fast = heads_for((c, m, 4, 0.5, 3, 3))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fast(torch.randn(b, c, 3, 3))
    assert counter.get_total_flops() >= 2 * b * c * m * length  # both grouped projections
    assert spy == []
