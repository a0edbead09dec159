"""Training recipes: the paper's set-ups (SPEC §5) as named presets, plus YAML and flag overrides.

A resolved configuration is a flat dict whose keys are the ``noah train`` flags with ``_`` for
``-``. It is built in layers, each overriding the one before:

1. ``DEFAULTS`` (the values every recipe starts from),
2. the named recipe (``RECIPES[name]``),
3. a YAML file (``--config file.yaml``; it may itself name a ``recipe``),
4. the flags given on the command line.

The resolved dict is written to ``config.yaml`` in the run folder.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import yaml

from noah.errors import ConfigError

__all__ = ["DEFAULTS", "RECIPES", "RECIPE_HELP", "resolve_config", "load_yaml_config", "DEFAULT_RECIPE"]

DEFAULT_RECIPE = "demo"

#: every configuration key with its default (the standard ImageNet ResNet set-up of SPEC §5);
#: recipes and YAML files may only set these keys
DEFAULTS: dict[str, Any] = {
    # model
    "model": "resnet18",
    "head": "noah",
    "num_heads": None,  # None: the paper's N for its models, noah.models.DEFAULT_PRESET otherwise
    "key_ratio": None,
    "head_dropout": None,
    "head_impl": "fast",  # NOAH head implementation; "lean" keeps no (B, N, M, L) maps for backward
    "drop_path": None,  # stochastic depth rate, for backbones that take drop_path_rate
    "output_stride": None,  # 8 or 16: dilate the last stages (bigger final feature map), if the backbone can
    "pretrained": None,  # local weights file: official NOAH checkpoint or backbone state dict
    # data
    "data": None,
    "task": None,  # None: detected from the data
    "image_size": None,  # None: the model's default input size
    "workers": 2,
    "skip_bad_images": False,
    "threshold": 0.5,  # multi-label score threshold for CP/CR/OP/OR and `noah predict`
    # augmentation (timm.data.create_transform / Mixup)
    "train_crop": "rrc",  # "rrc": random resized crop; "squash": resize to the square input, no crop
    "scale": [0.08, 1.0],
    "crop_pct": 0.875,  # eval: resize to image_size / crop_pct, then center crop
    "hflip": 0.5,
    "color_jitter": 0.0,
    "auto_augment": None,  # e.g. "rand-m9-mstd0.5-inc1" (RandAugment)
    "reprob": 0.0,  # random erasing probability
    "mixup": 0.0,  # Mixup alpha
    "cutmix": 0.0,  # CutMix alpha
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "smoothing": 0.0,  # label smoothing
    # optimisation (timm.optim.create_optimizer_v2 / timm.scheduler.create_scheduler_v2)
    "epochs": 100,
    "batch_size": 256,
    "opt": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "bn_wd": True,  # False: no weight decay on biases and normalisation layers
    "sched": "step",  # cosine | step | poly (decay_rate=1: linear) | constant | multistep
    "decay_epochs": 30,
    "decay_rate": 0.1,
    "decay_milestones": [30, 60, 90],  # for sched "multistep"
    "min_lr": 0.0,
    "warmup_epochs": 0,
    "warmup_lr": 1e-6,
    "grad_clip": None,
    "ema": False,
    "ema_decay": 0.9998,
    "freeze_backbone_epochs": 0,  # train only the head for this many epochs first
    # runtime
    "amp": "auto",  # auto | bf16 | fp16 | none
    "channels_last": False,
    "compile": False,
    "sync_bn": False,
    "device": "auto",
    "seed": 0,
    "deterministic": False,
    "data_size": None,  # built-in data only: [num_train, num_val] images
}

#: name -> the keys it changes relative to DEFAULTS; SPEC §5
RECIPES: dict[str, dict[str, Any]] = {
    # CPU demo on the built-in digit scenes, sized to finish in under 3 minutes on 2 cores: timm's
    # tiny test ResNet on 64 px scenes with the last two stages dilated (output stride 8), so the
    # head still sees an 8x8 map; whole canvases (a crop could cut the digit away), no flips
    # (digits are not mirror-symmetric); AdamW with a short warm-up converges fastest from scratch.
    "demo": {
        "model": "test_resnet", "data": "digits", "image_size": 64, "output_stride": 8, "epochs": 9,
        "data_size": [3000, 500], "batch_size": 32, "opt": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
        "bn_wd": False, "sched": "cosine", "warmup_epochs": 1, "train_crop": "squash", "crop_pct": 1.0, "hflip": 0.0,
    },
    "resnet": {
        "model": "resnet18", "data": None, "epochs": 100, "batch_size": 256, "opt": "sgd", "lr": 0.1,
        "weight_decay": 1e-4, "sched": "step", "decay_epochs": 30, "decay_rate": 0.1,
    },
    "mobilenet": {
        "model": "mobilenetv2_100", "data": None, "epochs": 150, "batch_size": 256, "opt": "sgd", "lr": 0.05,
        "weight_decay": 4e-5, "sched": "cosine",
    },
    "shufflenet": {
        "model": "shufflenetv2_100", "data": None, "epochs": 240, "batch_size": 1024, "opt": "sgd", "lr": 0.5,
        "weight_decay": 4e-5, "bn_wd": False, "sched": "poly", "decay_rate": 1.0,
    },
    "deit": {
        "model": "deit_tiny_patch16_224", "data": None, "epochs": 300, "batch_size": 1024, "opt": "adamw",
        "lr": 5e-4, "weight_decay": 0.05, "bn_wd": False, "sched": "cosine", "warmup_epochs": 5,
        "min_lr": 1e-5, "smoothing": 0.1, "auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25,
        "mixup": 0.8, "cutmix": 1.0, "color_jitter": 0.3, "drop_path": 0.1,
    },
    "mixer": {
        "model": "mixer_s16_224", "data": None, "epochs": 300, "batch_size": 1536, "opt": "adamw", "lr": 7e-4,
        "weight_decay": 0.067, "bn_wd": False, "sched": "cosine", "warmup_epochs": 5, "min_lr": 1e-5,
        "smoothing": 0.1, "auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "mixup": 0.8,
        "cutmix": 1.0, "drop_path": 0.1,
    },
    "aggressive": {
        "model": "resnet50", "data": None, "epochs": 300, "batch_size": 4096, "opt": "adamw", "lr": 4e-3,
        "weight_decay": 0.05, "bn_wd": False, "sched": "cosine", "warmup_epochs": 20, "min_lr": 1e-6,
        "smoothing": 0.1, "auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "mixup": 0.8,
        "cutmix": 1.0, "drop_path": 0.1, "ema": True, "ema_decay": 0.9999,
    },
    "coco": {
        "model": "resnet101", "data": None, "task": "multilabel", "image_size": 448, "train_crop": "squash",
        "crop_pct": 1.0, "hflip": 0.5, "epochs": 30, "batch_size": 16, "opt": "sgd", "lr": 0.01,
        "weight_decay": 1e-4, "sched": "step", "decay_epochs": 5, "decay_rate": 0.1,
        "freeze_backbone_epochs": 2,
    },
}

RECIPE_HELP = {
    "demo": "CPU demo on the built-in digit scenes (test_resnet at 64 px, output stride 8, 9 epochs, 3000 scenes)",
    "resnet": "ResNets / iNaturalist: SGD lr 0.1, x0.1 every 30 epochs, 100 epochs, batch 256, wd 1e-4",
    "mobilenet": "MobileNets: SGD lr 0.05 cosine, 150 epochs, batch 256, wd 4e-5",
    "shufflenet": "ShuffleNetV2: SGD lr 0.5 linear to 0, 240 epochs, batch 1024, wd 4e-5, no wd on BN",
    "deit": "DeiT / PVT: AdamW lr 5e-4 cosine, 300 epochs, batch 1024, wd 0.05, smoothing, RandAugment, "
    "random erasing, Mixup, CutMix",
    "mixer": "Mixer / gMLP: AdamW lr 7e-4 cosine, 300 epochs, batch 1536, wd 0.067, same augmentations",
    "aggressive": "ConvNeXt-style: AdamW lr 4e-3, batch 4096, wd 0.05, 300 epochs, 20 warm-up, cosine, "
    "strong augmentation, stochastic depth, EMA",
    "coco": "MS-COCO multi-label fine-tuning: 448 px, SGD lr 0.01 x0.1 every 5 epochs, 30 epochs, batch 16, "
    "wd 1e-4, backbone frozen for 2 epochs",
}

_CHOICES = {
    "head": ("noah", "gap"),
    "task": (None, "multiclass", "multilabel"),
    "amp": ("auto", "bf16", "fp16", "none"),
    "train_crop": ("rrc", "squash"),
    "sched": ("cosine", "step", "poly", "constant", "multistep"),
}


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of configuration keys (``-`` or ``_`` spelling) from ``path``."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path} must hold a mapping of configuration keys, got {type(loaded).__name__}")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def _check_keys(values: Mapping[str, Any], origin: str) -> None:
    unknown = sorted(set(values) - set(DEFAULTS) - {"recipe"})
    if unknown:
        raise ConfigError(f"unknown configuration key(s) in {origin}: {', '.join(unknown)}")


def _validate(config: dict[str, Any]) -> None:
    for key, allowed in _CHOICES.items():
        if config[key] not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise ConfigError(f"{key} must be one of {shown}, got {config[key]!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ConfigError(f"{key} must be a positive integer, got {config[key]!r}")
    if not isinstance(config["seed"], int) or config["seed"] < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {config['seed']!r}")
    if not isinstance(config["workers"], int) or config["workers"] < 0:
        raise ConfigError(f"workers must be a non-negative integer, got {config['workers']!r}")
    if not (isinstance(config["lr"], (int, float)) and config["lr"] > 0):
        raise ConfigError(f"lr must be a positive number, got {config['lr']!r}")
    if config["freeze_backbone_epochs"] < 0:
        raise ConfigError("freeze_backbone_epochs must be >= 0")
    if not 0.0 < float(config["threshold"]) < 1.0:
        raise ConfigError(f"threshold must lie strictly between 0 and 1, got {config['threshold']!r}")


def resolve_config(
    recipe: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``DEFAULTS`` <- recipe <- YAML file <- ``overrides`` into one validated config dict.

    ``recipe`` given explicitly wins over a ``recipe`` key in the YAML file; the result holds the
    recipe's name under ``"recipe"``. Unknown recipes or keys raise :class:`ConfigError`.
    """
    from_file = load_yaml_config(config_file) if config_file else {}
    _check_keys(from_file, str(config_file))
    overrides = dict(overrides or {})
    _check_keys(overrides, "the command line")
    name = recipe or from_file.pop("recipe", None) or DEFAULT_RECIPE
    from_file.pop("recipe", None)
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    config = {**DEFAULTS, **RECIPES[name], **from_file, **overrides}
    if config["data"] is None:
        raise ConfigError(f"recipe {name!r} needs a dataset: pass --data PATH (an image folder or COCO-format folder)")
    config["recipe"] = name
    _validate(config)
    return config
