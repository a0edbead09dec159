"""create_model on arbitrary timm backbones: layouts, both heads, timm behaviour, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_data_config

import noah
from noah import ConfigError, NOAHHead, ShapeError
from noah.models import NOAHModel

# (timm name, input side, expected feature-map side): NCHW CNNs, a ViT with a class token,
# NHWC output, a relative-position ViT without prefix tokens, an MLP-Mixer.
BACKBONES = [
    ("test_resnet", 64, 2),
    ("test_efficientnet", 64, 2),
    ("test_convnext", 64, 2),
    ("test_vit", 64, 4),
    ("test_vit_relpos", 64, 4),  # built for 64 px below
    ("test_mambaout", 64, 2),
]


@pytest.mark.parametrize("name,size,side", BACKBONES)
@pytest.mark.parametrize("head", ["noah", "gap"])
def test_forward_backward_on_timm_backbones(name, size, side, head):
    kwargs = {"img_size": size} if name == "test_vit_relpos" else {}
    model = noah.create_model(name, num_classes=7, head=head, num_heads=2, **kwargs)
    x = torch.randn(2, 3, size, size)
    fmap = model.forward_features(x)
    assert fmap.shape == (2, model.num_features, side, side)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.square().mean().backward()
    head_params = list(model.head.parameters())
    assert all(p.grad is not None for p in head_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_class_token_is_dropped_and_tokens_keep_grid_order():
    model = noah.create_model("test_vit", num_classes=3, num_heads=2).eval()
    x = torch.randn(1, 3, 64, 64)
    tokens = model.backbone.forward_features(x)
    assert model.num_prefix_tokens == 1
    fmap = model.forward_features(x)
    # position (row 1, col 2) of a 4x4 grid is patch token 1*4+2, after the class token
    torch.testing.assert_close(fmap[0, :, 1, 2], tokens[0, 1 + 6])


def test_nhwc_backbone_is_permuted():
    model = noah.create_model("test_mambaout", num_classes=3, num_heads=2).eval()
    x = torch.randn(1, 3, 64, 64)
    raw = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert raw.shape[-1] == model.num_features
    torch.testing.assert_close(model.forward_features(x), raw.permute(0, 3, 1, 2))


def test_mobilenetv3_conv_head_is_applied_per_position():
    model = noah.create_model("mobilenetv3_small_050", num_classes=5, num_heads=4).eval()
    assert model.num_features == model.backbone.conv_head.out_channels == 1024
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_hidden_mlp_head_is_applied_per_position():
    """timm's NormMlpClassifierHead with a hidden layer runs it as a 1x1 conv when not pooling."""
    model = noah.create_model("convnext_atto", num_classes=5, num_heads=4, head_hidden_size=64).eval()
    assert model.num_features == model.head.in_channels == 64
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 2, 2)
    hidden = model.backbone.head.pre_logits
    raw = model.backbone.forward_features(x)
    torch.testing.assert_close(features, hidden(model.backbone.head.norm(raw)))
    assert model(x).shape == (2, 5)


def test_noah_and_gap_share_the_backbone_exactly():
    noah_model = noah.create_model("test_resnet", num_classes=4, head="noah", num_heads=2)
    gap_model = noah.create_model("test_resnet", num_classes=4, head="gap")
    assert noah_model.backbone.state_dict().keys() == gap_model.backbone.state_dict().keys()
    gap_model.backbone.load_state_dict(noah_model.backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(noah_model.eval().forward_features(x), gap_model.eval().forward_features(x))


def test_timm_like_interface():
    model = noah.create_model("test_resnet", num_classes=4, num_heads=2)
    assert isinstance(model.get_classifier(), NOAHHead)
    assert model.num_classes == 4
    model.reset_classifier(9)
    assert model.num_classes == 9 and model.head.num_classes == 9
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 9)
    model.reset_classifier(0)  # timm: no classifier -> pooled features; and global_pool='' -> the map
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features, 2, 2)
    gap = noah.create_model("test_resnet", num_classes=4, head="gap")
    assert isinstance(gap.get_classifier(), torch.nn.Linear)
    assert gap.forward_head(gap.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, gap.num_features)
    cfg = resolve_data_config(model=noah.create_model("resnet18", num_classes=2))
    assert cfg["input_size"] == (3, 224, 224) and len(cfg["mean"]) == 3


def test_forward_with_maps_matches_forward():
    model = noah.create_model("test_resnet", num_classes=4, num_heads=2).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model.forward_with_maps(x)
    torch.testing.assert_close(out.logits, model(x))
    assert out.attention.shape == (2, 2, 4, 2, 2)
    with pytest.raises(ConfigError, match="head='noah'"):
        noah.create_model("test_resnet", num_classes=4, head="gap").forward_with_maps(x)


def test_paper_models_are_in_timms_registry():
    assert timm.is_model("noah_resnet18") and timm.is_model("noah_pvt_tiny_050")
    model = timm.create_model("noah_resnet18", num_classes=10, drop_rate=0.3)
    assert isinstance(model, NOAHModel)
    assert model.head.num_heads == 4 and model.head.key_ratio == 0.5 and model.head.dropout.p == 0.3


def test_overrides_win_over_presets():
    model = noah.create_model("resnet18", num_classes=10, num_heads=8, key_ratio=0.25, head_dropout=0.0)
    assert (model.head.num_heads, model.head.key_ratio, model.head.dropout.p) == (8, 0.25, 0.0)
    assert noah.create_model("noah_resnet18", num_classes=10).head.num_heads == 4


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(name="not_a_model"), ConfigError, r"unknown model 'not_a_model'"),
        (dict(name="test_resnet", head="max"), ConfigError, r"unknown head 'max'; expected one of noah, gap"),
        (dict(name="test_resnet", num_heads=5), ConfigError, r"num_heads=5 does not divide the 48 key and 48 value channels.*valid num_heads: \[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]"),
        (dict(name="test_resnet", num_classes=-1), ConfigError, r"num_classes must be a non-negative integer"),
        (dict(name="test_resnet", pretrained="/nonexistent/weights.pth"), ConfigError, r"pretrained weights file not found"),
    ],
)
def test_bad_model_configuration(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        noah.create_model(**kwargs)


def test_pooled_backbone_output_is_rejected():
    model = noah.create_model("test_resnet", num_classes=3, num_heads=2)
    with pytest.raises(ShapeError, match=r"expected per-position features with 96 channels"):
        model.to_feature_map(torch.randn(2, 96), (64, 64))
    vit = noah.create_model("test_vit", num_classes=3, num_heads=2)
    with pytest.raises(ShapeError, match=r"cannot lay 7 patch tokens of a 64x64 input out on a grid"):
        vit.to_feature_map(torch.randn(1, 1 + 7, vit.num_features), (64, 64))


def test_local_backbone_weights_file(tmp_path):
    source = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = noah.create_model("test_resnet", num_classes=3, num_heads=2, pretrained=str(path))
    loaded = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded[key], value)
