"""A model ready to look at: the network, its classes, and the evaluation transform it was trained with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from noah.data.folders import read_image
from noah.engine.config import TrainConfig
from noah.engine.model import build_model, load_run
from noah.engine.transforms import build_transform, resolve_data_cfg
from noah.errors import ConfigError
from noah.models import NOAHModel, load_official_checkpoint

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model in eval mode with what it takes to feed it images and name its outputs.

    ``transform`` maps a PIL image to the normalised ``(3, H, W)`` input (the run's evaluation
    transform); ``mean``/``std`` undo the normalisation for display.
    """

    model: NOAHModel
    config: TrainConfig
    task: str
    class_names: list[str]
    transform: Callable
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    label: str

    @classmethod
    def from_model(cls, model: NOAHModel, config: TrainConfig, task: str, class_names: Sequence[str],
                   device: torch.device | str = "cpu", label: str = "") -> "LoadedModel":
        """``model`` with the evaluation transform that ``config`` gives it."""
        data_cfg = resolve_data_cfg(config, model)
        transform = build_transform(config, data_cfg, training=False)
        return cls(model.to(device).eval(), config, task, list(class_names), transform, tuple(data_cfg["mean"]),
                   tuple(data_cfg["std"]), torch.device(device), label or f"{config.model} · {config.head}")

    @classmethod
    def from_run(cls, run: str | os.PathLike, checkpoint: str | None = None,
                 device: torch.device | str = "cpu") -> "LoadedModel":
        """The model of a run folder written by ``noah train`` (``checkpoint`` as for ``noah eval``)."""
        model, info = load_run(run, checkpoint, device)
        label = f"{info.config.model} · {info.config.head} ({Path(run).name})"
        return cls.from_model(model, info.config, info.task, info.class_names, device, label)

    @classmethod
    def from_weights(cls, name: str, weights: str, head: str = "noah", num_classes: int = 1000,
                     class_names: Sequence[str] | None = None, task: str = "multiclass", image_size: int | None = None,
                     device: torch.device | str = "cpu") -> "LoadedModel":
        """``name`` (a paper model or timm name) with ``weights`` loaded: an official NOAH checkpoint,
        or a ``model.safetensors`` written by ``noah train``; every key must fit."""
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
        config = TrainConfig(model=name, head=head, image_size=image_size)
        model = build_model(config, num_classes)
        load_official_checkpoint(model, weights, strict=True)
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        return cls.from_model(model, config, task, names, device, f"{name} · {head} ({Path(weights).name})")

    @property
    def has_maps(self) -> bool:
        """Whether the head is NOAH's (attention and value maps to show)."""
        return self.model.head_type == "noah"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_images(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """Image files to the model's input batch ``(B, 3, H, W)`` on its device."""
        return torch.stack([self.transform(read_image(p)) for p in paths]).to(self.device)

    def display(self, images: torch.Tensor) -> np.ndarray:
        """Input batch ``(B, 3, H, W)`` back to what it shows: float RGB ``(B, H, W, 3)`` in [0, 1]."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, M)`` from logits: softmax (multi-class) or sigmoid (multi-label)."""
        return logits.float().softmax(-1) if self.task == "multiclass" else logits.float().sigmoid()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, M)`` of an input batch."""
        return self.scores(self.model(images)).cpu()
