"""The registered ``noah_*`` models against timm's model contract.

Equivalents of the tests in timm's ``tests/test_models.py`` (forward, backward, default cfgs,
features, intermediates, fx, TorchScript), run on one small model per family at 64 px (timm's
tests shrink inputs the same way); the checks that need no compute run on all 26 models, built on
the meta device.
"""

import math
import warnings

import pytest
import timm
import timm.optim
import timm.utils
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import noah
from noah.models import NOAHModel, registered_names

# the smallest member of each family; transformers and MLPs are built for 64 px inputs
SMALL = {
    "noah_resnet18": {},
    "noah_mobilenetv2_035": {},
    "noah_mobilenetv3_small": {},
    "noah_shufflenetv2_100": {},
    "noah_deit_tiny_050_patch16_224": {"img_size": 64},
    "noah_pvt_tiny_050": {"img_size": 64},
    "noah_mixer_s16_050_224": {"img_size": 64},
    "noah_gmlp_ti16_050_224": {"img_size": 64},
}
# cheap at their default 224 px input (what timm's default-cfg test uses)
CHEAP_AT_224 = ["noah_resnet18", "noah_mobilenetv2_035", "noah_mobilenetv3_small", "noah_deit_tiny_050_patch16_224", "noah_pvt_tiny_050"]
SIDE = 64


def small_model(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, **SMALL[name], **kwargs)


def images(batch: int = 1, side: int = SIDE) -> torch.Tensor:
    return torch.randn(batch, 3, side, side)


def test_every_paper_model_is_registered():
    assert registered_names == [f"noah_{m.name}" for m in noah.list_models()]
    assert len(registered_names) == 26
    assert set(timm.list_models("noah_*")) == set(registered_names)


@pytest.mark.parametrize("name", registered_names)
def test_pretrained_cfg_names_real_parameters(name):
    """timm's default-cfg test, the part without compute: classifier/first_conv name parameters,
    pool_size is the feature map of the configured input size."""
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    keys = model.state_dict().keys()
    for module in cfg["classifier"]:
        assert f"{module}.weight" in keys
    assert f"{cfg['first_conv']}.weight" in keys
    assert cfg["num_classes"] == model.num_classes == 1000
    assert model.num_features > 0 and model.head_hidden_size > 0
    reduction = model.feature_info[-1]["reduction"]
    assert cfg["pool_size"] == (math.ceil(cfg["input_size"][1] / reduction),) * 2
    assert {"input_size", "crop_pct", "mean", "std", "interpolation"} <= cfg.keys()


@pytest.mark.parametrize("name", CHEAP_AT_224)
def test_default_cfg_shapes(name):
    """timm's test_model_default_cfgs: forward_features at the configured size gives pool_size,
    forward_head(pre_logits=True) and a 0-class model give (B, head_hidden_size), global_pool=''
    the map."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        assert features.shape[1:] == (model.num_features, *cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape == features.shape
        bare = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert bare(x).shape == features.shape


@pytest.mark.parametrize("name", list(SMALL))
def test_forward_and_grad_checkpointing(name):
    """timm's test_model_forward: one forward, no NaN; grad checkpointing changes nothing."""
    model = small_model(name).eval()
    x = images()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and not out.isnan().any()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_backward_reaches_every_parameter(name):
    """timm's test_model_backward: every parameter gets a gradient."""
    model = small_model(name, num_classes=42).train()
    out = model(images(2))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing and out.shape == (2, 42)


@pytest.mark.parametrize("name", list(SMALL))
def test_features_only_is_the_backbone_pyramid(name):
    """timm's test_model_forward_features: one map per level, channels and strides as in feature_info."""
    features = small_model(name, features_only=True).eval()
    info = features.feature_info
    assert len(info.channels()) >= 3
    assert not any(".head." in k or k.startswith("head.") for k in features.state_dict())
    with torch.no_grad():
        outs = features(images())
    assert len(outs) == len(info.channels())
    for channels, reduction, out in zip(info.channels(), info.reduction(), outs):
        assert out.shape[:2] == (1, channels)
        assert out.shape[2] <= math.ceil(SIDE / reduction) + 1 and out.shape[3] <= math.ceil(SIDE / reduction) + 1
    picked = small_model(name, features_only=True, out_indices=(-2, -1)).eval()
    assert picked.feature_info.channels() == info.channels()[-2:]


@pytest.mark.parametrize("name", list(SMALL))
def test_forward_intermediates(name):
    """timm's test_model_forward_intermediates: levels of feature_info, final = forward_features."""
    model = small_model(name).eval()
    x = images()
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert len(intermediates) == len(model.feature_info)
        for info, out in zip(model.feature_info, intermediates):
            assert out.shape[1] == info["num_chs"]
            assert out.shape[2] <= math.ceil(SIDE / info["reduction"]) + 1
        torch.testing.assert_close(final, model.forward_features(x))
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_fx_feature_extraction(name):
    """timm's test_model_forward_fx / backward_fx, with torchvision's plain create_feature_extractor
    (no tracer settings): the head and the layout step are leaf nodes, outputs are identical; the
    train-mode graph back-propagates to every parameter."""
    model = small_model(name, num_classes=10).eval()
    x = images(2)
    nodes = {"call_head": "logits", "apply_layout": "features", model.feature_info[1]["module"]: "level1"}
    extractor = create_feature_extractor(model, train_return_nodes=nodes, eval_return_nodes=nodes)
    traced_into_head = [n for n in extractor.graph.nodes if str(n.target).startswith("head.")]
    assert not traced_into_head  # the head is an argument of the call_head node, not traced through
    with torch.no_grad():
        out = extractor.eval()(x)
        assert torch.equal(out["logits"], model(x))
        assert torch.equal(out["features"], model.forward_features(x))
    extractor.train()
    torch.manual_seed(1)
    out = extractor(x)
    out["logits"].square().mean().backward()
    assert all(p.grad is not None for p in extractor.parameters())


def test_fx_with_timms_tracer_settings():
    """timm's own fx helpers (its notrace lists, where NOAHHead is registered) and feature_cls='fx'."""
    model = small_model("noah_resnet18", num_classes=10).eval()
    extractor = timm.layers.create_feature_extractor(model, {"backbone.layer3": "c4", "call_head": "logits"})
    x = images()
    with torch.no_grad():
        out = extractor(x)
        assert out["c4"].shape == (1, 256, 4, 4) and torch.equal(out["logits"], model(x))
    assert noah.NOAHHead in get_notrace_modules()
    graph_net = small_model("noah_resnet18", features_only=True, feature_cls="fx", out_indices=(2, 4)).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in graph_net(x)] == [128, 512]


@pytest.mark.slow
@pytest.mark.parametrize("name", registered_names)
def test_every_model_traces_with_fx(name):
    """All 26 trace with timm's tracer settings (meta device: no compute)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    tracer = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    assert eval_nodes[-1] == train_nodes[-1] == "call_head"


@pytest.mark.parametrize("name", list(SMALL))
def test_torchscript(name):
    """timm's test_model_forward_torchscript: the scripted model gives the eager numbers (the NOAH
    head scripts as its plain formula)."""
    with timm.layers.set_layer_config(scriptable=True):
        model = small_model(name, num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in favour of export
        scripted = torch.jit.script(model)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(model.head, noah.NOAHHead)  # scripting left the eager model as it was


def test_reset_classifier_semantics_for_both_heads():
    for head in ("noah", "gap"):
        model = noah.create_model("test_resnet", num_classes=4, head=head, num_heads=2).eval()
        x = images()
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "max")
        torch.testing.assert_close(model(x), model.forward_features(x).amax(dim=(2, 3)))
        model.reset_classifier(0, "")
        assert model(x).shape == (1, model.num_features, 2, 2)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
    with pytest.raises(noah.ConfigError, match="global_pool='catavgmax' is not supported"):
        model.reset_classifier(0, "catavgmax")


def test_group_matcher_drives_timms_layer_decay():
    """create_optimizer_v2(layer_decay=...) needs group_matcher: the stem learns slowest, the
    head (which no backbone group matches) at the full rate, and no_weight_decay is honoured."""
    model = small_model("noah_deit_tiny_050_patch16_224", num_classes=10)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert scale[id(params["head.query.weight"])] == 1.0
    assert scale[id(params["backbone.patch_embed.proj.weight"])] < scale[id(params["backbone.blocks.11.mlp.fc1.weight"])] < 1.0
    assert decay[id(params["backbone.pos_embed"])] == 0.0 and decay[id(params["head.query.weight"])] == 0.05
    groups = model.group_matcher()
    assert groups["stem"].startswith("^backbone\\.")


def test_data_config_and_transform_follow_the_official_evaluation():
    resnet = timm.data.resolve_data_config(model=small_model("noah_resnet18"))
    mixer = timm.data.resolve_data_config(model=small_model("noah_mixer_s16_050_224"))
    assert (resnet["crop_pct"], resnet["interpolation"], resnet["mean"]) == (0.875, "bilinear", timm.data.IMAGENET_DEFAULT_MEAN)
    assert (mixer["crop_pct"], mixer["interpolation"], mixer["mean"]) == (0.9, "bicubic", (0.5, 0.5, 0.5))
    transform = timm.data.create_transform(**resnet)
    from PIL import Image

    assert transform(Image.new("RGB", (300, 260))).shape == (3, 224, 224)


def test_model_ema_v3_tracks_the_model():
    model = small_model("noah_resnet18", num_classes=5)
    ema = timm.utils.ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=10)
    ema_head = ema.module.head.query.weight
    torch.testing.assert_close(ema_head, model.head.query.weight - 0.5)
    assert isinstance(ema.module, NOAHModel) and ema.module.eval()(images()).shape == (1, 5)


@pytest.mark.parametrize("name,levels", [("test_convnext", 4), ("test_vit", 3), ("test_efficientnet", 5)])
def test_any_timm_backbone_gives_its_pyramid(name, levels):
    """noah.create_model on any timm backbone: features_only / forward_intermediates are the
    backbone's own (timm's default levels: every CNN stage, the last 3 transformer blocks)."""
    features = noah.create_model(name, num_heads=2, features_only=True).eval()
    model = noah.create_model(name, num_classes=3, num_heads=2).eval()
    x = images()
    with torch.no_grad():
        outs = features(x)
        final, intermediates = model.forward_intermediates(x, indices=levels)
        own = model.backbone.forward_intermediates(x, indices=levels, intermediates_only=True)
    assert [o.shape[1] for o in outs] == features.feature_info.channels() and len(outs) == levels
    for ours, theirs in zip(intermediates, own):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(final, model.forward_features(x))
