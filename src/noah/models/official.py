"""Load checkpoints released with the paper (SPEC §3) into models built by ``create_model``.

Official training checkpoints are dicts holding the weights under ``'state_dict'`` (the CNN code,
timm's training script for Mixer / gMLP) or ``'model'`` (the DeiT and PVT code), often saved
from DistributedDataParallel (keys prefixed ``module.``) and next to a pickled
``argparse.Namespace`` of the run's arguments. Head keys are ``head.query.*`` / ``head.value.*``.

How each family's official model code names its layers, and what is done with it
(:func:`translate_official_keys`; a :class:`LoadReport` names the steps taken):

* ResNet, ShuffleNetV2: torchvision names, which the backbones here share; the backbone sits
  under ``backbone.``. GAP baselines (``head.2.*``: pool, flatten, linear) map to ``head.fc.*``.
* MobileNetV2: torchvision-style ``features.N...``, mapped block by block onto timm's names
  (``conv_stem``, ``blocks.S.J.conv_pw``, ..., ``conv_head``).
* MobileNetV3-Small: the backbone here is built in the official layout (``features.N...``); the
  head is called ``classifier`` there and is renamed ``head``.
* DeiT: timm's ViT names, no class token. The models narrower than 192 channels carry a
  per-token ``pre_logits.fc`` (Linear to 192 + Tanh) before a 192-channel head: such a
  checkpoint needs a model built with ``pre_logits_size=192``.
* PVT: ``patch_embedN`` / ``pos_embedN`` / ``blockN.J`` mapped onto ``stages.N-1``.
* Mixer, gMLP: timm's names, unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from noah.errors import CheckpointError

__all__ = [
    "load_official_checkpoint", "load_state", "remap_official_state_dict", "translate_official_keys", "read_state_dict",
    "LoadReport", "HEAD_KEYS",
]

#: parameter-name prefixes of the classifier (NOAH head, GAP baseline's linear layer)
HEAD_KEYS = ("head.query.", "head.value.", "head.fc.")

#: files looked for, in order, when a checkpoint path is a folder
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class LoadReport:
    """What loading did: how the checkpoint's layout was mapped (``steps``), the model's keys that
    got no value, checkpoint keys that found no place, and shape mismatches."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

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


def _weights_file(path: str | os.PathLike) -> str:
    if os.path.isdir(path):
        for name in FOLDER_WEIGHTS:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise CheckpointError(f"{path} is a folder without {' or '.join(FOLDER_WEIGHTS)}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    return os.fspath(path)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (or of a saved folder's weights file).

    Reads safetensors, or pickles with ``torch.load(weights_only=True)`` -- which also admits the
    ``argparse.Namespace`` that the DeiT, PVT and timm training scripts store beside the weights.
    Training dicts are unwrapped (``state_dict``, ``model`` or ``model_state_dict``).
    """
    file = _weights_file(path)
    try:
        if file.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(file)
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / format errors of many kinds
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a dict of tensors, or one under 'state_dict')")
    return dict(obj)


# -- official layouts -------------------------------------------------------------------------

def _pvt_key(key: str) -> str:
    """``patch_embedN.* / pos_embedN / blockN.J.*`` -> ``stages.N-1.{patch_embed, pos_embed, blocks.J}``."""
    match = re.match(r"^(patch_embed|pos_embed|block)(\d)(.*)$", key)
    if not match:
        return key
    part, stage, rest = match.groups()
    return f"stages.{int(stage) - 1}.{'blocks' if part == 'block' else part}{rest}"


def _mobilenetv2_renamer(backbone: nn.Module) -> Callable[[str], str]:
    """Official (torchvision-style) MobileNetV2 names -> timm's, from the model's own block list.

    ``features.0`` is the stem, ``features.1 .. K`` the inverted residual blocks in order,
    ``features.K+1`` the 1x1 conv head. Inside a block, the official ``conv`` sequence is
    (expand 1x1 conv+BN, depthwise conv+BN, projection conv, BN), without the expansion in the
    first block (timm's depthwise-separable block).
    """
    blocks = [
        (f"blocks.{s}.{j}", hasattr(block, "conv_pwl"))
        for s, stage in enumerate(backbone.blocks) for j, block in enumerate(stage)
    ]
    expand = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2", "conv.2": "conv_pwl", "conv.3": "bn3"}
    separable = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}

    def rename(key: str) -> str:
        match = re.match(r"^features\.(\d+)\.(.*)$", key)
        if not match:
            return key
        index, rest = int(match.group(1)), match.group(2)
        if index == 0:
            return re.sub(r"^0\.", "conv_stem.", re.sub(r"^1\.", "bn1.", rest))
        if index == len(blocks) + 1:
            return re.sub(r"^0\.", "conv_head.", re.sub(r"^1\.", "bn2.", rest))
        if not 1 <= index <= len(blocks):
            return key
        name, expands = blocks[index - 1]
        table = expand if expands else separable
        for official, ours in table.items():
            if rest.startswith(official + "."):
                return f"{name}.{ours}{rest[len(official):]}"
        return key

    return rename


def translate_official_keys(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official checkpoint's keys to ``model``'s; returns the new dict and the steps taken.

    Drops ``module.``, maps each family's layout (module docstring), then puts keys that are not
    the model's own under ``backbone.`` (or ``head.``, for a baseline's ``fc``) where that names
    a model key. Keys that are already the model's pass unchanged.
    """
    own = model.state_dict()
    keys = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    steps: list[str] = []
    if any(k.startswith("module.") for k in state_dict):
        steps.append("dropped the DistributedDataParallel prefix 'module.'")
    foreign = [k for k in keys if k not in own]
    renames: list[tuple[str, Callable[[str], str]]] = []
    if "patch_embed1.proj.weight" in keys:
        renames.append(("mapped the official PVT layout (patch_embedN, pos_embedN, blockN) onto stages.N-1", _pvt_key))
    backbone = getattr(model, "backbone", None)
    if "features.0.0.weight" in foreign and "backbone.conv_stem.weight" in own and hasattr(backbone, "blocks"):
        renames.append((
            "mapped the official MobileNetV2 layout (features.N) onto timm's names (conv_stem, blocks.S.J, conv_head)",
            _mobilenetv2_renamer(backbone),
        ))
    if any(k.startswith("classifier.") for k in foreign) and "head.query.weight" in own:
        renames.append(("renamed the official MobileNetV3 head 'classifier' to 'head'", lambda k: re.sub(r"^classifier\.", "head.", k)))
    if any(k.startswith("head.2.") for k in foreign) and "head.fc.weight" in own:
        renames.append(("mapped the official GAP head (head.2: pool, flatten, linear) to head.fc", lambda k: re.sub(r"^head\.2\.", "head.fc.", k)))
    for step, rename in renames:
        keys = {rename(k): v for k, v in keys.items()}
        steps.append(step)
    if "pre_logits.fc.weight" in keys and "pre_logits.fc.weight" in own:
        width = tuple(keys["pre_logits.fc.weight"].shape)
        steps.append(f"loaded the official per-token pre-logits layer (Linear {width[1]} -> {width[0]} + Tanh)")
    out: dict[str, torch.Tensor] = {}
    prefixed = 0
    for key, value in keys.items():
        if key not in own:
            for candidate in (f"backbone.{key}", f"head.{key}"):
                if candidate in own:
                    key = candidate
                    prefixed += candidate.startswith("backbone.")
                    break
        out[key] = value
    if prefixed:
        steps.append(f"put {prefixed} backbone keys under 'backbone.'")
    return out, steps


def remap_official_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """:func:`translate_official_keys` without the steps."""
    return translate_official_keys(state_dict, model)[0]


def _pre_logits_hint(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> str:
    if "pre_logits.fc.weight" in state and "pre_logits.fc.weight" not in own:
        out_features, in_features = state["pre_logits.fc.weight"].shape
        return (
            f" (the checkpoint has the official per-token pre-logits layer, Linear {in_features} -> {out_features} + Tanh: "
            f"build the model with pre_logits_size={out_features})"
        )
    return ""


def load_official_checkpoint(
    model: nn.Module, path: str | os.PathLike, strict: bool = True, skip_mismatched_head: bool = False
) -> LoadReport:
    """Load an official NOAH checkpoint (or this project's weights, a file or a saved folder)
    into ``model`` (built by ``noah.create_model``), mapping the official layout of its family
    (module docstring); the report's ``steps`` name what was mapped.

    Every mismatch is named by key; with ``strict=True`` any mismatch raises
    :class:`CheckpointError` before the model is touched, with ``strict=False`` what fits is
    loaded and the rest is returned in the report. ``skip_mismatched_head=True`` leaves out head
    tensors whose shape differs from the model's (a checkpoint for another class count): the
    model keeps its freshly initialised head, and the report's ``steps`` says so.
    """
    return load_state(model, read_state_dict(path), os.fspath(path), strict=strict, skip_mismatched_head=skip_mismatched_head)


def load_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, strict: bool = True,
    skip_mismatched_head: bool = False,
) -> LoadReport:
    """:func:`load_official_checkpoint` for tensors already read (``source`` names them in errors)."""
    state, steps = translate_official_keys(state_dict, model)
    own = model.state_dict()
    dropped: set[str] = set()
    if skip_mismatched_head:
        dropped = {k for k, v in state.items() if k.startswith(HEAD_KEYS) and k in own and v.shape != own[k].shape}
        for key in dropped:
            del state[key]
        if dropped:
            steps.append("kept the model's new head: the checkpoint's head is for another class count")
    report = LoadReport(
        missing=[k for k in own if k not in state and k not in dropped],
        unexpected=[k for k in state if k not in own],
        mismatched=[
            f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ],
        steps=steps,
    )
    if strict and not report.ok:
        raise CheckpointError(f"{source} does not fit the model: {report.describe()}{_pre_logits_hint(state, own)}")
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return report
