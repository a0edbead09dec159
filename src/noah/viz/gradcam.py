"""Grad-CAM++ of a baseline run (the paper's Fig. 2b comparison), from the ``grad-cam`` library.

The library hooks a module whose output is the activation map to explain. The backbones differ
in which module that is (a convolution, a norm layer, a token sequence), so the model is wrapped
to pass the ``(B, C, h, w)`` map that its head consumes (``forward_features``) through an
``nn.Identity`` tap, which is the target layer: the same map for every backbone, and the one
NOAH's attention is computed on.

The library returns each map min-max scaled to [0, 1] and resized (bilinearly) to the input.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from noah.errors import ConfigError
from noah.viz.loaded import LoadedModel

__all__ = ["GradCAMPlusPlusMaps"]


class _FeatureMapTap(nn.Module):
    """``model`` with its head's input feature map passing through ``self.tap``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tap = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.tap(self.model.forward_features(x)))


class GradCAMPlusPlusMaps:
    """Grad-CAM++ maps of a non-NOAH run (e.g. ``head="gap"``) for chosen classes.

    ``maps(images, classes)`` takes an input batch ``(B, 3, H, W)`` and, per image, a list of class
    indices; it returns per image a float32 array ``(len(classes[i]), H, W)`` in [0, 1].
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 32) -> None:
        if loaded.has_maps:
            raise ConfigError(f"--baseline {loaded.label} has a NOAH head; Grad-CAM++ is shown for a GAP-head "
                              "baseline run of the same backbone")
        from pytorch_grad_cam import GradCAMPlusPlus

        self.loaded = loaded
        self.batch_size = batch_size
        self._wrapped = _FeatureMapTap(loaded.model).eval()
        self._cam = GradCAMPlusPlus(model=self._wrapped, target_layers=[self._wrapped.tap])

    def maps(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        pairs = [(i, c) for i, cs in enumerate(classes) for c in cs]
        flat: list[np.ndarray] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            batch = images[[i for i, _ in chunk]]
            targets = [ClassifierOutputTarget(c) for _, c in chunk]
            with torch.enable_grad():
                flat.extend(self._cam(input_tensor=batch, targets=targets))
        out, position = [], 0
        for cs in classes:
            out.append(np.stack(flat[position : position + len(cs)]) if cs else
                       np.zeros((0, *images.shape[-2:]), dtype=np.float32))
            position += len(cs)
        return out

    def close(self) -> None:
        """Remove the library's hooks from the model."""
        self._cam.activations_and_grads.release()
