"""Training recipes: the paper's set-ups (SPEC §5) as named presets, plus YAML and flag overrides.

A resolved configuration (a :class:`~noah.engine.config.TrainConfig`) is built in layers, each
overriding the one before:

1. the defaults of :class:`~noah.engine.config.TrainConfig`,
2. the named recipe (``RECIPES[name]``: the options it changes),
3. a YAML file (``--config file.yaml``; it may itself name a ``recipe``),
4. the flags given on the command line.

Every layer is checked against the config's schema: an unknown key or a bad value is a
:class:`~noah.errors.ConfigError` that names the key and where it came from. The resolved config
is written to ``config.yaml`` in the run folder.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from noah.engine.config import TrainConfig, load_yaml_config, normalise_keys
from noah.errors import ConfigError

__all__ = ["RECIPES", "RECIPE_HELP", "DEFAULT_RECIPE", "resolve_config"]

DEFAULT_RECIPE = "demo"

#: name -> the options it changes relative to the TrainConfig defaults; SPEC §5
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
    # `noah compare` on the built-in odd-shape scenes, sized so that a 3-seed comparison of two heads
    # on a small backbone takes minutes on a 2-core CPU: 64 px canvases, 2000 scenes, 3 epochs (the
    # GAP baseline of test_resnet reaches ~77 % top-1 after 2). No output stride, so that one
    # recipe serves CNNs, ViTs and MLPs; CNNs add --output-stride 8 for an 8x8 map.
    "compare": {
        "model": "test_vit", "data": "shapes", "image_size": 64, "epochs": 3, "data_size": [2000, 500],
        "batch_size": 32, "opt": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "bn_wd": False, "sched": "cosine",
        "warmup_epochs": 1, "train_crop": "squash", "crop_pct": 1.0, "hflip": 0.0, "workers": 0,
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
    # Market-1501 person re-ID with ResNet50 and the 512-d embedding (SPEC §5): people are 256x128,
    # resized whole (no crop: the whole person is the identity), flipped
    "reid": {
        "model": "resnet50", "data": None, "embed_dim": 512, "image_size": 256, "image_width": 128,
        "train_crop": "squash", "crop_pct": 1.0, "hflip": 0.5, "epochs": 350, "batch_size": 64, "opt": "sgd",
        "lr": 0.065, "momentum": 0.9, "weight_decay": 1e-4, "sched": "multistep", "decay_milestones": [150, 225, 300],
        "decay_rate": 0.1,
    },
    "reid-finetune": {
        "model": "resnet50", "data": None, "embed_dim": 512, "image_size": 256, "image_width": 128,
        "train_crop": "squash", "crop_pct": 1.0, "hflip": 0.5, "epochs": 150, "batch_size": 64, "opt": "adam",
        "amsgrad": True, "lr": 3e-4, "weight_decay": 1e-4, "sched": "step", "decay_epochs": 60, "decay_rate": 0.1,
    },
}

RECIPE_HELP = {
    "demo": "CPU demo on the built-in digit scenes (test_resnet at 64 px, output stride 8, 9 epochs, 3000 scenes)",
    "compare": "noah compare on the built-in odd-shape scenes (64 px, 2000 scenes, 3 epochs, AdamW; test_vit by "
    "default, CNNs add --output-stride 8)",
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
    "reid": "Market-1501 re-ID from scratch: ResNet50 + 512-d embedding, 256x128, SGD lr 0.065 x0.1 at epochs "
    "150/225/300, 350 epochs, batch 64, wd 1e-4",
    "reid-finetune": "Market-1501 re-ID fine-tuning (with --pretrained): AMSGrad lr 3e-4 x0.1 every 60 epochs, "
    "150 epochs, batch 64, wd 1e-4",
}


def resolve_config(
    recipe: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Merge defaults <- recipe <- YAML file <- ``overrides`` into one validated :class:`TrainConfig`.

    ``recipe`` given explicitly wins over a ``recipe`` key in the YAML file; the result records
    the recipe's name in ``recipe``. Unknown recipes, keys or bad values raise :class:`ConfigError`.
    """
    from_file = load_yaml_config(config_file) if config_file else {}
    name = recipe or from_file.pop("recipe", None) or DEFAULT_RECIPE
    from_file.pop("recipe", None)
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    layers = [(RECIPES[name], f"recipe {name!r}"), (from_file, str(config_file)),
              (dict(overrides or {}), "the command line")]
    values: dict[str, Any] = {"recipe": name}
    config = TrainConfig.from_dict(values)
    for layer, origin in layers:
        values.update(normalise_keys(layer, origin))
        config = TrainConfig.from_dict(values, origin)  # names the layer that brought a bad value
    if config.data is None:
        raise ConfigError(f"recipe {name!r} needs a dataset: pass --data PATH (an image folder or COCO-format folder)")
    return config
