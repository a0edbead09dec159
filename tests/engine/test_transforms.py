"""Training and evaluation transforms of the recipes (timm's create_transform)."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from noah.engine.model import build_model
from noah.engine.recipes import resolve_config
from noah.engine.transforms import build_transform, resolve_data_cfg


@pytest.mark.parametrize("name", ["deit", "mixer", "aggressive"])
def test_strong_augmentation_recipes_build(name: str) -> None:
    config = resolve_config(name, overrides={"data": "x", "model": "test_vit", "drop_path": 0.1})
    assert config.opt == "adamw" and config.mixup > 0 and config.cutmix > 0 and config.smoothing > 0
    assert "rand" in config.auto_augment and config.reprob > 0
    model = build_model(config, 10)
    names = [type(t).__name__ for t in build_transform(config, resolve_data_cfg(config, model), True).transforms]
    assert "RandAugment" in names and "RandomErasing" in names
    assert name != "aggressive" or config.ema


def test_coco_transform_keeps_whole_image() -> None:
    config = resolve_config("coco", overrides={"data": "x", "image_size": 64, "model": "test_resnet"})
    model = build_model(config, 5)
    tf = build_transform(config, resolve_data_cfg(config, model), True)
    img = Image.new("RGB", (120, 40), (255, 0, 0))
    img.paste((0, 0, 255), (110, 0, 120, 40))  # a blue strip at the right edge must survive
    out = tf(img)
    assert out.shape == (3, 64, 64)
    assert any(type(t).__name__ == "RandomHorizontalFlip" for t in tf.transforms)
    assert (out[2] > out[0]).any()


def test_eval_transform_uses_the_config_size_and_crop() -> None:
    config = dataclasses.replace(resolve_config(), image_size=48, crop_pct=0.5)
    model = build_model(config, 3)
    data_cfg = resolve_data_cfg(config, model)
    assert data_cfg["input_size"] == (3, 48, 48) and data_cfg["crop_pct"] == 0.5
    assert build_transform(config, data_cfg, False)(Image.new("RGB", (100, 80))).shape == (3, 48, 48)
