"""The ablation switches of NOAHHead (Tables VII-IX, X (c)/(d)) and POCA variants (a), (b), (e),
(f) of Table X, each against a reference written here with explicit loops over the blocks."""

from __future__ import annotations

import pytest
import torch

from noah import ConfigError, NOAHHead
from noah.head import build_head
from noah.head.prelinear import PreLinearNOAHHead
from noah.head.reduced import ReducedPOCAHead
from noah.head.shared import SharedAttentionHead


def _conv_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(B, c, H, W)`` through ``weight`` ``(o, c, k, k)`` (zero padding k//2, stride 1) as
    explicit shifted sums: ``(B, o, H*W)``."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    pad = k // 2
    padded = torch.zeros(b, c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    out = bias[None, :, None, None].expand(b, -1, h, w).clone()
    for i in range(k):
        for j in range(k):
            out += torch.einsum("oc,bchw->bohw", weight[:, :, i, j], padded[:, :, i : i + h, j : j + w])
    return out.reshape(b, -1, h * w)


def _block_inputs(head, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``n``'s key and value channels of ``x`` (SPEC §2's layout)."""
    c = x.shape[1]
    ck = int(c * head.key_ratio) if head.kv_split else c
    x_key, x_value = (x[:, :ck], x[:, ck:]) if head.kv_split else (x, x)
    if not head.head_split:
        return x_key, x_value
    gk, gv = x_key.shape[1] // head.num_heads, x_value.shape[1] // head.num_heads
    return x_key[:, n * gk : (n + 1) * gk], x_value[:, n * gv : (n + 1) * gv]


def reference_switched(head: NOAHHead, x: torch.Tensor) -> torch.Tensor:
    """Logits of a NOAHHead with any attention / merge / kernel size, block by block."""
    m = head.num_classes
    logits = torch.zeros(x.shape[0], m, dtype=x.dtype)
    for n in range(head.num_heads):
        key_in, value_in = _block_inputs(head, x, n)
        rows = slice(n * m, (n + 1) * m)
        keys = _conv_rows(key_in, head.query.weight[rows], head.query.bias[rows])  # (B, M, L)
        values = _conv_rows(value_in, head.value.weight[rows], head.value.bias[rows])
        if head.attention == "positions":
            attention = torch.exp(keys) / torch.exp(keys).sum(dim=2, keepdim=True)
        elif head.attention == "classes":
            attention = torch.exp(keys) / torch.exp(keys).sum(dim=1, keepdim=True)
        else:
            attention = 1.0 / (1.0 + torch.exp(-keys))
        local = attention * values
        if head.merge == "sum":
            logits += local.sum(dim=2)
        elif head.merge == "avg":
            logits += local.sum(dim=2) / local.shape[2]
        else:
            logits += local.max(dim=2).values
    return logits


def _randomise_biases(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_()


SWITCHES = [
    dict(attention="classes"),
    dict(attention="sigmoid"),
    dict(merge="avg"),
    dict(merge="max"),
    dict(kernel_size=3),
    dict(attention="classes", merge="max", head_split=False),
    dict(kernel_size=3, kv_split=False),
    dict(merge="avg", head_split=False, kv_split=False),
]


@pytest.mark.parametrize("impl", ["fast", "plain", "lean"])
@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_switched_head_matches_reference_in_float64(switches, impl):
    head = NOAHHead(24, 5, num_heads=2, key_ratio=0.5, impl=impl, **switches).double().eval()
    _randomise_biases(head)
    assert not head.is_standard
    x = torch.randn(3, 24, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(head(x), reference_switched(head, x), rtol=1e-12, atol=1e-12)
    out = head(x, return_maps=True)
    assert out.attention.shape == out.value.shape == (3, 2, 5, 4, 3)


@pytest.mark.parametrize("impl", ["fast", "lean"])
def test_switched_head_never_reaches_the_standard_kernels(impl):
    """Float32 CPU inference is where the compiled and chunked kernels run for standard heads;
    a switched head must still give its own numbers there (with autograd on too)."""
    head = NOAHHead(32, 6, num_heads=4, key_ratio=0.5, attention="classes", impl=impl).eval()
    x = torch.randn(2, 32, 5, 5)
    want = reference_switched(head.double(), x.double()).float()
    head.float()
    with torch.no_grad():
        torch.testing.assert_close(head(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(x), want, rtol=1e-5, atol=1e-5)


def test_standard_head_is_standard_and_the_attention_of_classes_sums_over_classes():
    assert NOAHHead(16, 4, head_split=False, kv_split=False).is_standard
    head = NOAHHead(16, 4, num_heads=2, attention="classes").eval()
    out = head(torch.randn(2, 16, 3, 3), return_maps=True)
    torch.testing.assert_close(out.attention.sum(dim=2), torch.ones(2, 2, 3, 3))


@pytest.mark.parametrize("options", [dict(attention="sigmoid"), dict(attention="classes"), dict(merge="max"),
                                     dict(merge="avg"), *(dict(variant=v) for v in "abdef")],
                         ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_gradcheck(options):
    head = build_head("noah", 8, 3, num_heads=2, **options).double()
    _randomise_biases(head)
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: head(inp), (x,))
    head(torch.randn(2, 8, 3, 3, dtype=torch.float64)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_kernel_size_3_keeps_the_official_key_names_with_3x3_weights():
    head = NOAHHead(64, 10, num_heads=4, key_ratio=0.5, kernel_size=3)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == {
        "query.weight": (40, 8, 3, 3), "query.bias": (40,), "value.weight": (40, 8, 3, 3), "value.bias": (40,),
    }


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(attention="channels"), r"attention must be one of positions, classes, sigmoid, got 'channels'"),
        (dict(merge="mean"), r"merge must be one of sum, avg, max, got 'mean'"),
        (dict(kernel_size=2), r"kernel_size must be a positive odd integer \(1 is the standard head\), got 2"),
    ],
)
def test_bad_switch_is_one_line_config_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        NOAHHead(16, 4, **kwargs)


# ---- POCA variants (a), (b), (e), (f)


def reference_reduced(head: ReducedPOCAHead, x: torch.Tensor) -> torch.Tensor:
    w = head.key_width
    pooled = []
    ck = head.key_channels
    gk, gv = ck // head.num_heads, (x.shape[1] - ck) // head.num_heads
    flat = x.flatten(2)
    for n in range(head.num_heads):
        rows = slice(n * w, (n + 1) * w)
        keys = torch.einsum("oc,bcl->bol", head.query.weight[rows, :, 0, 0], flat[:, n * gk : (n + 1) * gk])
        keys = keys + head.query.bias[rows, None]
        values = torch.einsum("oc,bcl->bol", head.value.weight[rows, :, 0, 0], flat[:, ck + n * gv : ck + (n + 1) * gv])
        values = values + head.value.bias[rows, None]
        attention = torch.exp(keys) / torch.exp(keys).sum(dim=2, keepdim=True)
        pooled.append((attention * values).sum(dim=2))  # (B, M')
    features = torch.cat(pooled, dim=1) if head.concat else sum(pooled)
    return features @ head.fc.weight.T + head.fc.bias


@pytest.mark.parametrize("variant", ["a", "b"])
def test_reduced_variants_match_reference_and_default_widths(variant):
    head = build_head("noah", 24, 7, num_heads=2, key_ratio=0.25, variant=variant).double()
    assert isinstance(head, ReducedPOCAHead)
    assert head.key_width == (24 if variant == "a" else 12)  # C, resp. C/N (the paper's parameter counts)
    assert head.fc.in_features == 24
    _randomise_biases(head)
    x = torch.randn(3, 24, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(head(x), reference_reduced(head, x), rtol=1e-12, atol=1e-12)


def test_reduced_variant_takes_an_explicit_width():
    head = build_head("noah", 32, 10, num_heads=4, key_ratio=0.5, variant="b", key_width=5)
    assert (head.key_width, head.fc.in_features) == (5, 20)
    assert sum(p.numel() for p in head.parameters()) == 32 * 5 + 2 * 4 * 5 + 20 * 10 + 10


def reference_shared(head: SharedAttentionHead, x: torch.Tensor) -> torch.Tensor:
    g, m = x.shape[1] // head.num_heads, head.num_classes
    flat = x.flatten(2)
    logits = torch.zeros(x.shape[0], m, dtype=x.dtype)
    for n in range(head.num_heads):
        block = flat[:, n * g : (n + 1) * g]
        key = torch.einsum("c,bcl->bl", head.query.weight[n, :, 0, 0], block) + head.query.bias[n]
        attention = torch.exp(key) / torch.exp(key).sum(dim=1, keepdim=True)  # (B, L), one map for all classes
        rows = slice(n * m, (n + 1) * m)
        values = torch.einsum("mc,bcl->bml", head.value.weight[rows, :, 0, 0], block) + head.value.bias[rows, None]
        logits += (attention[:, None] * values).sum(dim=2)
    return logits


def test_shared_attention_variant_matches_reference():
    head = build_head("noah", 24, 5, num_heads=3, variant="e").double()
    assert isinstance(head, SharedAttentionHead)
    _randomise_biases(head)
    x = torch.randn(2, 24, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(head(x), reference_shared(head, x), rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in head.parameters()) == 24 + 3 + 24 * 5 + 3 * 5


@pytest.mark.parametrize("impl", ["fast", "plain", "lean"])
def test_prelinear_variant_is_the_standard_head_after_per_block_layers(impl):
    head = build_head("noah", 24, 5, num_heads=2, key_ratio=0.5, variant="f").double().set_impl(impl)
    assert isinstance(head, PreLinearNOAHHead) and head.is_standard
    _randomise_biases(head)
    x = torch.randn(2, 24, 3, 3, dtype=torch.float64)
    # the extra layers, block by block, as plain matrices
    blocks = []
    for pre, part in ((head.key_pre, x[:, :12]), (head.value_pre, x[:, 12:])):
        for n in range(2):
            rows = slice(n * 6, (n + 1) * 6)
            w, b = pre.weight[rows, :, 0, 0], pre.bias[rows]
            blocks.append(torch.einsum("oc,bchw->bohw", w, part[:, rows]) + b[None, :, None, None])
    transformed = torch.cat(blocks, dim=1)
    plain = NOAHHead(24, 5, num_heads=2, key_ratio=0.5).double()
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.split(".")[0].endswith("_pre")})
    torch.testing.assert_close(head(x), reference_switched(plain, transformed), rtol=1e-12, atol=1e-12)
    assert head.key_pre.weight.shape == (12, 6, 1, 1)  # per block: same width in and out


def test_prelinear_variant_reset_parameters_reaches_the_extra_layers():
    head = build_head("noah", 16, 4, num_heads=2, variant="f")
    with torch.no_grad():
        head.key_pre.bias.fill_(3.0)
    head.reset_parameters()
    assert head.key_pre.bias.abs().sum() == 0


@pytest.mark.parametrize(
    "options,pattern",
    [
        (dict(variant="e", attention="classes"), r"POCA variant \(e\) has no option attention \(it takes none\)"),
        (dict(variant="a", merge="max"), r"POCA variant \(a\) has no option merge \(it takes key_width\)"),
        (dict(variant="c", attention="classes"), r"POCA variant \(c\) has no option attention \(it takes head_split, "
                                                 r"kv_split, merge\)"),
        (dict(variant="f", kv_split=False), r"POCA variant \(f\) needs the second-level split"),
        (dict(variant="g"), r"unknown POCA variant 'g'; expected one of a, b, c, d, e, f"),
        (dict(key_width=8), r"the standard NOAH head has no option key_width"),
    ],
)
def test_variant_refuses_what_it_cannot_express(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_head("noah", 16, 4, num_heads=2, **options)


@pytest.mark.parametrize("variant", ["a", "b", "c", "d", "e", "f"])
def test_every_variant_trains_with_dropout(variant):
    head = build_head("noah", 16, 4, num_heads=2, dropout=0.3, variant=variant).train()
    out = head(torch.randn(3, 16, 4, 4))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_variant_c_is_the_sigmoid_switch_and_d_the_3x3_switch():
    c, d = build_head("noah", 16, 4, variant="c"), build_head("noah", 16, 4, variant="d")
    assert type(c) is NOAHHead and (c.attention, c.kernel_size) == ("sigmoid", 1)
    assert type(d) is NOAHHead and (d.attention, d.kernel_size) == ("positions", 3)


def test_maps_of_a_switched_head_multiply_to_its_logits():
    head = NOAHHead(16, 4, num_heads=2, merge="avg").eval()
    out = head(torch.randn(2, 16, 3, 3), return_maps=True)
    torch.testing.assert_close((out.attention * out.value).mean(dim=(3, 4)).sum(dim=1), out.logits)
