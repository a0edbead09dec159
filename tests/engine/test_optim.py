"""Loss, optimizer and schedules of the recipes, built with timm."""

from __future__ import annotations

import pytest
from torch import nn

from noah.engine.config import TrainConfig
from noah.engine.optim import build_criterion, build_optimizer_and_scheduler
from noah.engine.recipes import resolve_config


def _lr_at(config: TrainConfig, epoch: float, updates_per_epoch: int = 10) -> float:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer, scheduler = build_optimizer_and_scheduler(config, model, updates_per_epoch)
    scheduler.step_update(num_updates=int(epoch * updates_per_epoch))
    return optimizer.param_groups[0]["lr"]


def test_step_schedules() -> None:
    resnet = resolve_config("resnet", overrides={"data": "x"})
    assert _lr_at(resnet, 0) == pytest.approx(0.1)
    assert _lr_at(resnet, 29.9) == pytest.approx(0.1)
    assert _lr_at(resnet, 30) == pytest.approx(0.01)
    assert _lr_at(resnet, 60) == pytest.approx(0.001)
    coco = resolve_config("coco", overrides={"data": "x"})
    assert coco.image_size == 448 and coco.freeze_backbone_epochs == 2 and coco.task == "multilabel"
    assert _lr_at(coco, 4.9) == pytest.approx(0.01) and _lr_at(coco, 5) == pytest.approx(0.001)


def test_cosine_and_linear_schedules() -> None:
    mobilenet = resolve_config("mobilenet", overrides={"data": "x"})
    assert _lr_at(mobilenet, 75) == pytest.approx(0.025, rel=1e-6)  # half way down the cosine
    assert _lr_at(mobilenet, 150) == pytest.approx(0.0, abs=1e-9)
    shufflenet = resolve_config("shufflenet", overrides={"data": "x"})
    for epoch in (0, 60, 120, 180):
        assert _lr_at(shufflenet, epoch) == pytest.approx(0.5 * (1 - epoch / 240))
    aggressive = resolve_config("aggressive", overrides={"data": "x"})
    assert _lr_at(aggressive, 10) == pytest.approx(aggressive.warmup_lr + (4e-3 - aggressive.warmup_lr) / 2)
    assert _lr_at(aggressive, 20) == pytest.approx(4e-3, rel=1e-3)


def test_weight_decay_on_norm_layers_follows_the_recipe() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    for name, expect_excluded in (("resnet", False), ("shufflenet", True)):
        config = resolve_config(name, overrides={"data": "x"})
        optimizer, _ = build_optimizer_and_scheduler(config, model, 1)
        zero_wd = sum(p.numel() for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"])
        assert (zero_wd == 4 + 4 + 4) == expect_excluded  # conv bias, BN weight, BN bias
        assert optimizer.param_groups[0]["weight_decay"] in (0.0, config.weight_decay)


def test_criteria() -> None:
    deit = resolve_config("deit", overrides={"data": "x"})
    assert type(build_criterion(deit, "multiclass", mixup_active=True)).__name__ == "SoftTargetCrossEntropy"
    assert type(build_criterion(deit, "multiclass", mixup_active=False)).__name__ == "LabelSmoothingCrossEntropy"
    assert type(build_criterion(deit, "multilabel", mixup_active=True)).__name__ == "BCEWithLogitsLoss"
    assert type(build_criterion(TrainConfig(), "multiclass", False)).__name__ == "CrossEntropyLoss"
