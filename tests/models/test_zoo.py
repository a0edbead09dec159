"""The paper's 26 models: presets, parameter counts (SPEC §4, project page), and that each one trains."""

from __future__ import annotations

import pytest
import torch

import noah
from noah.models import PAPER_MODELS, count_parameters, create_model
from noah.models.pvt import PyramidVisionTransformer

NAMES = list(PAPER_MODELS)


def built_params(name: str) -> tuple[float, float]:
    with torch.device("meta"):
        return (count_parameters(create_model(name, head="gap")) / 1e6, count_parameters(create_model(name)) / 1e6)


def test_all_26_models_are_listed_with_presets():
    rows = noah.list_models()
    assert len(rows) == 26 and [r.name for r in rows] == NAMES
    assert {r.family for r in rows} == {"CNN", "ViT", "MLP"}
    assert sum(r.family == "CNN" for r in rows) == 10
    assert PAPER_MODELS["mobilenetv3_small"].preset() == {"num_heads": 8, "key_ratio": 0.25, "head_dropout": 0.2}
    assert PAPER_MODELS["mobilenetv2_035"].preset() == {"num_heads": 8, "key_ratio": 0.25, "head_dropout": 0.2}
    assert PAPER_MODELS["resnet50"].preset() == {"num_heads": 4, "key_ratio": 0.125, "head_dropout": 0.1}
    assert [r.name for r in noah.list_models("pvt")] == ["pvt_tiny", "pvt_tiny_075", "pvt_tiny_050"]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_paper(name):
    row = PAPER_MODELS[name]
    built = built_params(name)
    matches = [abs(b - p) <= 0.01 for b, p in zip(built, row.params)]
    if row.param_note:
        # a documented exception must really be one, or the note is stale
        assert not all(matches), f"{name} matches {row.params} now; drop its param_note"
    else:
        assert all(matches), f"{name}: built {built}, paper {row.params}"


def test_noah_head_presets_reach_the_head():
    with torch.device("meta"):
        model = create_model("mobilenetv2_050")
    assert (model.head.num_heads, model.head.key_ratio, model.head.dropout.p) == (8, 0.25, 0.2)
    assert model.head.in_channels == 1280


def test_paper_vits_have_no_class_token():
    with torch.device("meta"):
        deit = create_model("deit_tiny_075_patch16_224")
        pvt = create_model("pvt_tiny")
    assert deit.backbone.cls_token is None and deit.num_prefix_tokens == 0
    assert deit.backbone.pos_embed.shape == (1, 196, 144)
    assert pvt.backbone.cls_token is None


SMALL_INPUT = {"mixer": {"img_size": 64}, "gmlp": {"img_size": 64}, "deit": {"img_size": 64}, "pvt": {"img_size": 64}}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_paper_model_trains_one_step(name):
    kwargs = next((v for k, v in SMALL_INPUT.items() if name.startswith(k)), {})
    model = create_model(name, num_classes=10, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    assert model.head.query.weight.grad.abs().sum() > 0


def test_pvt_with_class_token_and_other_resolutions():
    backbone = PyramidVisionTransformer(img_size=64, num_classes=0, class_token=True, embed_dims=(16, 32, 40, 64))
    tokens = backbone.forward_features(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 1 + 2 * 2, 64)
    plain = PyramidVisionTransformer(img_size=64, num_classes=5, embed_dims=(16, 32, 40, 64), global_pool="avg")
    assert plain(torch.randn(2, 3, 96, 128)).shape == (2, 5)  # position embeddings are resized
    assert plain.forward_features(torch.randn(1, 3, 96, 128)).shape == (1, 64, 3, 4)
