"""Loss, optimizer and learning-rate schedule of a training config (timm's)."""

from __future__ import annotations

from typing import Any

from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from noah.engine.config import TrainConfig

__all__ = ["build_criterion", "build_optimizer_and_scheduler"]


def build_criterion(config: TrainConfig, task: str, mixup_active: bool) -> nn.Module:
    """Training loss: BCE-with-logits (multi-label), soft-target CE (Mixup/CutMix), label-smoothing
    CE, or plain CE."""
    if task == "multilabel":
        return nn.BCEWithLogitsLoss()
    if mixup_active:
        return SoftTargetCrossEntropy()
    if config.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.smoothing)
    return nn.CrossEntropyLoss()


def build_optimizer_and_scheduler(config: TrainConfig, model: nn.Module, updates_per_epoch: int) -> tuple[Any, Any]:
    """timm optimizer and a per-update timm scheduler for the config's recipe.

    Call before freezing anything: timm leaves parameters without ``requires_grad`` out of the
    optimizer's groups. The scheduler is stepped with ``step_update(num_updates)`` after every
    optimizer step, so warm-up and decay are smooth within epochs.
    """
    optimizer = create_optimizer_v2(model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay,
                                    momentum=config.momentum, filter_bias_and_bn=not config.bn_wd)
    # linear warm-up first, then the schedule over the remaining epochs (ends at min_lr on time)
    warmup = config.warmup_epochs
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=max(config.epochs - warmup, 1), warmup_prefix=True,
        decay_epochs=config.decay_epochs, decay_rate=config.decay_rate, decay_milestones=list(config.decay_milestones),
        min_lr=config.min_lr, warmup_lr=config.warmup_lr, warmup_epochs=warmup, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler
