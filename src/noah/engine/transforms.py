"""Image transforms for training and evaluation, built with timm from the config and the model."""

from __future__ import annotations

from typing import Any, Callable

import timm.data
import torch
from torchvision import transforms as T

from noah.engine.config import TrainConfig

__all__ = ["resolve_data_cfg", "build_transform"]


def resolve_data_cfg(config: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    """timm's data config for ``model`` (mean, std, interpolation), with the config's input size."""
    data_cfg = timm.data.resolve_data_config(model=model)
    if config.image_size:
        data_cfg["input_size"] = (3, config.image_size, config.image_width or config.image_size)
    data_cfg["crop_pct"] = float(config.crop_pct or data_cfg.get("crop_pct") or 0.875)
    return data_cfg


def build_transform(config: TrainConfig, data_cfg: dict[str, Any], training: bool) -> Callable:
    """PIL image -> normalised ``(3, H, W)`` tensor, for training (augmented) or evaluation."""
    common = dict(
        input_size=data_cfg["input_size"],
        interpolation=data_cfg.get("interpolation", "bilinear"),
        mean=data_cfg["mean"],
        std=data_cfg["std"],
    )
    squash = config.train_crop == "squash"
    if not training:
        return timm.data.create_transform(
            **common, is_training=False, crop_pct=data_cfg["crop_pct"], crop_mode="squash" if squash else "center"
        )
    if squash:
        # Multi-label (COCO) fine-tuning: the whole image resized to the square input, then flips;
        # a random crop could cut away the objects that make up the labels.
        resize = timm.data.create_transform(**common, is_training=False, crop_pct=1.0, crop_mode="squash")
        steps = list(resize.transforms)
        return T.Compose(steps[:-2] + [T.RandomHorizontalFlip(config.hflip)] + steps[-2:])
    return timm.data.create_transform(
        **common,
        is_training=True,
        scale=tuple(config.scale),
        hflip=config.hflip,
        color_jitter=config.color_jitter,
        auto_augment=config.auto_augment,
        re_prob=config.reprob,
        re_mode="pixel",
    )
