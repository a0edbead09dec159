"""NOAHHead against the formula of SPEC §2, written here independently with explicit loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from noah import ConfigError, NOAHHead, ShapeError


def reference_noah(head: NOAHHead, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, M) and per-block attention / value maps (B, N, M, L), block by block."""
    b, c, h, w = x.shape
    n_blocks, m = head.num_heads, head.num_classes
    flat = x.reshape(b, c, h * w)
    if head.kv_split:
        ck = int(c * head.key_ratio)
        x_key, x_value = flat[:, :ck], flat[:, ck:]
    else:
        x_key = x_value = flat
    wq, bq = head.query.weight[:, :, 0, 0], head.query.bias
    wv, bv = head.value.weight[:, :, 0, 0], head.value.bias
    logits = torch.zeros(b, m, dtype=x.dtype)
    attentions, values = [], []
    for n in range(n_blocks):
        if head.head_split:
            gk, gv = x_key.shape[1] // n_blocks, x_value.shape[1] // n_blocks
            key_in, value_in = x_key[:, n * gk:(n + 1) * gk], x_value[:, n * gv:(n + 1) * gv]
        else:
            key_in, value_in = x_key, x_value
        rows = slice(n * m, (n + 1) * m)
        keys = torch.einsum("mc,bcl->bml", wq[rows], key_in) + bq[rows, None]
        vals = torch.einsum("mc,bcl->bml", wv[rows], value_in) + bv[rows, None]
        exp = torch.exp(keys - keys.max(dim=-1, keepdim=True).values)
        attn = exp / exp.sum(dim=-1, keepdim=True)
        logits += (attn * vals).sum(dim=-1)
        attentions.append(attn)
        values.append(vals)
    return logits, torch.stack(attentions, 1), torch.stack(values, 1)


SHAPES = [  # C, M, N, r, H, W
    (16, 5, 2, 0.5, 3, 3),
    (32, 7, 4, 0.25, 2, 5),
    (48, 3, 2, 1 / 3, 4, 1),
    (64, 10, 8, 0.5, 7, 7),
    (40, 1, 1, 0.5, 1, 1),
]
IMPLS = ("fast", "plain", "lean")  # the implementations of the standard head


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "C{}-M{}-N{}-r{:.2f}-{}x{}".format(*s))
@pytest.mark.parametrize("head_split,kv_split", list(itertools.product([True, False], repeat=2)))
def test_matches_reference_in_float64(shape, head_split, kv_split, impl):
    c, m, n, r, h, w = shape
    head = NOAHHead(c, m, n, r, head_split=head_split, kv_split=kv_split, impl=impl).double().eval()
    with torch.no_grad():  # non-zero biases so they are checked too
        head.query.bias.normal_()
        head.value.bias.normal_()
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    out = head(x, return_maps=True)
    logits, attention, values = reference_noah(head, x)
    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.attention.flatten(3), attention, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.value.flatten(3), values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head(x), logits, rtol=1e-12, atol=1e-12)


def test_maps_have_documented_shape_and_attention_sums_to_one():
    head = NOAHHead(32, 6, num_heads=4, key_ratio=0.5).eval()
    out = head(torch.randn(2, 32, 5, 3), return_maps=True)
    assert out.logits.shape == (2, 6)
    assert out.attention.shape == out.value.shape == (2, 4, 6, 5, 3)
    torch.testing.assert_close(out.attention.sum(dim=(-2, -1)), torch.ones(2, 4, 6))
    torch.testing.assert_close((out.attention * out.value).sum(dim=(1, 3, 4)), out.logits)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("head_split,kv_split", [(True, True), (False, False)])
def test_gradcheck(impl, head_split, kv_split):
    head = NOAHHead(8, 3, num_heads=2, key_ratio=0.5, head_split=head_split, kv_split=kv_split, impl=impl).double()
    x = torch.randn(2, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [head.query.weight, head.query.bias, head.value.weight, head.value.bias]

    assert torch.autograd.gradcheck(lambda inp: head(inp), (x,))
    head.zero_grad()
    head(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_parameter_gradients_match_reference():
    head = NOAHHead(24, 5, num_heads=3, key_ratio=0.5).double()
    x = torch.randn(2, 24, 3, 3, dtype=torch.float64)
    head(x).pow(2).sum().backward()
    fast = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    reference_noah(head, x)[0].pow(2).sum().backward()
    for got, want in zip(fast, [p.grad for p in head.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,shapes",
    [
        (dict(num_heads=4, key_ratio=0.5), {"query.weight": (40, 16, 1, 1), "value.weight": (40, 16, 1, 1)}),
        (dict(num_heads=4, key_ratio=0.25), {"query.weight": (40, 8, 1, 1), "value.weight": (40, 24, 1, 1)}),
        (dict(num_heads=4, kv_split=False), {"query.weight": (40, 32, 1, 1), "value.weight": (40, 32, 1, 1)}),
        (dict(num_heads=4, head_split=False), {"query.weight": (40, 64, 1, 1), "value.weight": (40, 64, 1, 1)}),
    ],
)
def test_state_dict_has_official_layout(kwargs, shapes):
    head = NOAHHead(128, 10, **kwargs)
    state = head.state_dict()
    assert set(state) == {"query.weight", "query.bias", "value.weight", "value.bias"}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape
    assert state["query.bias"].shape == state["value.bias"].shape == (40,)


def test_parameter_count_is_fc_plus_biases():
    c, m, n = 512, 1000, 4
    head = NOAHHead(c, m, num_heads=n, key_ratio=0.5)
    assert sum(p.numel() for p in head.parameters()) == c * m + 2 * n * m


def test_official_initialisation():
    head = NOAHHead(256, 500, num_heads=4, key_ratio=0.5)
    expected_std = math.sqrt(2.0 / (4 * 500))  # kaiming normal, fan_out = N*M for a 1x1 conv
    for conv in (head.query, head.value):
        assert conv.bias.abs().sum() == 0
        assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05


def test_dropout_acts_on_values_in_training_only():
    head = NOAHHead(16, 4, num_heads=2, dropout=0.5)
    x = torch.randn(2, 16, 3, 3)
    head.eval()
    torch.testing.assert_close(head(x), head(x))
    out = head.train()(x, return_maps=True)
    dropped = out.value == 0
    assert dropped.any() and not (out.attention == 0).any()
    kept = out.value[~dropped]
    head.eval()
    clean = head(x, return_maps=True).value[~dropped]
    torch.testing.assert_close(kept, clean * 2)  # inverted dropout scales kept values by 1/(1-p)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(in_channels=30, num_classes=10, num_heads=4, key_ratio=0.5), r"num_heads=4 does not divide the 15 key and 15 value.*valid num_heads: \[1, 3, 5, 15\]"),
        (dict(in_channels=64, num_classes=10, num_heads=4, key_ratio=1.0), r"key_ratio must lie strictly between 0 and 1, got 1.0"),
        (dict(in_channels=64, num_classes=10, num_heads=4, key_ratio=0.0), r"key_ratio must lie strictly between 0 and 1"),
        (dict(in_channels=8, num_classes=10, num_heads=1, key_ratio=0.1), r"key_ratio=0.1 splits 8 channels into 0 key and 8 value"),
        (dict(in_channels=0, num_classes=10), r"in_channels must be a positive integer, got 0"),
        (dict(in_channels=64, num_classes=0), r"num_classes must be a positive integer, got 0"),
        (dict(in_channels=64, num_classes=10, num_heads=-2), r"num_heads must be a positive integer, got -2"),
        (dict(in_channels=64, num_classes=10, dropout=1.0), r"dropout must lie in \[0, 1\), got 1.0"),
        (dict(in_channels=64, num_classes=10, impl="cuda"), r"unknown NOAH head impl 'cuda'"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        NOAHHead(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_head_split_off_accepts_any_head_count():
    head = NOAHHead(30, 4, num_heads=4, key_ratio=0.5, head_split=False)
    assert head(torch.randn(1, 30, 2, 2)).shape == (1, 4)


@pytest.mark.parametrize(
    "shape,pattern",
    [
        ((2, 32, 9), r"expects a feature map of shape \(B, C, H, W\) with C=32, got a 3-d tensor of shape \(2, 32, 9\)"),
        ((2, 16, 3, 3), r"expects 32 input channels \(B, C, H, W\), got 16"),
    ],
)
def test_wrong_input_says_what_was_expected(shape, pattern):
    head = NOAHHead(32, 4)
    with pytest.raises(ShapeError, match=pattern):
        head(torch.randn(*shape))
