"""Load checkpoints released with the paper (SPEC §3) into models built by ``create_model``.

Official training checkpoints are dicts ``{'epoch', 'state_dict', 'acc', 'best_acc',
'optimizer'}`` saved from DistributedDataParallel (keys prefixed ``module.``). Backbone keys use
the backbone's own names (torchvision's for ResNets), head keys ``head.query.*`` /
``head.value.*``. In a :class:`NOAHModel` the backbone sits under ``backbone.``; the GAP
baseline's ``fc.*`` is ``head.fc.*``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from noah.errors import CheckpointError

__all__ = ["load_official_checkpoint", "remap_official_state_dict", "LoadReport"]


@dataclass
class LoadReport:
    """Keys of the model that got no value, and checkpoint keys that found no place."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("shape mismatch", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if os.fspath(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(os.fspath(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # unpickling / format errors of many kinds
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a dict of tensors, or one under 'state_dict')")
    return dict(obj)


def remap_official_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename official keys to ``model``'s: drop ``module.``, add ``backbone.``, ``fc.`` -> ``head.fc.``."""
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        for candidate in (key, f"backbone.{key}", f"head.{key}"):
            if candidate in own:
                key = candidate
                break
        out[key] = value
    return out


def load_official_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load an official NOAH checkpoint file into ``model`` (built by ``noah.create_model``).

    Reads with ``torch.load(weights_only=True)`` (or safetensors). Every mismatch is named by key;
    with ``strict=True`` any mismatch raises :class:`CheckpointError` before the model is touched,
    with ``strict=False`` what fits is loaded and the rest is returned in the report.
    """
    state = remap_official_state_dict(_read_state_dict(path), model)
    own = model.state_dict()
    report = LoadReport(
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        mismatched=[
            f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ],
    )
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit the model: {report.describe()}")
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return report
