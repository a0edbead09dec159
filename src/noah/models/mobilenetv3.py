"""MobileNetV3-Small as the NOAH paper's project page trains it (timm's variant is a different model).

The paper's MobileNetV3-Small differs from timm's ``mobilenetv3_small_100`` in ways that change
both the numbers and the parameter count (2.94 M with GAP + linear, against timm's 2.54 M):

* every block, the first included, has a 1x1 expansion conv (timm's first block has none);
* squeeze-excitation sits between the depthwise conv's BatchNorm and its activation, as two
  bias-free linear layers to ``C/4`` channels, ReLU and hard-sigmoid;
* the last 96-channel block is followed by a 1x1 conv to 576 channels (BN, hard-swish) and a
  1x1 conv with bias to 1280 channels (hard-swish), which here runs at every position.

Module names follow the layout of the released checkpoints (``features.N...``), so their keys
load as they are. ``forward_features`` returns the ``(B, 1280, H/32, W/32)`` map.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["MobileNetV3Small", "SMALL_BLOCKS"]

#: (kernel, expansion channels, output channels, squeeze-excitation, activation, stride) per block
SMALL_BLOCKS = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)

_ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def _conv_bn_act(in_chs: int, out_chs: int, kernel: int, stride: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel, stride, (kernel - 1) // 2, bias=False), nn.BatchNorm2d(out_chs), act()
    )


class SqueezeExcite(nn.Module):
    """Channel gates from the spatial mean: ``x * hardsigmoid(W2 relu(W1 mean(x)))``, ``W1``: C -> C/4."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // 4, bias=False), nn.ReLU(),
            nn.Linear(channels // 4, channels, bias=False), nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.fc(x.mean(dim=(2, 3)))
        return x * gates[:, :, None, None]


class Bottleneck(nn.Module):
    """1x1 expansion, depthwise ``kernel`` conv (stride), optional SE, 1x1 projection; residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, mid_chs: int, se: bool, act: str) -> None:
        super().__init__()
        act_layer = _ACTIVATIONS[act]
        self.use_residual = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, bias=False), nn.BatchNorm2d(mid_chs), act_layer(),
            nn.Conv2d(mid_chs, mid_chs, kernel, stride, (kernel - 1) // 2, groups=mid_chs, bias=False),
            nn.BatchNorm2d(mid_chs),
            SqueezeExcite(mid_chs) if se else nn.Identity(),
            act_layer(),
            nn.Conv2d(mid_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV3Small(nn.Module):
    """The paper's MobileNetV3-Small without classifier: a backbone for :class:`NOAHModel`.

    ``features`` holds the stem (0), the eleven blocks (1-11), the 576-channel 1x1 conv (12),
    the 1280-channel 1x1 conv with bias (13) and its hard-swish (14).
    """

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = 0
        self.num_features = self.head_hidden_size = 1280
        self.grad_checkpointing = False
        layers: list[nn.Module] = [_conv_bn_act(in_chans, 16, 3, 2, nn.Hardswish)]
        self.feature_info = [dict(num_chs=16, reduction=2, module="features.0")]
        in_chs, reduction = 16, 2
        for i, (kernel, mid, out, se, act, stride) in enumerate(SMALL_BLOCKS, start=1):
            layers.append(Bottleneck(in_chs, out, kernel, stride, mid, se, act))
            reduction *= stride
            next_stride = SMALL_BLOCKS[i][5] if i < len(SMALL_BLOCKS) else 2
            if next_stride == 2:  # the last block at this resolution
                self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"features.{i}"))
            in_chs = out
        layers += [
            _conv_bn_act(in_chs, 576, 1, 1, nn.Hardswish),
            nn.Conv2d(576, self.num_features, 1, bias=True),
            nn.Hardswish(),
        ]
        # the last pyramid level is the 576-channel conv, as in timm's MobileNetV3
        self.feature_info[-1] = dict(num_chs=576, reduction=reduction, module="features.12")
        self.features = nn.Sequential(*layers)
        self.pretrained_cfg: dict[str, Any] = dict(
            input_size=(in_chans, 224, 224), pool_size=(7, 7), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
            crop_pct=0.875, interpolation="bilinear", num_classes=0, first_conv="features.0.0",
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """The official initialisation: Kaiming-normal (fan_out) convs, unit BN, N(0, 0.01) linears."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^features\.0\.", blocks=[(r"^features\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The ``feature_info`` levels picked by ``indices`` (NCHW), and the final map unless
        ``intermediates_only``. ``norm`` and ``stop_early`` are accepted for timm compatibility."""
        if output_fmt != "NCHW":
            raise ValueError("MobileNetV3Small gives NCHW features only")
        take, _ = feature_take_indices(len(self.feature_info), indices)
        wanted = {int(self.feature_info[i]["module"].split(".")[1]) for i in take}
        last = max(wanted) if intermediates_only or stop_early else len(self.features) - 1
        intermediates = []
        for i, layer in enumerate(self.features):
            if i > last:
                break
            x = layer(x)
            if i in wanted:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Indices into ``feature_info`` that ``forward_intermediates`` takes; nothing is removed
        (the layers after the last taken level only run when the final map is asked for)."""
        return feature_take_indices(len(self.feature_info), indices)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to ``(B, 1280, H/32, W/32)``."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
