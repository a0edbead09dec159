"""Do the maps point at the objects? The attention-in-box ratio of ``noah visualize --score``.

For every annotated scene and every class present in it, a map of that class -- NOAH's attention
summed over blocks (``Σ_n A_n``), or a baseline's Grad-CAM++ -- is brought to the input's size
and its mass is split into inside and outside the class's boxes. The ratio

    (share of the map's mass inside the boxes) / (share of the image the boxes cover)

is 1.0 for a map that ignores where the object is (a uniform map, or one unrelated to it), and
up to ``1 / share`` for one whose mass lies entirely on the object. The score is the mean ratio
over all (scene, present class) pairs. A map with no mass at all (Grad-CAM++ is zero where every
gradient is negative) counts as chance, and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from noah.data.folders import read_image
from noah.viz.attention import noah_maps, upsample
from noah.viz.boxes import Scene, box_mask, mask_in_input_frame
from noah.viz.loaded import LoadedModel

__all__ = ["BoxScore", "mass_inside", "score_maps", "noah_attention_mass"]

#: (input batch (B, 3, H, W), classes per image) -> per image a (k, H, W) non-negative map per class
MassMaps = Callable[[torch.Tensor, Sequence[Sequence[int]]], Sequence["torch.Tensor | np.ndarray"]]


@dataclass
class BoxScore:
    """The outcome of :func:`score_maps`: means over ``pairs`` (scene, present class) pairs."""

    method: str
    label: str
    pairs: int
    inside: float  # mean share of a map's mass inside its class's boxes
    share: float  # mean share of the input the boxes cover
    ratio: float  # mean of inside / share: 1.0 = chance
    empty: int = 0  # maps without mass, counted as chance

    def describe(self) -> str:
        text = (f"{self.method} of {self.label}: attention-in-box ratio {self.ratio:.2f} (1.0 = chance) over "
                f"{self.pairs} scene-class pairs; {100 * self.inside:.1f}% of the mass inside boxes covering "
                f"{100 * self.share:.1f}% of the image")
        return text + (f"; {self.empty} maps without mass counted as chance" if self.empty else "")

    def to_dict(self) -> dict[str, float | int | str]:
        return dict(method=self.method, run=self.label, pairs=self.pairs, ratio=self.ratio, inside=self.inside,
                    share=self.share, empty=self.empty)


def mass_inside(mass: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Share of a non-negative map's total mass where ``mask`` is true (``None`` if it has no mass)."""
    total = float(mass.sum())
    return float(mass[mask].sum()) / total if total > 0 else None


def noah_attention_mass(loaded: LoadedModel, block: int | None = None) -> MassMaps:
    """NOAH's ``Σ_n A_n`` (or only block ``block``'s ``A_n``, 0-based) per requested class,
    upsampled to the input (a :data:`MassMaps`)."""
    blocks = slice(None) if block is None else slice(block, block + 1)

    def maps(images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        output = noah_maps(loaded, images)
        size = (images.shape[-2], images.shape[-1])
        return [upsample(output.attention[i][blocks, list(cs)].sum(0), size) for i, cs in enumerate(classes)]

    return maps


def score_maps(loaded: LoadedModel, scenes: Sequence[Scene], maps: MassMaps, method: str,
               batch_size: int = 32) -> BoxScore:
    """Mean attention-in-box ratio of ``maps`` (computed with ``loaded``'s input transform) over
    every (scene, present class) pair of ``scenes``. Boxes that the transform crops away entirely
    are left out."""
    ratios, insides, shares, empty = [], [], [], 0
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        pictures = [read_image(s.path) for s in chunk]
        images = torch.stack([loaded.transform(p) for p in pictures]).to(loaded.device)
        classes, masks = [], []
        for scene, picture in zip(chunk, pictures):
            kept = []
            for c, boxes in sorted(scene.boxes.items()):
                mask = mask_in_input_frame(box_mask(picture.size, boxes), loaded.transform, loaded.mean, loaded.std)
                if mask.any():
                    kept.append(c)
                    masks.append(mask)
            classes.append(kept)
        flat = [torch.as_tensor(m) for per_image in maps(images, classes) for m in per_image]
        for mass, mask in zip(flat, masks):
            share = float(mask.float().mean())
            inside = mass_inside(mass.clamp(min=0).cpu(), mask)
            if inside is None:
                empty += 1
                inside = share
            ratios.append(inside / share)
            insides.append(inside)
            shares.append(share)
    n = len(ratios)
    mean = (lambda v: float(np.mean(v))) if n else (lambda v: float("nan"))
    return BoxScore(method, loaded.label, n, mean(insides), mean(shares), mean(ratios), empty)
