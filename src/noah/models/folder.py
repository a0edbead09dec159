"""A model as a timm / Hugging Face-style folder: ``config.json`` beside ``model.safetensors``.

The config follows the layout timm writes for the Hugging Face Hub (``timm.models.push_to_hf_hub``),
so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` reads it (after ``import noah``,
for the registered ``noah_*`` architectures), and ``noah.create_model(pretrained=FOLDER)`` reads
it for any backbone::

    {
      "architecture": "noah_resnet18",        # the name create_model builds
      "num_classes": 10,
      "num_features": 512,
      "global_pool": "avg",
      "label_names": ["cat", "dog", ...],      # the classes, in logit order (optional)
      "model_args": {"head": "noah", "num_heads": 4, "key_ratio": 0.5, "head_dropout": 0.1, ...},
      "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [...], "std": [...],
                         "crop_pct": 0.875, "interpolation": "bilinear", ...},
      "task": "multiclass",                   # the training task (how the logits are read)
      "noah_format": 1
    }

``model.safetensors`` holds the model's own state dict (``backbone.*``, ``head.*``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from torch import nn

from noah.errors import CheckpointError, ConfigError

__all__ = [
    "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION", "is_model_folder", "read_config", "model_config", "write_model_files",
    "staged_folder", "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

#: pretrained_cfg entries that describe the input pipeline (what a data config may override)
DATA_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
#: model_args that are training settings, not architecture
_TRAINING_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate", "attn_drop_rate", "proj_drop_rate")


def is_model_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder with a ``config.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_NAME))


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a saved model folder (:class:`CheckpointError` if unusable)."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder} is not a saved model folder: no {CONFIG_NAME}")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{path} names no architecture (expected a timm-style config with 'architecture')")
    if not isinstance(config.get("num_classes", 0), int) or not isinstance(config.get("model_args", {}), dict):
        raise CheckpointError(f"{path}: 'num_classes' must be an integer and 'model_args' an object")
    if not isinstance(config.get("task", "multiclass"), str) or not config.get("task", "multiclass"):
        raise CheckpointError(f"{path}: 'task' must name the task the model was trained for, got {config.get('task')!r}")
    return config


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def model_config(
    model: nn.Module,
    class_names: Sequence[str] | None = None,
    task: str = "multiclass",
    data_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content for ``model`` (a :class:`~noah.models.NOAHModel`).

    ``class_names`` are the labels in logit order; ``data_config`` (timm's ``input_size``,
    ``mean``, ``std``, ``crop_pct``, ``interpolation``) overrides the model's ``pretrained_cfg``
    with the pipeline the model was trained with.
    """
    if not isinstance(task, str) or not task:
        raise ConfigError(f"task must name the task the model was trained for (e.g. multiclass), got {task!r}")
    if class_names is not None and len(class_names) != model.num_classes:
        raise ConfigError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ("file", "url", "state_dict", "hf_hub_id", "source")}
    for key in DATA_KEYS:
        if data_config and data_config.get(key) is not None:
            cfg[key] = data_config[key]
    if data_config and data_config.get("input_size") and tuple(data_config["input_size"]) != tuple(model.pretrained_cfg.get("input_size", ())):
        cfg.pop("pool_size", None)  # describes the old input size
    cfg["num_classes"] = model.num_classes
    architecture = cfg.pop("architecture", None)
    if not architecture:
        raise ConfigError("the model's pretrained_cfg names no architecture; build it with noah.create_model")
    model_args = {
        "head": model.head_type, "num_heads": model.num_heads, "key_ratio": model.key_ratio,
        "head_dropout": model.head_dropout,
    }
    if model.pre_logits_size:
        model_args["pre_logits_size"] = model.pre_logits_size
    if model.embed_dim:
        model_args["embed_dim"] = model.embed_dim
    if model.head_options:
        model_args["head_options"] = dict(model.head_options)  # ablation switches, variant, ...
    model_args.update({k: v for k, v in getattr(model, "backbone_args", {}).items() if k not in _TRAINING_ARGS})
    config = {
        "architecture": architecture,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "model_args": model_args,
        "pretrained_cfg": cfg,
        "task": task,
        "noah_format": FORMAT_VERSION,
    }
    if class_names is not None:
        config["label_names"] = [str(name) for name in class_names]
    return _json_ready(config)


def write_model_files(
    model: nn.Module,
    folder: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    task: str = "multiclass",
    data_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into the existing ``folder``
    (no staging: :func:`save_pretrained` and :func:`staged_folder` make that atomic). Returns the config."""
    from safetensors.torch import save_file

    config = model_config(model, class_names=class_names, task=task, data_config=data_config)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return config


@contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to write into; renamed to ``folder`` when the block
    ends without error, removed otherwise. ``folder`` must not exist yet (or be empty): nothing is
    overwritten, and a crash leaves no half-written model."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder; choose a new folder (nothing is overwritten)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            folder.rmdir()  # empty (checked above); the rename needs the name free
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    task: str = "multiclass",
    data_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as ``folder/config.json`` + ``folder/model.safetensors``; returns the folder.

    ``class_names`` are the labels in logit order, ``task`` the training task (the data
    layer's name: ``"multiclass"``, ``"multilabel"``, ...), ``data_config`` (timm's ``input_size``, ``mean``, ``std``, ``crop_pct``,
    ``interpolation``) the input pipeline the model was trained with. The folder must not exist
    yet (or be empty); it appears complete or not at all (:func:`staged_folder`).
    """
    with staged_folder(folder) as staging:
        write_model_files(model, staging, class_names=class_names, task=task, data_config=data_config)
    return Path(folder)
