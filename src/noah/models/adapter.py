"""Put a classification head (NOAH or GAP + linear) on any backbone, timm style.

:class:`NOAHModel` owns a headless ``backbone`` and a ``head``. It brings whatever the backbone's
features look like -- NCHW maps, NHWC maps, or token sequences with class / distillation /
register tokens -- to one ``(B, C, H, W)`` feature map, which both heads consume, so a NOAH model
and its GAP baseline differ only in the head.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from timm.layers import ClassifierHead
from torch import nn

from noah.errors import ConfigError, ShapeError
from noah.head import NOAHHead, NOAHOutput, build_head, head_types

__all__ = ["NOAHModel", "HEAD_TYPES"]

#: the heads a model can have (noah.head's registered head types: noah, gap, sa, csra)
HEAD_TYPES = head_types()


def _grid_for_tokens(backbone: nn.Module, num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(H, W)`` patch grid behind ``num_tokens`` patch tokens of an ``image_size`` input."""
    patch_embed = getattr(backbone, "patch_embed", None) or getattr(backbone, "stem", None)
    candidates: list[tuple[int, int]] = []
    if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
        candidates.append(tuple(patch_embed.dynamic_feat_size(image_size)))
    feature_info = getattr(backbone, "feature_info", None)
    if feature_info:
        info = feature_info[-1] if isinstance(feature_info, (list, tuple)) else None
        reduction = info.get("reduction") if isinstance(info, dict) else None
        if reduction:
            candidates.append((image_size[0] // reduction, image_size[1] // reduction))
            candidates.append((math.ceil(image_size[0] / reduction), math.ceil(image_size[1] / reduction)))
    side = math.isqrt(num_tokens)
    candidates.append((side, side))
    for h, w in candidates:
        if h * w == num_tokens:
            return h, w
    raise ShapeError(
        f"cannot lay {num_tokens} patch tokens of a {image_size[0]}x{image_size[1]} input out on a grid; "
        "expected the patch grid of the backbone's patch embedding"
    )


class NOAHModel(nn.Module):
    """A backbone plus a NOAH (``head="noah"``) or GAP + linear (``head="gap"``) head.

    Behaves like a timm model: ``forward_features`` gives the ``(B, C, H, W)`` map the head sees,
    ``forward_head`` turns it into ``(B, num_classes)`` logits, ``reset_classifier`` swaps the head
    for a new class count, and ``pretrained_cfg`` feeds ``timm.data.resolve_data_config``.

    Args:
        backbone: a module with ``forward_features``; timm models built with ``num_classes=0,
            global_pool=''``, whose ``forward_head(pre_logits=True)`` then only applies the
            per-position layers of the original head (see ``use_backbone_head``).
        num_features: channels of the per-position features.
        num_classes: number of classes (0 makes ``forward`` return the feature map).
        head: ``"noah"``, ``"gap"`` or another of :data:`HEAD_TYPES` (:func:`noah.head.build_head`).
        num_heads, key_ratio: the NOAH head's ``N`` and ``r`` (ignored for ``"gap"``).
        head_options: the head type's own options (NOAH's ablation switches and ``variant``, ...;
            :func:`noah.head.head_options`); ``None`` values mean the head's default.
        head_dropout: dropout on the value maps (NOAH) or before the linear layer (GAP).
        use_backbone_head: call ``backbone.forward_head(x, pre_logits=True)`` after
            ``forward_features`` -- this applies layers such as MobileNetV3's 1x1 conv head or
            ConvNeXt's norm per position, since they sit between the features and the classifier.
        num_prefix_tokens: leading class / distillation / register tokens to drop from token
            outputs; defaults to the backbone's own ``num_prefix_tokens``.
        pretrained_cfg: timm-style data config (input size, mean, std, crop).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int = 1000,
        head: str = "noah",
        num_heads: int = 4,
        key_ratio: float = 0.5,
        head_dropout: float = 0.0,
        use_backbone_head: bool = False,
        num_prefix_tokens: int | None = None,
        pretrained_cfg: dict[str, Any] | None = None,
        head_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head not in HEAD_TYPES:
            raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_TYPES)}")
        self.head_options = {k: v for k, v in (head_options or {}).items() if v is not None}
        self.backbone = backbone
        self.num_features = self.head_hidden_size = num_features
        self.head_type = head
        self.num_heads = num_heads
        self.key_ratio = key_ratio
        self.head_dropout = head_dropout
        self.use_backbone_head = use_backbone_head
        self.num_prefix_tokens = (
            num_prefix_tokens if num_prefix_tokens is not None else int(getattr(backbone, "num_prefix_tokens", 0) or 0)
        )
        self.pretrained_cfg = dict(pretrained_cfg or {})
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    # timm looks these up under both names
    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return build_head(self.head_type, self.num_features, num_classes, num_heads=self.num_heads,
                          key_ratio=self.key_ratio, dropout=self.head_dropout, **self.head_options)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes.

        ``global_pool`` is accepted for timm compatibility and must be ``None``, ``""`` or
        ``"avg"``: NOAH does its own spatial aggregation.
        """
        if global_pool not in (None, "", "avg"):
            raise ConfigError(f"global_pool={global_pool!r} is not supported; NOAHModel heads pool by themselves")
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head.fc if isinstance(self.head, ClassifierHead) else self.head

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{name}" for name in inner()} if callable(inner) else set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        inner = getattr(self.backbone, "set_grad_checkpointing", None)
        if callable(inner):
            inner(enable)

    def to_feature_map(self, features: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Bring backbone output to ``(B, C, H, W)``: NCHW as is, NHWC permuted, tokens
        ``(B, T, C)`` stripped of prefix tokens and laid out on the patch grid."""
        c = self.num_features
        if features.dim() == 4:
            if features.shape[1] == c and getattr(self.backbone, "output_fmt", "NCHW") != "NHWC":
                return features
            if features.shape[-1] == c:
                return features.permute(0, 3, 1, 2)
        elif features.dim() == 3 and features.shape[-1] == c:
            tokens = features[:, self.num_prefix_tokens :]
            h, w = _grid_for_tokens(self.backbone, tokens.shape[1], image_size)
            return tokens.transpose(1, 2).reshape(tokens.shape[0], c, h, w)
        raise ShapeError(
            f"the backbone returned features of shape {tuple(features.shape)}; expected per-position "
            f"features with {c} channels as (B, C, H, W), (B, H, W, C) or tokens (B, T, C)"
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to the feature map ``(B, C, h, w)`` that the head consumes."""
        features = self.backbone.forward_features(x)
        if self.use_backbone_head:
            features = self.backbone.forward_head(features, pre_logits=True)
        return self.to_feature_map(features, (x.shape[-2], x.shape[-1]))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False, return_maps: bool = False):
        """Feature map ``(B, C, h, w)`` to logits ``(B, num_classes)``.

        ``pre_logits=True`` returns what enters the final classifier: the pooled ``(B, C)``
        vector for ``"gap"``, and the feature map itself for ``"noah"`` (NOAH has no pooled
        vector; the whole head is the classifier). ``return_maps=True`` (NOAH only) returns a
        :class:`~noah.head.NOAHOutput` with the attention and value maps.
        """
        if return_maps:
            if not isinstance(self.head, NOAHHead):
                raise ConfigError("return_maps=True needs a model built with head='noah'")
            return self.head(x, return_maps=True)
        if pre_logits:
            return self.head(x, pre_logits=True) if isinstance(self.head, ClassifierHead) else x
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_maps(self, x: torch.Tensor) -> NOAHOutput:
        """Logits plus the per-block attention and value maps ``(B, N, M, h, w)`` in one pass."""
        return self.forward_head(self.forward_features(x), return_maps=True)
