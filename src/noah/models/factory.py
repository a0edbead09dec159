"""``create_model``: any timm backbone, or one of the paper's models, with a NOAH or GAP head."""

from __future__ import annotations

import os
from typing import Any, Mapping

import timm
from torch import nn

from noah.errors import ConfigError
from noah.models.adapter import HEAD_TYPES, NOAHModel
from noah.models.settings import BACKBONE_SETTINGS, backbone_facts, require_known_model
from noah.models.zoo import PAPER_MODELS, BackboneSpec, PaperModel, get_paper_model

__all__ = ["create_model", "list_models", "get_paper_model", "DEFAULT_PRESET"]

#: NOAH settings for backbones outside the paper's table (ResNet18's, the paper's middle ground).
DEFAULT_PRESET = {"num_heads": 4, "key_ratio": 0.5, "head_dropout": 0.0}


def list_models(pattern: str = "") -> list[PaperModel]:
    """The paper's models (SPEC §4) whose name contains ``pattern``, in the paper's order."""
    return [m for m in PAPER_MODELS.values() if pattern in m.name]


def _timm_backbone(name: str, pretrained: bool | str, **kwargs: Any) -> BackboneSpec:
    """A headless timm model whose ``forward_head(pre_logits=True)`` keeps positions apart."""
    extra: dict[str, Any] = {}
    if isinstance(pretrained, (str, os.PathLike)):
        if not os.path.isfile(pretrained):
            raise ConfigError(f"pretrained weights file not found: {pretrained}")
        extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": os.fspath(pretrained)}}
    elif pretrained:
        extra = {"pretrained": True}
    try:
        model = timm.create_model(name, num_classes=0, global_pool="", **extra, **kwargs)
        return BackboneSpec(model, getattr(model, "head_hidden_size", model.num_features), use_backbone_head=True)
    except (TypeError, AssertionError, ValueError):
        # Some models have no un-pooled head mode; their forward_features is then the input.
        model = timm.create_model(name, num_classes=0, **extra, **kwargs)
        return BackboneSpec(model, model.num_features, use_backbone_head=False)


def _check_backbone_settings(name: str, kwargs: dict[str, Any]) -> None:
    """:class:`ConfigError` for a setting of :data:`BACKBONE_SETTINGS` that ``name``'s backbone
    does not take (it would be refused or, worse, silently ignored)."""
    given = [k for k in BACKBONE_SETTINGS if kwargs.get(k) is not None]
    if not given:
        return
    facts = backbone_facts(name)
    refused = [k for k in given if not facts.takes(k)]
    if refused:
        setting = refused[0]
        raise ConfigError(
            f"model {name} cannot take {setting}={kwargs[setting]!r}: its backbone ({facts.class_name}) has no "
            f"{setting} setting"
        )


def create_model(
    name: str,
    num_classes: int = 1000,
    head: str = "noah",
    num_heads: int | None = None,
    key_ratio: float | None = None,
    head_dropout: float | None = None,
    pretrained: bool | str = False,
    head_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> NOAHModel:
    """Build ``name`` with a NOAH (``head="noah"``), GAP + linear (``head="gap"``) or another head
    of :data:`HEAD_TYPES` (``"sa"``, ``"csra"``).

    ``name`` is one of the paper's models (``noah.list_models()``, optionally prefixed
    ``noah_``) or any timm model name. The paper's ``(N, r, dropout)`` are the defaults for its
    models, ``DEFAULT_PRESET`` for the rest; any can be overridden. ``pretrained`` is ``False``,
    ``True`` (timm's weights, for timm backbones; needs them in the local hub cache) or the path of
    a local file: backbone weights for timm models, an official NOAH checkpoint for paper models.
    ``head_options`` are the head type's own options (e.g. ``{"kv_split": False}``,
    ``{"variant": "d"}``; :func:`noah.head.head_options`). Remaining ``kwargs`` go to the backbone's
    constructor (e.g. ``drop_path_rate``, ``img_size``).

    The model maps ``(B, 3, H, W)`` images to ``(B, num_classes)`` logits.
    """
    if head not in HEAD_TYPES:
        raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_TYPES)}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    paper = require_known_model(name)
    _check_backbone_settings(name, kwargs)
    if paper is not None:
        preset = paper.preset()
        spec = paper.build_backbone(**kwargs)
    else:
        preset = dict(DEFAULT_PRESET)
        spec = _timm_backbone(name, pretrained, **kwargs)
    for key, value in (("num_heads", num_heads), ("key_ratio", key_ratio), ("head_dropout", head_dropout)):
        if value is not None:
            preset[key] = value
    model = NOAHModel(
        spec.module,
        spec.num_features,
        num_classes=num_classes,
        head=head,
        use_backbone_head=spec.use_backbone_head,
        pretrained_cfg={**getattr(spec.module, "pretrained_cfg", {}), "num_classes": num_classes, "architecture": name},
        head_options=head_options,
        **preset,
    )
    if paper is not None and pretrained:
        if pretrained is True:
            raise ConfigError(
                f"no download source for {name}'s weights: pass pretrained=PATH to a local official checkpoint"
            )
        from noah.models.official import load_official_checkpoint

        load_official_checkpoint(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())
