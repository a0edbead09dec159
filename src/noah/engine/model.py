"""Models from a training config: built for a run, given local pretrained weights, or read back
from a run folder for ``noah eval`` / ``noah predict``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import noah
from noah.engine.checkpoint import load_checkpoint, load_weights
from noah.engine.config import HEAD_OPTION_FIELDS, TrainConfig
from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, ConfigError
from noah.head import NOAHHead
from noah.head import triton_impl
from noah.models import NOAHModel, backbone_facts, load_official_checkpoint

__all__ = ["build_model", "load_pretrained", "RunInfo", "load_run", "state_dict_mismatch"]


def _backbone_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The backbone settings the config asks for, as constructor arguments; a setting the backbone
    cannot take is a :class:`ConfigError` naming the model and the flag."""
    facts = backbone_facts(config.model)
    kwargs: dict[str, Any] = {}
    for setting, value, flag in (("drop_path_rate", config.drop_path, "--drop-path"),
                                 ("output_stride", config.output_stride, "--output-stride")):
        if value is None:
            continue
        if not facts.takes(setting):
            raise ConfigError(f"model {config.model} cannot take {flag} {value}: its backbone ({facts.class_name}) "
                              f"has no {setting} setting")
        kwargs[setting] = value
    if config.image_size:
        size = (config.image_size, config.image_width or config.image_size)
        if facts.takes("img_size"):  # position embeddings are built for this size
            kwargs["img_size"] = size if size[0] != size[1] else size[0]
        elif facts.fixed_input_size and size != tuple(facts.input_size[1:]):
            raise ConfigError(
                f"model {config.model} cannot take --image-size {config.image_size}: its backbone "
                f"({facts.class_name}) only runs at {facts.input_size[1]}x{facts.input_size[2]} px and has no "
                "img_size setting"
            )
        # else: a backbone that runs at any size (most CNNs); only the transforms change
    return kwargs


def build_model(config: TrainConfig, num_classes: int) -> NOAHModel:
    """``noah.create_model`` from the config's model options (no weights loaded).

    Decided before anything is built: ``image_size`` goes to backbones that take ``img_size``
    (transformers and MLP-mixers) and is refused by fixed-size backbones that do not;
    ``output_stride`` and ``drop_path`` (as ``drop_path_rate``) are refused by backbones that do
    not take them. The head options (:data:`~noah.engine.config.HEAD_OPTION_FIELDS`) go to the
    head; one the head type has no use for is a :class:`ConfigError`.
    """
    model = noah.create_model(config.model, num_classes=num_classes, head=config.head, num_heads=config.num_heads,
                              key_ratio=config.key_ratio, head_dropout=config.head_dropout, embed_dim=config.embed_dim,
                              head_options={name: getattr(config, name) for name in HEAD_OPTION_FIELDS},
                              **_backbone_kwargs(config))
    if isinstance(model.head, NOAHHead):
        model.head.set_impl(config.head_impl)
    return model


def head_impl_problem(model: torch.nn.Module, device: torch.device | str) -> str | None:
    """Why ``model``'s NOAH head implementation cannot run on ``device`` (one line), or ``None``.

    Only ``"triton"`` is tied to a device (CUDA, or CPU under Triton's interpreter); the others run
    everywhere.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, NOAHHead) or head.impl != "triton":
        return None
    return triton_impl.unavailable_reason(torch.empty(0, device=device))


def load_pretrained(model: NOAHModel, path: str) -> str:
    """Load an official NOAH checkpoint or a plain backbone state dict from a local file.

    Keys that do not fit (a head for another class count, a GAP baseline's ``fc``) are left out;
    raises :class:`CheckpointError` if not a single backbone parameter fits. Returns a one-line
    description of what was loaded.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained weights file not found: {path}")
    report = load_official_checkpoint(model, path, strict=False)
    bad = set(report.missing) | {m.split(" ")[0] for m in report.mismatched}
    backbone_keys = [k for k, _ in model.named_parameters() if k.startswith("backbone.")]
    loaded_backbone = [k for k in backbone_keys if k not in bad]
    if not loaded_backbone:
        raise CheckpointError(f"{path}: no parameter fits the backbone of {type(model.backbone).__name__}; {report.describe(3)}")
    head_loaded = not any(k.startswith("head.") for k in bad)
    text = f"loaded {len(loaded_backbone)}/{len(backbone_keys)} backbone parameters from {path}"
    text += "; head " + ("loaded too" if head_loaded else "newly initialised")
    if report.unexpected:
        text += f"; {len(report.unexpected)} checkpoint tensors unused"
    return text


def state_dict_mismatch(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """One line naming what keeps ``state_dict`` from loading into ``model`` ('' if it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
              for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            parts.append(f"{label}: {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else ""))
    return "; ".join(parts)


@dataclass
class RunInfo:
    """What a run folder (or a training checkpoint) says about its model: the training
    ``config``, the ``task``, the ``class_names`` and the ``weights`` file used."""

    config: TrainConfig
    task: str
    class_names: list[str]
    weights: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_run(
    run: str | os.PathLike | None, checkpoint: str | None = None, device: torch.device | str = "cpu"
) -> tuple[NOAHModel, RunInfo]:
    """The model of a run folder (``run``) or of a training checkpoint file, in eval mode.

    ``checkpoint`` picks the weights: ``final`` (``model.safetensors``), ``best`` or ``last`` are
    the run folder's own files; anything else is a file path relative to the current directory
    (a ``.safetensors`` file or a ``.pt`` training checkpoint). Without ``run`` it must be a
    ``.pt`` training checkpoint, which carries its own config and classes.
    """
    if run is not None:
        run_dir = RunDir(run)
        config = run_dir.read_config()
        task, class_names = run_dir.read_classes()
        if checkpoint is None or checkpoint in RunDir.WEIGHT_CHOICES:
            weights = run_dir.weights_file(checkpoint)
        else:
            weights = Path(checkpoint)
            if not weights.is_file():
                raise CheckpointError(f"checkpoint not found: {checkpoint} (a path from the current directory; "
                                      f"{', '.join(RunDir.WEIGHT_CHOICES)} pick the run's own weights)")
    elif checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if "classes" not in state:
            raise CheckpointError(f"{checkpoint} carries no class list")
        config = TrainConfig.from_dict(state["config"], str(checkpoint))
        task, class_names = state["classes"]["task"], list(state["classes"]["class_names"])
        weights = Path(checkpoint)
    else:
        raise ConfigError("give a run folder (--run DIR) or a training checkpoint (--checkpoint FILE)")
    info = RunInfo(config, task, class_names, weights)
    model = build_model(config, info.num_classes)
    if head_impl_problem(model, device) is not None:
        model.head.set_impl("fast")  # same numbers; a run trained with "triton" on a GPU evaluates anywhere
    state_dict = load_weights(weights)
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"{weights} does not fit {config.model} with a {config.head} head: {problem}")
    model.load_state_dict(state_dict)
    return model.to(device).eval(), info
