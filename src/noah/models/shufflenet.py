"""torchvision's ShuffleNetV2 as a headless backbone (timm has no ShuffleNetV2)."""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models import ShuffleNetV2

__all__ = ["ShuffleNetV2Backbone", "shufflenet_v2_x1_0_backbone"]


class ShuffleNetV2Backbone(ShuffleNetV2):
    """torchvision ShuffleNetV2 without its classifier; parameter names stay torchvision's."""

    def __init__(self, stages_repeats: list[int], stages_out_channels: list[int]) -> None:
        super().__init__(stages_repeats, stages_out_channels)
        del self.fc
        self.num_features = self.head_hidden_size = stages_out_channels[-1]
        self.pretrained_cfg = dict(
            input_size=(3, 224, 224), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
            crop_pct=0.875, interpolation="bilinear", num_classes=1000, first_conv="conv1.0",
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to ``(B, 1024, H/32, W/32)`` (the ``conv5`` output)."""
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - the head lives elsewhere
        return self.forward_features(x)


def shufflenet_v2_x1_0_backbone(**kwargs) -> nn.Module:
    """ShuffleNetV2 x1.0 (torchvision's ``shufflenet_v2_x1_0``) without classifier."""
    if kwargs:
        raise TypeError(f"shufflenetv2_100 takes no backbone arguments, got {sorted(kwargs)}")
    return ShuffleNetV2Backbone([4, 8, 4], [24, 116, 232, 464, 1024])
