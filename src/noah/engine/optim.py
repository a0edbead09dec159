"""Loss, optimizer and learning-rate schedule of a training config (timm's)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from noah.engine.config import TrainConfig
from noah.targets import IGNORE_TARGET

__all__ = ["MultiLabelLoss", "build_criterion", "build_eval_criterion", "build_optimizer_and_scheduler"]


class MultiLabelLoss(nn.Module):
    """BCE-with-logits averaged over the (image, class) pairs whose target is not
    :data:`~noah.targets.IGNORE_TARGET` (Pascal VOC's "difficult"-only pairs, which the field
    leaves out); with no such pair it is ``nn.BCEWithLogitsLoss()``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_TARGET
        if bool(valid.all()):
            return F.binary_cross_entropy_with_logits(logits, target)
        loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), reduction="none")
        return (loss * valid).sum() / valid.sum().clamp(min=1)


def build_eval_criterion(task: str) -> nn.Module:
    """Validation loss: :class:`MultiLabelLoss` (multi-label) or cross-entropy (multi-class; re-ID
    trains as identity classification)."""
    return MultiLabelLoss() if task == "multilabel" else nn.CrossEntropyLoss()


def build_criterion(config: TrainConfig, task: str, mixup_active: bool) -> nn.Module:
    """Training loss: :class:`MultiLabelLoss` (multi-label), soft-target CE (Mixup/CutMix),
    label-smoothing CE, or plain CE."""
    if task == "multilabel":
        return MultiLabelLoss()
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
    extra = {"amsgrad": True} if config.amsgrad else {}
    optimizer = create_optimizer_v2(model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay,
                                    momentum=config.momentum, filter_bias_and_bn=not config.bn_wd, **extra)
    # linear warm-up first, then the schedule over the remaining epochs (ends at min_lr on time)
    warmup = config.warmup_epochs
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=max(config.epochs - warmup, 1), warmup_prefix=True,
        decay_epochs=config.decay_epochs, decay_rate=config.decay_rate, decay_milestones=list(config.decay_milestones),
        min_lr=config.min_lr, warmup_lr=config.warmup_lr, warmup_epochs=warmup, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler
