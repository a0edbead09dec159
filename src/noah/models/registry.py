"""Register the paper's models in timm's registry as ``noah_<name>``.

After ``import noah``, ``timm.create_model("noah_resnet18", num_classes=10)`` (and therefore
timm's own train/validate scripts) build the NOAH model with the paper's preset.
"""

from __future__ import annotations

from typing import Any, Callable

from timm.models import register_model

from noah.models.factory import create_model
from noah.models.zoo import PAPER_MODELS

__all__ = ["registered_names"]

# timm hands these to every entrypoint; they describe hub weights, which NOAH models do not have.
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _entrypoint(paper_name: str) -> Callable[..., Any]:
    def build(pretrained: bool | str = False, **kwargs: Any):
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        if "drop_rate" in kwargs:  # timm's name for the classifier dropout
            kwargs.setdefault("head_dropout", kwargs.pop("drop_rate"))
        kwargs.pop("global_pool", None)
        return create_model(paper_name, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = f"noah_{paper_name}"
    build.__module__ = __name__
    build.__doc__ = f"{paper_name} with a NOAH head and the paper's preset (SPEC §4)."
    return build


def _register_all() -> list[str]:
    names = []
    for paper_name in PAPER_MODELS:
        fn = _entrypoint(paper_name)
        globals()[fn.__name__] = register_model(fn)
        names.append(fn.__name__)
    return names


registered_names: list[str] = _register_all()
