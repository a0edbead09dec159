"""The comparison heads "sa" (the paper's Table XI) and "csra", against references written here."""

from __future__ import annotations

import math

import pytest
import torch

from noah import ConfigError, ShapeError
from noah.head import build_head
from noah.head.csra import CSRAHead
from noah.head.self_attention import SelfAttentionHead


def reference_self_attention(head: SelfAttentionHead, x: torch.Tensor) -> torch.Tensor:
    d = head.dim
    w, b = head.qkv.weight, head.qkv.bias
    out = []
    for image in x.flatten(2):  # (C, L)
        tokens = image.T  # (L, C)
        q, k, v = (tokens @ w[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d] for i in range(3))
        scores = q @ k.T / math.sqrt(d)  # (L, L): token i attends to token j
        weights = torch.exp(scores) / torch.exp(scores).sum(dim=1, keepdim=True)
        pooled = (weights @ v).mean(dim=0)  # GAP over the tokens
        out.append(pooled @ head.fc.weight.T + head.fc.bias)
    return torch.stack(out)


def test_self_attention_head_matches_reference():
    head = build_head("sa", 16, 5, dropout=0.1).double().eval()
    assert isinstance(head, SelfAttentionHead) and head.dim == 4  # C/4 by default
    x = torch.randn(3, 16, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(head(x), reference_self_attention(head, x), rtol=1e-12, atol=1e-12)


def test_self_attention_head_gradient_and_parameters():
    head = build_head("sa", 8, 3, sa_dim=6).double()
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: head(inp), (x,))
    assert sum(p.numel() for p in head.parameters()) == 3 * (8 * 6 + 6) + 6 * 3 + 3


def reference_csra(head: CSRAHead, x: torch.Tensor) -> torch.Tensor:
    m = head.num_classes
    flat = x.flatten(2)  # (B, C, L)
    logits = torch.zeros(x.shape[0], m, dtype=x.dtype)
    for h, temperature in enumerate(head.temperatures):
        for c in range(m):
            w = head.classifier.weight[h * m + c, :, 0, 0]
            s = torch.einsum("c,bcl->bl", w, flat) / torch.sqrt((w * w).sum())
            if math.isinf(temperature):
                attended = s.max(dim=1).values
            else:
                e = torch.exp(temperature * s)
                attended = (e * s).sum(dim=1) / e.sum(dim=1)
            logits[:, c] += s.mean(dim=1) + head.lam * attended
    return logits


@pytest.mark.parametrize("heads", [1, 2, 4, 6, 8])
def test_csra_matches_reference_for_every_head_count(heads):
    head = build_head("csra", 12, 4, csra_heads=heads, csra_lambda=0.3).double()
    assert len(head.temperatures) == heads and math.isinf(head.temperatures[-1]) == (heads > 1)
    x = torch.randn(2, 12, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(head(x), reference_csra(head, x), rtol=1e-12, atol=1e-12)


def test_csra_defaults_gradient_and_parameters():
    head = build_head("csra", 8, 3).double()
    assert (head.num_heads, head.lam, head.temperatures) == (1, 0.1, (1.0,))
    assert sum(p.numel() for p in head.parameters()) == 8 * 3  # bias-free 1x1 classifier per head
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: head(inp), (x,))
    # the scores are normalised by the classifier's norms: scaling the weights changes nothing
    before = head(x)
    with torch.no_grad():
        head.classifier.weight.mul_(7.0)
    torch.testing.assert_close(head(x), before)


@pytest.mark.parametrize(
    "name,options,pattern",
    [
        ("csra", dict(csra_heads=3), r"CSRA has temperatures for 1, 2, 4, 6, 8 heads, got 3"),
        ("csra", dict(csra_lambda=0.0), r"CSRA's lambda must be positive, got 0.0"),
        ("sa", dict(sa_dim=0), r"the self-attention head's dim must be a positive integer, got 0"),
        ("sa", dict(attention="classes"), r"the sa head has no option attention \(it takes sa_dim\)"),
        ("gap", dict(variant="a"), r"the gap head has no option variant \(it takes none\)"),
        ("mlp", {}, r"unknown head 'mlp'; expected one of noah, gap, sa, csra"),
    ],
)
def test_bad_options_are_one_line_config_errors(name, options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_head(name, 16, 4, **options)


@pytest.mark.parametrize("name", ["sa", "csra"])
def test_wrong_input_shape_is_a_shape_error(name):
    with pytest.raises(ShapeError, match=r"expects 16 input channels"):
        build_head(name, 16, 4)(torch.randn(1, 8, 2, 2))


def test_options_left_at_none_are_the_heads_defaults():
    head = build_head("noah", 16, 4, attention=None, variant=None, sa_dim=None)
    assert head.is_standard
