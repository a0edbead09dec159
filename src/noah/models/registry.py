"""Register the paper's models in timm's registry as ``noah_<name>``.

After ``import noah``, ``timm.create_model("noah_resnet18", num_classes=10)`` (and therefore
timm's own train/validate scripts) build the NOAH model with the paper's preset, with timm's
conventions:

* ``pretrained=True, pretrained_cfg_overlay=dict(file=PATH)`` loads an official checkpoint (any
  family's layout) or this project's weights; ``PATH`` may be a saved model folder, and
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` reads such a folder's config too;
* ``checkpoint_path=PATH`` loads a checkpoint of the same model (official layouts are renamed by
  ``NOAHModel``'s ``load_state_dict``);
* ``features_only=True`` (with ``out_indices``, ``feature_cls`` ``"getter"`` (default),
  ``"hook"`` or ``"fx"``) gives the backbone's feature pyramid, without the head;
* ``drop_rate`` is the head's dropout, ``num_classes=0, global_pool=''`` a model that returns the
  feature map.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from timm.models import generate_default_cfgs, load_pretrained, register_model
from timm.models._builder import resolve_pretrained_cfg

from noah.errors import ConfigError
from noah.models.factory import create_model, feature_pyramid
from noah.models.official import remap_official_state_dict
from noah.models.zoo import PAPER_MODELS

__all__ = ["registered_names"]

_PAPER = "NOAH: Learning Pairwise Object Category Attentions for Image Classification"

# read by timm's register_model: one pretrained config per entrypoint (no download source; local
# files are passed with pretrained_cfg_overlay=dict(file=...))
default_cfgs = generate_default_cfgs({
    f"noah_{name}": dict(paper_name=_PAPER, origin_url="https://github.com/OSVAI/NOAH", **paper.pretrained_cfg())
    for name, paper in PAPER_MODELS.items()
})


def _weights_source(cfg: dict[str, Any]) -> str | None:
    """The local file or folder a resolved pretrained config points at, if any."""
    file = cfg.get("file")
    return os.fspath(file) if file else None


def _entrypoint(paper_name: str) -> Callable[..., Any]:
    variant = f"noah_{paper_name}"

    def build(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
        cache_dir: Any = None,
        **kwargs: Any,
    ):
        feature_cfg = {k: kwargs.pop(k) for k in ("out_indices", "feature_cls") if k in kwargs}
        features_only = kwargs.pop("features_only", False)
        kwargs.pop("pretrained_model_args", None)  # timm's record of a saved folder's model_args
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if "drop_rate" in kwargs:  # timm's name for the classifier dropout
            kwargs.setdefault("head_dropout", kwargs.pop("drop_rate"))
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay).to_dict()
        source = _weights_source(cfg) if pretrained else None
        if pretrained and source is None and not (cfg.get("url") or cfg.get("hf_hub_id")):
            raise ConfigError(
                f"no download source for {variant}'s weights: pass pretrained_cfg_overlay=dict(file=PATH) "
                "with a local official checkpoint or saved model folder"
            )
        model = create_model(paper_name, pretrained=source or False, **kwargs)
        if pretrained and source is None:  # a url / hub source in a caller's pretrained_cfg
            load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes, filter_fn=remap_official_state_dict,
                            cache_dir=cache_dir)
        model.pretrained_cfg = {**cfg, **{k: v for k, v in model.pretrained_cfg.items() if v is not None}}
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return feature_pyramid(model, **feature_cfg) if features_only else model

    build.__name__ = build.__qualname__ = variant
    build.__module__ = __name__
    build.__doc__ = f"{paper_name} with a NOAH head and the paper's preset (see noah.models.zoo)."
    return build


def _register_all() -> list[str]:
    names = []
    for paper_name in PAPER_MODELS:
        fn = _entrypoint(paper_name)
        globals()[fn.__name__] = register_model(fn)
        names.append(fn.__name__)
    return names


registered_names: list[str] = _register_all()
