"""The head's implementations (fast, plain, lean) give the same numbers on every path.

``plain`` is the reference formulation (grouped convs, softmax, product, sum); these tests hold
``fast`` and ``lean`` to it: inference (chunked, with several chunk sizes) and training
(forward + backward), float64/float32, bf16 autocast, dropout, channels_last, return_maps,
overflowing keys, ``torch.compile`` and ONNX export.
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from noah import ConfigError, NOAHHead
from noah.head import available_impls
from noah.head.cpu_kernel import kernel_disabled
from noah.head.cpu_train import train_available
from noah.head.fast import chunked_logits

SHAPES = [  # C, M, N, r, H, W
    (16, 5, 2, 0.5, 3, 3),
    (32, 7, 4, 0.25, 2, 5),
    (24, 3, 1, 1 / 3, 4, 1),
    (40, 9, 2, 0.5, 1, 1),
]
SPLITS = list(itertools.product([True, False], repeat=2))
ids = lambda s: "C{}-M{}-N{}-r{:.2f}-{}x{}".format(*s)  # noqa: E731


def make_heads(shape, head_split=True, kv_split=True, dropout=0.0, dtype=torch.float64, chunk=None):
    """Plain, fast and lean heads sharing random (non-zero bias) parameters."""
    c, m, n, r, _, _ = shape
    heads = {}
    for impl in ("plain", "fast", "lean"):
        heads[impl] = NOAHHead(c, m, n, r, dropout=dropout, head_split=head_split, kv_split=kv_split,
                               impl=impl, chunk_elements=chunk).to(dtype)
    with torch.no_grad():
        for p in heads["plain"].parameters():
            p.normal_()
    for impl in ("fast", "lean"):
        heads[impl].load_state_dict(heads["plain"].state_dict())
    return heads


def features(shape, batch=3, dtype=torch.float64, seed=1):
    c, _, _, _, h, w = shape
    return torch.randn(batch, c, h, w, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def train_step(head, x, grad_seed=2):
    """Logits and gradients (input, then every parameter) of one backward pass."""
    x = x.clone().requires_grad_()
    head.zero_grad(set_to_none=True)
    logits = head(x)
    logits.backward(torch.randn(logits.shape, dtype=logits.dtype, generator=torch.Generator().manual_seed(grad_seed)))
    return [logits.detach(), x.grad] + [p.grad for p in head.parameters()]


def assert_close(actual, expected, rtol):
    # the key bias gradient is zero in exact arithmetic (softmax ignores shifts): compare absolutely
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * float(scale))


TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("head_split,kv_split", SPLITS)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_inference_matches_plain(shape, head_split, kv_split, dtype):
    heads = make_heads(shape, head_split, kv_split, dtype=dtype)
    x = features(shape, batch=4, dtype=dtype)
    with torch.no_grad():
        expected = heads["plain"].eval()(x)
        for impl in ("fast", "lean"):
            # default chunking, one class per chunk, several images per chunk
            for chunk in (None, 1, 2 * shape[1] * shape[2] * shape[4] * shape[5]):
                heads[impl].chunk_elements = chunk
                assert_close(heads[impl].eval()(x), expected, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("head_split,kv_split", SPLITS)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=ids)
def test_training_forward_and_backward_match_plain(shape, head_split, kv_split, dtype):
    heads = make_heads(shape, head_split, kv_split, dtype=dtype, chunk=7)  # lean: several class chunks
    x = features(shape, dtype=dtype)
    expected = train_step(heads["plain"].train(), x)
    for impl in ("fast", "lean"):
        for got, want in zip(train_step(heads[impl].train(), x), expected, strict=True):
            assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES[:2], ids=ids)
def test_fast_dropout_draws_the_plain_mask(shape):
    heads = make_heads(shape, dropout=0.3)
    x = features(shape)
    torch.manual_seed(11)
    expected = train_step(heads["plain"].train(), x)
    torch.manual_seed(11)
    got = train_step(heads["fast"].train(), x)
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b, 1e-10)
    torch.manual_seed(11)
    maps_plain = heads["plain"](x, return_maps=True)
    torch.manual_seed(11)
    maps_fast = heads["fast"](x, return_maps=True)
    torch.testing.assert_close(maps_fast.value, maps_plain.value)


def test_lean_dropout_matches_explicit_computation_with_its_masks():
    """The lean path's masks come from a generator seeded off the global RNG; rebuild them and
    compare logits and gradients with autograd over the explicit formula."""
    shape = (16, 6, 2, 0.5, 3, 3)
    c, m, n, _, h, w = shape
    p, b = 0.4, 3
    heads = make_heads(shape, dropout=p)  # one chunk (default lean chunk is large)
    lean = heads["lean"].train()
    x = features(shape, batch=b)
    torch.manual_seed(5)
    got = train_step(lean, x)

    torch.manual_seed(5)
    seed = int(torch.randint(0, 2**62, (), device="cpu"))
    mask = torch.empty(n, b, h * w, m, dtype=torch.float64).bernoulli_(1 - p, generator=torch.Generator().manual_seed(seed))
    mask = mask.div_(1 - p).permute(1, 0, 3, 2)  # (B, N, M, L)
    plain = heads["plain"].train()
    plain.dropout = torch.nn.Identity()
    original = plain.value.forward
    plain.value.forward = lambda t: (original(t).reshape(b, n, m, h * w) * mask).reshape(b, n * m, h, w)
    expected = train_step(plain, x)
    for a, e in zip(got, expected, strict=True):
        assert_close(a, e, 1e-10)


def test_lean_dropout_is_reproducible_and_differs_between_steps():
    shape = SHAPES[0]
    lean = make_heads(shape, dropout=0.5)["lean"].train()
    x = features(shape)
    torch.manual_seed(3)
    first = train_step(lean, x)
    torch.manual_seed(3)
    again = train_step(lean, x)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(train_step(lean, x)[0], first[0])


@pytest.mark.parametrize("shape", SHAPES[:2], ids=ids)
def test_return_maps_are_exact_for_every_impl(shape):
    heads = make_heads(shape)
    x = features(shape)
    with torch.no_grad():
        expected = heads["plain"].eval()(x, return_maps=True)
        for impl in ("fast", "lean"):
            got = heads[impl].eval()(x, return_maps=True)
            for a, e in zip(got, expected, strict=True):
                assert a.shape == e.shape
                assert_close(a, e, 1e-10)


@pytest.mark.parametrize("impl", ["fast", "lean"])
def test_channels_last_input(impl):
    shape = (32, 7, 4, 0.25, 3, 5)
    heads = make_heads(shape, dtype=torch.float32)
    x = features(shape, dtype=torch.float32)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_close(heads[impl].eval()(xc), heads["plain"].eval()(x), 1e-5)
    for a, b in zip(train_step(heads[impl].train(), xc), train_step(heads["plain"].train(), x), strict=True):
        assert_close(a, b, 1e-5)


@pytest.mark.parametrize("impl", ["fast", "lean"])
def test_bf16_autocast_on_cpu(impl):
    """Under bf16 autocast fast and lean are as close to the float32 result as plain is.

    (Plain's own bf16 error is large for the key gradients: ``dK = A (V - sum A V) g``
    cancels. So the bound is relative to plain's error, not a fixed tolerance.)
    """
    shape = (32, 7, 4, 0.5, 3, 3)
    heads = make_heads(shape, dtype=torch.float32)
    with torch.no_grad():
        for head in heads.values():
            head.query.weight.mul_(0.1)
            head.value.weight.mul_(0.1)
    x = features(shape, dtype=torch.float32)
    exact = train_step(heads["plain"].train(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = train_step(heads["plain"].train(), x)
        got = train_step(heads[impl].train(), x)
        with torch.no_grad():
            inference = heads[impl].eval()(x)
    assert got[1].dtype == torch.float32  # input gradient in the input's dtype
    for a, p, e in zip(got, plain, exact, strict=True):
        plain_error = float((p.float() - e).abs().max())
        scale = max(float(e.abs().max()), 0.1)  # the key-bias gradient is 0 up to rounding
        assert float((a.float() - e).abs().max()) <= 3 * plain_error + 2e-2 * scale
    assert float((inference.float() - exact[0]).abs().max()) <= 2e-2 * float(exact[0].abs().max())


def test_overflowing_keys_fall_back_to_the_exact_softmax():
    """Key logits spread far more than exp's range over the positions: the shift-free
    exponentials overflow, the head notices and recomputes with max subtraction."""
    shape = (16, 5, 2, 0.5, 3, 3)
    heads = make_heads(shape, dtype=torch.float32)
    with torch.no_grad():
        for head in heads.values():
            head.query.weight.mul_(500.0)
    x = features(shape, dtype=torch.float32)
    with torch.no_grad():
        expected = heads["plain"].eval()(x)
        assert torch.isfinite(expected).all()
        assert chunked_logits(heads["fast"], x) is None  # the fast path did overflow
        assert_close(heads["fast"].eval()(x), expected, 1e-5)
        assert_close(heads["lean"].eval()(x), expected, 1e-5)


def test_lean_backward_keeps_no_map_sized_activations():
    shape = (16, 50, 2, 0.5, 6, 6)
    c, m, n, _, h, w = shape
    b = 4
    heads = make_heads(shape, dtype=torch.float32, chunk=n * b * h * w * 5)
    x = features(shape, batch=b, dtype=torch.float32).requires_grad_()
    map_bytes = n * m * b * h * w * 4

    def saved_bytes(head):
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            head.train()(x).sum().backward()
        return sum(total)

    assert saved_bytes(heads["plain"]) > 2 * map_bytes
    with kernel_disabled():  # fast's PyTorch path keeps maps for backward
        assert saved_bytes(heads["fast"]) > 2 * map_bytes
    if train_available():  # its compiled float32 CPU training kernel does not
        assert saved_bytes(heads["fast"]) < map_bytes / 2
    assert saved_bytes(heads["lean"]) < map_bytes / 2  # inputs and weights only


def test_impl_and_chunk_validation():
    head = NOAHHead(16, 5, 2)
    assert head.set_impl("lean") is head and head.impl == "lean"
    with pytest.raises(ConfigError, match="unknown NOAH head impl"):
        head.set_impl("turbo")
    with pytest.raises(ConfigError, match="chunk_elements"):
        NOAHHead(16, 5, 2, chunk_elements=0)
    assert set(available_impls()) == {"fast", "plain", "lean", "triton"}
    assert NOAHHead.IMPLS == head.IMPLS == available_impls()


def test_state_dict_layout_is_unchanged():
    head = NOAHHead(32, 7, 4, 0.25, impl="lean")
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"query.weight": (28, 2, 1, 1), "query.bias": (28,), "value.weight": (28, 6, 1, 1), "value.bias": (28,)}


@pytest.mark.slow
def test_torch_compile_matches_eager():
    shape = (32, 7, 4, 0.5, 3, 3)
    heads = make_heads(shape, dtype=torch.float32)
    x = features(shape, dtype=torch.float32)
    compiled = torch.compile(heads["fast"])
    with torch.no_grad():
        assert_close(compiled.eval()(x), heads["plain"].eval()(x), 1e-5)
    for a, b in zip(train_step(compiled.train(), x), train_step(heads["plain"].train(), x), strict=True):
        assert_close(a, b, 1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="onnx / onnxruntime not installed (pip install noah[onnx])",
)
def test_onnx_export_matches_pytorch(tmp_path):
    import onnxruntime

    shape = (32, 7, 4, 0.5, 3, 4)
    heads = make_heads(shape, dtype=torch.float32)
    head = heads["fast"].eval()
    x = features(shape, dtype=torch.float32)
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (x,), str(path), opset_version=17, input_names=["x"], output_names=["logits"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert_close(torch.from_numpy(got), heads["plain"].eval()(x), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("impl", ["fast", "plain", "lean"])
def test_empty_batch(impl, dtype):
    """A batch of zero images gives (0, M) logits on every path, and backward runs."""
    head = NOAHHead(16, 5, 2, dropout=0.1, impl=impl).to(dtype)
    x = torch.randn(0, 16, 3, 3, dtype=dtype)
    with torch.no_grad():
        assert head.eval()(x).shape == (0, 5)
        assert head(x, return_maps=True).attention.shape == (0, 2, 5, 3, 3)
    logits = head.train()(x.requires_grad_())
    logits.sum().backward()
    assert logits.shape == (0, 5) and x.grad.shape == x.shape
