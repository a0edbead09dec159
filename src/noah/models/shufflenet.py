"""torchvision's ShuffleNetV2 as a headless backbone (timm has no ShuffleNetV2)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn
from torchvision.models import ShuffleNetV2

__all__ = ["ShuffleNetV2Backbone", "shufflenet_v2_x1_0_backbone"]

_STAGES = ("conv1", "stage2", "stage3", "stage4", "conv5")


class ShuffleNetV2Backbone(ShuffleNetV2):
    """torchvision ShuffleNetV2 without its classifier; parameter names stay torchvision's.

    ``feature_info`` has five levels: ``conv1`` (stride 2), ``stage2``-``stage4`` (8, 16, 32) and
    ``conv5`` (32, the map the head sees).
    """

    def __init__(self, stages_repeats: list[int], stages_out_channels: list[int], in_chans: int = 3) -> None:
        super().__init__(stages_repeats, stages_out_channels)
        del self.fc
        if in_chans != 3:
            self.conv1[0] = nn.Conv2d(in_chans, stages_out_channels[0], 3, 2, 1, bias=False)
        self.num_classes = 0
        self.num_features = self.head_hidden_size = stages_out_channels[-1]
        self.grad_checkpointing = False
        self.feature_info = [
            dict(num_chs=chs, reduction=reduction, module=name)
            for name, chs, reduction in zip(_STAGES, stages_out_channels, (2, 8, 16, 32, 32))
        ]
        self.pretrained_cfg: dict[str, Any] = dict(
            input_size=(in_chans, 224, 224), pool_size=(7, 7), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
            crop_pct=0.875, interpolation="bilinear", num_classes=0, first_conv="conv1.0",
        )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        blocks = r"^stage(\d+)" if coarse else r"^stage(\d+)\.(\d+)"
        return dict(stem=r"^conv1", blocks=[(blocks, None), (r"^conv5", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to ``(B, 1024, H/32, W/32)`` (the ``conv5`` output)."""
        x = self.maxpool(self.conv1(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(nn.Sequential(self.stage2, self.stage3, self.stage4), x)
        else:
            x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The ``feature_info`` levels picked by ``indices`` (``conv1`` before its max-pool), and
        the ``conv5`` map unless ``intermediates_only``. ``norm`` is accepted for timm compatibility."""
        if output_fmt != "NCHW":
            raise ValueError("ShuffleNetV2 gives NCHW features only")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        last = max_index if intermediates_only or stop_early else len(self.feature_info) - 1
        intermediates = []
        for i, stage in enumerate((self.conv1, self.stage2, self.stage3, self.stage4, self.conv5)):
            if i > last:
                break
            x = stage(x)
            if i in take:
                intermediates.append(x)
            if i == 0:
                x = self.maxpool(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Indices into ``feature_info`` that ``forward_intermediates`` takes; nothing is removed."""
        return feature_take_indices(len(self.feature_info), indices)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - the head lives elsewhere
        return self.forward_features(x)


def shufflenet_v2_x1_0_backbone(in_chans: int = 3) -> nn.Module:
    """ShuffleNetV2 x1.0 (torchvision's ``shufflenet_v2_x1_0``) without classifier."""
    return ShuffleNetV2Backbone([4, 8, 4], [24, 116, 232, 464, 1024], in_chans=in_chans)
