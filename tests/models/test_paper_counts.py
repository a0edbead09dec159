"""Parameter counts of the paper's ablation tables (VI, VII, X, XI), from real backbones and heads."""

from __future__ import annotations

import pytest

from noah import count_parameters, create_model
from noah.head import build_head


@pytest.fixture(scope="module")
def backbones() -> dict[str, int]:
    """Parameters of the ResNet18 / ResNet50 backbones alone (torchvision layout, no head)."""
    return {name: count_parameters(create_model(name, num_classes=0)) for name in ("resnet18", "resnet50")}


def _millions(backbones: dict[str, int], model: str, channels: int, head: str = "noah", **options) -> float:
    n, r = (4, 0.5) if model == "resnet18" else (4, 0.125)
    options = {"num_heads": n, "key_ratio": r, **options}
    return round((backbones[model] + count_parameters(build_head(head, channels, 1000, **options))) / 1e6, 2)


@pytest.mark.parametrize(
    "model,channels,options,paper",
    [
        # Table VII: both splits off / second-level split off / standard
        ("resnet50", 2048, dict(head_split=False, kv_split=False), 39.90),
        ("resnet50", 2048, dict(kv_split=False), 27.61),
        ("resnet50", 2048, {}, 25.56),
        ("resnet18", 512, dict(head_split=False, kv_split=False), 15.28),
        ("resnet18", 512, dict(kv_split=False), 12.21),
        ("resnet18", 512, {}, 11.70),
        # Table VI: N = 8 at r = 1/8 adds the biases of four more blocks
        ("resnet50", 2048, dict(num_heads=8), 25.57),
        # Table VIII / IX: the switches change no parameter
        ("resnet50", 2048, dict(attention="classes"), 25.56),
        ("resnet50", 2048, dict(merge="max"), 25.56),
        # Table X, ResNet18: POCA variants (a)-(f)
        ("resnet18", 512, dict(variant="a"), 11.96),
        ("resnet18", 512, dict(variant="b"), 11.76),
        ("resnet18", 512, dict(variant="c"), 11.70),
        ("resnet18", 512, dict(variant="d"), 15.79),
        ("resnet18", 512, dict(variant="e"), 11.69),
        ("resnet18", 512, dict(variant="f"), 11.73),
    ],
)
def test_ablation_parameter_counts_match_the_paper(backbones, model, channels, options, paper):
    assert _millions(backbones, model, channels, **options) == paper


def test_baselines_and_the_self_attention_head(backbones):
    assert _millions(backbones, "resnet50", 2048, head="gap") == 25.56
    assert _millions(backbones, "resnet18", 512, head="gap") == 11.69
    # Table XI prints 27.04 M; the text (one self-attention layer, GAP, an FC with 512 inputs) read
    # as q/k/v projections 2048 -> 512 gives 27.17 M: see noah.head.self_attention
    assert _millions(backbones, "resnet50", 2048, head="sa") == 27.17


def test_create_model_passes_head_options_through_and_keeps_them_on_reset():
    model = create_model("resnet18", head_options={"variant": "d", "attention": None})
    assert round(count_parameters(model) / 1e6, 2) == 15.79  # Table X (d), built end to end
    model.reset_classifier(10)
    assert model.head.kernel_size == 3 and model.head.num_classes == 10
    assert create_model("resnet18", head="csra", num_classes=20, head_options={"csra_heads": 4}).head.num_heads == 4
