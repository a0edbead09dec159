"""Pieces that ``noah train``, ``noah eval`` and ``noah predict`` build the same way from a config.

The config is the flat dict of :mod:`noah.engine.recipes`; models come from
:func:`noah.create_model`, transforms from ``timm.data.create_transform``.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, ContextManager, Iterable, Iterator

import timm.data
import torch
import yaml
from torchvision import transforms as T

import noah
from noah.engine.checkpoint import load_weights
from noah.errors import CheckpointError, ConfigError, NoahError
from noah.head import NOAHHead
from noah.models.adapter import NOAHModel
from noah.models.official import load_official_checkpoint

__all__ = [
    "build_model",
    "load_pretrained",
    "resolve_data_cfg",
    "build_transform",
    "autocast_factory",
    "RunInfo",
    "load_run",
    "batches",
]


def build_model(config: dict[str, Any], num_classes: int) -> NOAHModel:
    """``noah.create_model`` from the config's model keys (no weights loaded).

    ``image_size`` is passed on as ``img_size`` to backbones that take it (transformers and
    MLP-mixers need it for a non-default resolution); ``drop_path`` as ``drop_path_rate``;
    ``output_stride`` as is (backbones without dilation support ignore it).
    """
    kwargs: dict[str, Any] = {}
    if config.get("drop_path") is not None:
        kwargs["drop_path_rate"] = config["drop_path"]
    # settings that only some backbones take: each is dropped for a backbone that refuses it
    optional: dict[str, Any] = {}
    if config.get("image_size"):
        optional["img_size"] = config["image_size"]
    if config.get("output_stride"):
        optional["output_stride"] = config["output_stride"]
    head_kwargs = {k: config.get(k) for k in ("num_heads", "key_ratio", "head_dropout")}
    while True:
        try:
            model = noah.create_model(config["model"], num_classes=num_classes, head=config["head"], **head_kwargs,
                                      **kwargs, **optional)
            if isinstance(model.head, NOAHHead):
                model.head.set_impl(config.get("head_impl") or "fast")
            return model
        except TypeError as exc:
            if not optional:
                raise ConfigError(f"cannot build {config['model']}: {exc}") from exc
            refused = [k for k in optional if f"'{k}'" in str(exc)] or list(optional)
            optional.pop(refused[0])


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


def resolve_data_cfg(config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """timm's data config for ``model`` (mean, std, interpolation), with the config's input size."""
    data_cfg = timm.data.resolve_data_config(model=model)
    if config.get("image_size"):
        data_cfg["input_size"] = (3, int(config["image_size"]), int(config["image_size"]))
    data_cfg["crop_pct"] = float(config.get("crop_pct") or data_cfg.get("crop_pct") or 0.875)
    return data_cfg


def build_transform(config: dict[str, Any], data_cfg: dict[str, Any], training: bool) -> Callable:
    """PIL image -> normalised ``(3, H, W)`` tensor, for training (augmented) or evaluation."""
    common = dict(
        input_size=data_cfg["input_size"],
        interpolation=data_cfg.get("interpolation", "bilinear"),
        mean=data_cfg["mean"],
        std=data_cfg["std"],
    )
    squash = config.get("train_crop") == "squash"
    if not training:
        return timm.data.create_transform(
            **common, is_training=False, crop_pct=data_cfg["crop_pct"], crop_mode="squash" if squash else "center"
        )
    if squash:
        # Multi-label (COCO) fine-tuning: the whole image resized to the square input, then flips;
        # a random crop could cut away the objects that make up the labels.
        resize = timm.data.create_transform(**common, is_training=False, crop_pct=1.0, crop_mode="squash")
        steps = list(resize.transforms)
        return T.Compose(steps[:-2] + [T.RandomHorizontalFlip(config["hflip"])] + steps[-2:])
    return timm.data.create_transform(
        **common,
        is_training=True,
        scale=tuple(config["scale"]),
        hflip=config["hflip"],
        color_jitter=config["color_jitter"],
        auto_augment=config["auto_augment"],
        re_prob=config["reprob"],
        re_mode="pixel",
    )


def autocast_factory(amp: str, device: torch.device) -> tuple[Callable[[], ContextManager], torch.dtype | None]:
    """A context factory for mixed precision and its dtype (``None`` for full precision).

    ``"auto"`` is bf16 on GPUs that support it and full precision on the CPU (most CPUs run
    bf16 slower than fp32 unless they have AMX).
    """
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "none":
        return contextlib.nullcontext, None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ConfigError(f"unknown --amp {amp!r}; expected bf16, fp16, none or auto")
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), dtype


class RunInfo:
    """What a finished (or interrupted) run folder tells about its model.

    ``config``: the resolved training config; ``task``, ``class_names``; ``weights``: the file
    the model's weights come from.
    """

    def __init__(self, config: dict[str, Any], task: str, class_names: list[str], weights: str) -> None:
        self.config, self.task, self.class_names, self.weights = config, task, class_names, weights

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _read_run_dir(run_dir: str, checkpoint: str | None) -> RunInfo:
    config_path = os.path.join(run_dir, "config.yaml")
    classes_path = os.path.join(run_dir, "classes.json")
    for path in (config_path, classes_path):
        if not os.path.isfile(path):
            raise CheckpointError(f"{run_dir} is not a noah run folder: {os.path.basename(path)} is missing")
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    with open(classes_path, encoding="utf-8") as f:
        classes = json.load(f)
    if checkpoint is None:
        candidates = ["model.safetensors", "best.pt", "last.pt"]
    elif checkpoint in ("best", "last"):
        candidates = [f"{checkpoint}.pt"]
    elif checkpoint == "final":
        candidates = ["model.safetensors"]
    else:
        candidates = [checkpoint]
    for name in candidates:
        path = name if os.path.isabs(name) or os.path.isfile(name) else os.path.join(run_dir, name)
        if os.path.isfile(path):
            return RunInfo(config, classes["task"], list(classes["class_names"]), path)
    raise CheckpointError(f"no weights in {run_dir}: looked for {', '.join(candidates)}")


def load_run(
    run: str | None, checkpoint: str | None = None, device: torch.device | str = "cpu"
) -> tuple[NOAHModel, RunInfo]:
    """The model of a run folder (``run``) or of a training checkpoint file, in eval mode.

    ``checkpoint`` picks the weights inside a run folder (``final`` = ``model.safetensors``,
    ``best``, ``last``, or a file path); without ``run`` it must be a ``.pt`` training checkpoint,
    which carries its own config.
    """
    if run is not None:
        if not os.path.isdir(run):
            raise CheckpointError(f"run folder not found: {run}")
        info = _read_run_dir(run, checkpoint)
    elif checkpoint is not None:
        from noah.engine.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint)
        if "classes" not in state:
            raise CheckpointError(f"{checkpoint} carries no class list")
        info = RunInfo(state["config"], state["classes"]["task"], list(state["classes"]["class_names"]), checkpoint)
    else:
        raise ConfigError("give a run folder (--run DIR) or a training checkpoint (--checkpoint FILE)")
    model = build_model(info.config, info.num_classes)
    state_dict = load_weights(info.weights)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.weights} does not fit {info.config['model']}: {str(exc).splitlines()[0]}") from exc
    except NoahError:
        raise
    return model.to(device).eval(), info


def batches(loader: Iterable) -> Iterator[Any]:
    """Iterate ``loader``; a :class:`NoahError` raised in a worker process comes out with its own
    one-line message (the DataLoader wraps it in the worker's traceback)."""
    try:
        yield from loader
    except NoahError as exc:
        text = str(exc)
        if "Original Traceback" not in text:
            raise
        last = [line for line in text.splitlines() if line.strip()][-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        raise type(exc)(last[len(prefix):] if last.startswith(prefix) else last) from None
