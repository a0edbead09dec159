"""``create_model``: any timm backbone, or one of the paper's models, with a NOAH or GAP head."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import timm
from timm.models import FeatureGraphNet, FeatureHookNet
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import FeatureGetterNet
from torch import nn

from noah.errors import ConfigError
from noah.models.adapter import HEAD_TYPES, NOAHModel, token_stride
from noah.models.folder import DATA_KEYS, read_config
from noah.models.official import LoadReport, load_state, read_state_dict
from noah.models.settings import BACKBONE_SETTINGS, backbone_facts, require_known_model
from noah.models.zoo import PAPER_MODELS, BackboneSpec, PaperModel, get_paper_model

__all__ = ["create_model", "list_models", "get_paper_model", "feature_pyramid", "DEFAULT_PRESET"]

#: NOAH settings for backbones outside the paper's table (ResNet18's, the paper's middle ground).
DEFAULT_PRESET = {"num_heads": 4, "key_ratio": 0.5, "head_dropout": 0.0}

_HEAD_OPTIONS = ("num_heads", "key_ratio", "head_dropout")
#: pretrained_cfg entries that locate a backbone's own weights; a NOAH model does not inherit them
_WEIGHT_SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "tag", "custom_load")
#: timm's feature extractors that work on a NOAHModel (its backbone is not one flat sequence)
_FEATURE_CLASSES = {"getter": FeatureGetterNet, "hook": FeatureHookNet, "fx": FeatureGraphNet}


def list_models(pattern: str = "") -> list[PaperModel]:
    """The paper's models whose name contains ``pattern``, in the paper's order (SPEC §4 plus
    MobileNetV3-Small from the project page)."""
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


def _backbone_cfg(backbone: nn.Module, name: str, head: str, num_classes: int) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a NOAH model on a timm backbone: the backbone's data settings,
    ``first_conv``/``classifier`` naming this model's parameters, ``pool_size`` of its feature map."""
    cfg = {k: v for k, v in (getattr(backbone, "pretrained_cfg", None) or {}).items() if k not in _WEIGHT_SOURCE_KEYS}
    first_conv = cfg.get("first_conv")
    if isinstance(first_conv, str) and first_conv:
        cfg["first_conv"] = f"backbone.{first_conv}"
    elif isinstance(first_conv, (list, tuple)):
        cfg["first_conv"] = tuple(f"backbone.{c}" for c in first_conv)
    stride = token_stride(backbone)[0]
    if not cfg.get("pool_size") and stride and cfg.get("input_size"):
        size = cfg["input_size"]
        cfg["pool_size"] = (math.ceil(size[1] / stride), math.ceil(size[2] / stride))
    cfg.update(
        architecture=name, num_classes=num_classes,
        classifier=("head.query", "head.value") if head == "noah" else "head.fc",
    )
    return cfg


def feature_pyramid(
    model: NOAHModel, out_indices: tuple[int, ...] | int | None = None, feature_cls: str = "getter", **feature_cfg: Any
) -> nn.Module:
    """timm's ``features_only`` model for ``model``: its backbone's feature pyramid, no head.

    ``out_indices`` picks levels of ``model.feature_info`` (default: all of a CNN-like pyramid of
    up to 5 levels, else the last 3, as timm does); ``feature_cls`` is ``"getter"`` (through
    ``forward_intermediates``), ``"hook"`` or ``"fx"``. Calling the result on ``(B, 3, H, W)``
    images gives one ``(B, C_i, H / r_i, W / r_i)`` map per level.
    """
    cls = _FEATURE_CLASSES.get(feature_cls) if isinstance(feature_cls, str) else feature_cls
    if cls is None:
        raise ConfigError(f"feature_cls={feature_cls!r} is not supported for NOAH models; expected one of {', '.join(_FEATURE_CLASSES)}")
    levels = len(model.feature_info)
    if not levels:
        raise ConfigError(f"{type(model.backbone).__name__} describes no feature pyramid (feature_info)")
    if out_indices is None:
        out_indices = tuple(range(levels)) if levels <= 5 else 3
    features = cls(model, out_indices=out_indices, **feature_cfg)
    features.pretrained_cfg = features.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return features


def _from_folder(folder: str, name: str | None, options: dict[str, Any], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fill ``options`` (head, classes, head settings) and backbone ``kwargs`` from a saved
    folder's ``config.json`` wherever the caller left them unset; returns the model name."""
    config = read_config(folder)
    architecture = config["architecture"]
    if name is not None and name.removeprefix("noah_") != architecture.removeprefix("noah_"):
        raise ConfigError(f"{folder} holds a {architecture} model, not {name}")
    args = dict(config.get("model_args", {}))
    for key in ("head", *_HEAD_OPTIONS, "pre_logits_size", "embed_dim", "head_options"):
        if options.get(key) is None and key in args:
            options[key] = args[key]
        args.pop(key, None)
    if options.get("num_classes") is None:
        options["num_classes"] = config.get("num_classes", 1000)
    if options.get("global_pool") is None:
        options["global_pool"] = config.get("global_pool")
    for key, value in args.items():
        kwargs.setdefault(key, value)
    return name or architecture, config


def create_model(
    name: str | None = None,
    num_classes: int | None = None,
    head: str | None = None,
    num_heads: int | None = None,
    key_ratio: float | None = None,
    head_dropout: float | None = None,
    pretrained: bool | str = False,
    global_pool: str | None = None,
    pre_logits_size: int | None = None,
    embed_dim: int | None = None,
    head_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name`` with a NOAH (``head="noah"``, default), GAP + linear (``head="gap"``) or
    another head of :data:`HEAD_TYPES` (``"sa"``, ``"csra"``).

    ``name`` is one of the paper's models (``noah.list_models()``, optionally prefixed
    ``noah_``) or any timm model name. The paper's ``(N, r, dropout)`` are the defaults for its
    models, ``DEFAULT_PRESET`` for the rest; any can be overridden. ``num_classes`` defaults to
    1000 (0: no head, the model returns pooled features). ``pretrained`` is:

    * ``False``, or ``True`` (timm's weights for timm backbones; needs them in the local cache);
    * the path of a folder written by :func:`noah.models.folder.save_pretrained` -- its
      ``config.json`` supplies the name, classes and head settings left unset here;
    * the path of a file: an official NOAH checkpoint (or this project's weights) for paper
      models, mapped from the official layout of its family (see :mod:`noah.models.official`;
      a DeiT checkpoint with the official pre-logits layer gets one), or backbone weights for
      timm backbones.

    Weights for another class count load all but the head, which stays freshly initialised.
    ``features_only=True`` (with ``out_indices``, ``feature_cls``) returns the backbone's feature
    pyramid instead (:func:`feature_pyramid`), after any weights are loaded.
    What loading did is in ``model.load_report``. ``global_pool`` sets how pre-logits features
    are pooled (``""``: not at all), ``pre_logits_size`` adds the official narrow-DeiT layer,
    ``embed_dim`` a per-position linear embedding before the head (re-ID's 512-d feature, see
    :meth:`NOAHModel.forward_embedding`).
    ``head_options`` are the head type's own options (e.g. ``{"kv_split": False}``,
    ``{"variant": "d"}``; :func:`noah.head.head_options`). Remaining ``kwargs`` go to the backbone's
    constructor (e.g. ``drop_path_rate``, ``img_size``).

    The model maps ``(B, 3, H, W)`` images to ``(B, num_classes)`` logits.
    """
    features = {k: kwargs.pop(k) for k in ("out_indices", "feature_cls") if k in kwargs}
    features_only = kwargs.pop("features_only", False)
    options: dict[str, Any] = dict(
        head=head, num_heads=num_heads, key_ratio=key_ratio, head_dropout=head_dropout, num_classes=num_classes,
        global_pool=global_pool, pre_logits_size=pre_logits_size, embed_dim=embed_dim, head_options=head_options,
    )
    folder_config: dict[str, Any] | None = None
    if isinstance(pretrained, (str, os.PathLike)) and os.path.isdir(pretrained):
        name, folder_config = _from_folder(os.fspath(pretrained), name, options, kwargs)
    if not name:
        raise ConfigError("create_model needs a model name, or pretrained=FOLDER of a saved model")
    head, num_classes = options["head"] or "noah", options["num_classes"]
    num_classes = 1000 if num_classes is None else num_classes
    if head not in HEAD_TYPES:
        raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_TYPES)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ConfigError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    paper = require_known_model(name)
    _check_backbone_settings(name, kwargs)
    state = None
    if paper is not None and isinstance(pretrained, (str, os.PathLike)) and folder_config is None:
        state = read_state_dict(pretrained)
        if options["pre_logits_size"] is None and "pre_logits.fc.weight" in {k.removeprefix("module.") for k in state}:
            key = "pre_logits.fc.weight" if "pre_logits.fc.weight" in state else "module.pre_logits.fc.weight"
            options["pre_logits_size"] = int(state[key].shape[0])  # the official variant the checkpoint needs
    if paper is not None:
        preset = paper.preset()
        spec = paper.build_backbone(**kwargs)
        cfg = paper.pretrained_cfg(head, num_classes)
    else:
        preset = dict(DEFAULT_PRESET)
        spec = _timm_backbone(name, False if folder_config else pretrained, **kwargs)
        cfg = _backbone_cfg(spec.module, name, head, num_classes)
    for key in _HEAD_OPTIONS:
        if options[key] is not None:
            preset[key] = options[key]
    model = NOAHModel(
        spec.module,
        spec.num_features,
        num_classes=num_classes,
        head=head,
        use_backbone_head=spec.use_backbone_head,
        pretrained_cfg=cfg,
        global_pool="avg" if options["global_pool"] is None else options["global_pool"],
        pre_logits_size=options["pre_logits_size"],
        embed_dim=options["embed_dim"],
        head_options=options["head_options"],
        **preset,
    )
    model.backbone_args = dict(kwargs)  # what rebuilds the backbone (saved with the model)
    model.load_report = LoadReport()
    if folder_config is not None:
        model.load_report = load_state(model, read_state_dict(pretrained), source=os.fspath(pretrained), skip_mismatched_head=True)
        saved = folder_config.get("pretrained_cfg", {})
        model.pretrained_cfg.update({k: tuple(saved[k]) if isinstance(saved[k], list) else saved[k] for k in DATA_KEYS if k in saved})
        if folder_config.get("label_names") and num_classes == folder_config.get("num_classes"):
            model.pretrained_cfg["label_names"] = tuple(folder_config["label_names"])
    elif paper is not None and pretrained:
        if state is None:
            raise ConfigError(
                f"no download source for {name}'s weights: pass pretrained=PATH to a local official checkpoint"
            )
        model.load_report = load_state(model, state, source=os.fspath(pretrained), skip_mismatched_head=True)
    return feature_pyramid(model, **features) if features_only else model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())
