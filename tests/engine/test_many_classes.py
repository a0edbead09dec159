"""iNaturalist-2017 (5,089) and ImageNet-21k (21,841) class counts train through the real loop."""

from __future__ import annotations

import contextlib

import pytest
import torch

import noah
from noah.engine.distributed import DistEnv
from noah.engine.evaluate import evaluate
from noah.engine.recipes import resolve_config
from noah.engine.optim import build_criterion, build_optimizer_and_scheduler
from noah.engine.train import EpochProgress, epoch_stats, train_one_epoch


@pytest.mark.parametrize("num_classes", [5089, 21841])
@pytest.mark.parametrize("head", ["noah", "gap"])
def test_one_training_step_and_evaluation(num_classes: int, head: str) -> None:
    torch.manual_seed(0)
    model = noah.create_model("test_resnet", num_classes=num_classes, head=head)
    config = resolve_config("resnet", overrides={"data": "x", "lr": 0.05, "weight_decay": 0.0})
    images = torch.randn(4, 3, 64, 64)
    target = torch.tensor([0, num_classes - 1, 17, num_classes // 2])
    loader = [(images, target)]
    optimizer, scheduler = build_optimizer_and_scheduler(config, model, updates_per_epoch=1)
    # NOAH's value embedding has one row per (block, class); GAP's linear layer one per class
    classifier = model.head.value if head == "noah" else model.head.fc
    before = classifier.weight.detach().clone()
    model.train()
    progress = EpochProgress()
    updates = train_one_epoch(model, loader, build_criterion(config, "multiclass", False), optimizer, scheduler,
                              epoch=0, num_updates=0, env=DistEnv(), autocast=contextlib.nullcontext, progress=progress)
    stats = epoch_stats(progress, optimizer, DistEnv())
    assert updates == 1 and torch.isfinite(torch.tensor(stats["loss"]))
    after = classifier.weight.detach()
    assert after.shape[0] == (model.head.num_heads if head == "noah" else 1) * num_classes
    assert not torch.equal(before, after)
    with torch.no_grad():  # the step lowered the loss on its batch (train-mode BN: batch statistics)
        assert torch.nn.functional.cross_entropy(model(images), target).item() < stats["loss"]
    metrics = evaluate(model, loader, "multiclass", num_classes, torch.device("cpu"))
    assert metrics["samples"] == 4 and 0 <= metrics["top1"] <= metrics["top5"] <= 100
