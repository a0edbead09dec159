"""Recipes (SPEC §5): layering, validation, and what each preset builds with timm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from noah.engine.builders import autocast_factory, build_model, build_transform, resolve_data_cfg
from noah.engine.recipes import DEFAULTS, RECIPES, resolve_config
from noah.engine.train import build_criterion, build_optimizer_and_scheduler
from noah.errors import ConfigError


def _lr_at(config: dict, epoch: float, updates_per_epoch: int = 10) -> float:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer, scheduler = build_optimizer_and_scheduler(config, model, updates_per_epoch)
    scheduler.step_update(num_updates=int(epoch * updates_per_epoch))
    return optimizer.param_groups[0]["lr"]


def test_layers_override_in_order(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("recipe: mobilenet\nepochs: 7\nbatch-size: 12\ndata: /somewhere\n")
    config = resolve_config(config_file=yaml_file, overrides={"batch_size": 3})
    assert config["recipe"] == "mobilenet"
    assert config["lr"] == RECIPES["mobilenet"]["lr"]  # recipe over defaults
    assert config["epochs"] == 7  # YAML over recipe
    assert config["batch_size"] == 3  # flags over YAML
    assert config["momentum"] == DEFAULTS["momentum"]
    # an explicit recipe wins over the file's
    assert resolve_config("resnet", yaml_file)["recipe"] == "resnet"


def test_default_is_the_demo_on_builtin_digits() -> None:
    config = resolve_config()
    assert config["recipe"] == "demo" and config["data"] == "digits"
    assert set(config) == set(DEFAULTS) | {"recipe"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"recipe": "nope"}, "unknown recipe"),
        ({"overrides": {"learning_rate": 1}}, "unknown configuration key"),
        ({"overrides": {"head": "max"}}, "head must be one of"),
        ({"overrides": {"epochs": 0}}, "epochs must be"),
        ({"recipe": "resnet"}, "needs a dataset"),
    ],
)
def test_bad_configs_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_config(**kwargs)


def test_bad_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    for name, match in (("list.yaml", "mapping"), ("broken.yaml", "not valid YAML"), ("missing.yaml", "not found")):
        with pytest.raises(ConfigError, match=match):
            resolve_config(config_file=tmp_path / name)


def test_step_schedules() -> None:
    resnet = resolve_config("resnet", overrides={"data": "x"})
    assert _lr_at(resnet, 0) == pytest.approx(0.1)
    assert _lr_at(resnet, 29.9) == pytest.approx(0.1)
    assert _lr_at(resnet, 30) == pytest.approx(0.01)
    assert _lr_at(resnet, 60) == pytest.approx(0.001)
    coco = resolve_config("coco", overrides={"data": "x"})
    assert coco["image_size"] == 448 and coco["freeze_backbone_epochs"] == 2 and coco["task"] == "multilabel"
    assert _lr_at(coco, 4.9) == pytest.approx(0.01) and _lr_at(coco, 5) == pytest.approx(0.001)


def test_cosine_and_linear_schedules() -> None:
    mobilenet = resolve_config("mobilenet", overrides={"data": "x"})
    assert _lr_at(mobilenet, 75) == pytest.approx(0.025, rel=1e-6)  # half way down the cosine
    assert _lr_at(mobilenet, 150) == pytest.approx(0.0, abs=1e-9)
    shufflenet = resolve_config("shufflenet", overrides={"data": "x"})
    for epoch in (0, 60, 120, 180):
        assert _lr_at(shufflenet, epoch) == pytest.approx(0.5 * (1 - epoch / 240))
    aggressive = resolve_config("aggressive", overrides={"data": "x"})
    assert _lr_at(aggressive, 10) == pytest.approx(aggressive["warmup_lr"] + (4e-3 - aggressive["warmup_lr"]) / 2)
    assert _lr_at(aggressive, 20) == pytest.approx(4e-3, rel=1e-3)


def test_weight_decay_on_norm_layers_follows_the_recipe() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    for name, expect_excluded in (("resnet", False), ("shufflenet", True)):
        config = resolve_config(name, overrides={"data": "x"})
        optimizer, _ = build_optimizer_and_scheduler(config, model, 1)
        zero_wd = sum(p.numel() for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"])
        assert (zero_wd == 4 + 4 + 4) == expect_excluded  # conv bias, BN weight, BN bias
        assert optimizer.param_groups[0]["weight_decay"] in (0.0, config["weight_decay"])


@pytest.mark.parametrize("name", ["deit", "mixer", "aggressive"])
def test_strong_augmentation_recipes_build(name: str) -> None:
    config = resolve_config(name, overrides={"data": "x"})
    assert config["opt"] == "adamw" and config["mixup"] > 0 and config["cutmix"] > 0 and config["smoothing"] > 0
    assert "rand" in config["auto_augment"] and config["reprob"] > 0
    model = build_model({**config, "model": "test_vit", "drop_path": 0.1}, 10)
    optimizer, _ = build_optimizer_and_scheduler(config, model, 1)
    assert type(optimizer).__name__ == "AdamW"
    assert type(build_criterion(config, "multiclass", mixup_active=True)).__name__ == "SoftTargetCrossEntropy"
    names = [type(t).__name__ for t in build_transform(config, resolve_data_cfg(config, model), True).transforms]
    assert "RandAugment" in names and "RandomErasing" in names
    assert name != "aggressive" or config["ema"]


def test_coco_transform_keeps_whole_image() -> None:
    from PIL import Image

    config = resolve_config("coco", overrides={"data": "x", "image_size": 64})
    model = build_model({**config, "model": "test_resnet"}, 5)
    tf = build_transform(config, resolve_data_cfg(config, model), True)
    img = Image.new("RGB", (120, 40), (255, 0, 0))
    img.paste((0, 0, 255), (110, 0, 120, 40))  # a blue strip at the right edge must survive
    out = tf(img)
    assert out.shape == (3, 64, 64)
    assert any(type(t).__name__ == "RandomHorizontalFlip" for t in tf.transforms)
    assert (out[2] > out[0]).any()
    assert type(build_criterion(config, "multilabel", False)).__name__ == "BCEWithLogitsLoss"


def test_autocast_choices() -> None:
    ctx, dtype = autocast_factory("auto", torch.device("cpu"))
    assert dtype is None
    ctx, dtype = autocast_factory("bf16", torch.device("cpu"))
    with ctx():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("impl", ["fast", "plain", "lean"])
def test_head_impl_reaches_the_noah_head(impl: str) -> None:
    config = resolve_config("demo", None, {"head_impl": impl})
    model = build_model(config, num_classes=10)
    assert model.head.impl == impl
    gap = build_model(resolve_config("demo", None, {"head": "gap", "head_impl": impl}), num_classes=10)
    assert gap(torch.randn(1, 3, 64, 64)).shape == (1, 10)
