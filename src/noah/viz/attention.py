"""NOAH's maps at image size, per class: what Fig. 2 of the paper shows.

For a class ``m`` the head's logit is ``y_m = Σ_n Σ_l A_n[m, l] · V_n[m, l]`` (SPEC §2): the
attention ``A_n`` of each POCA block (a distribution over positions), the value map ``V_n`` and
their product, summed over blocks, whose spatial sum is the logit. These are computed on the
backbone's ``(h, w)`` grid and upsampled bilinearly to the input's ``(H, W)`` for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from noah.errors import ConfigError
from noah.head import NOAHOutput
from noah.viz.loaded import LoadedModel

__all__ = ["ClassMaps", "noah_maps", "upsample", "class_maps", "parse_classes", "choose_classes"]


@dataclass
class ClassMaps:
    """One class's maps for one image, at image size ``(H, W)``.

    ``attention`` is ``(N, H, W)`` (block ``n``'s softmax attention; each block's low-resolution
    map sums to 1), ``value`` is ``Σ_n V_n`` and ``product`` is ``Σ_n A_n ⊙ V_n``, both ``(H, W)``.
    """

    index: int
    name: str
    score: float
    attention: torch.Tensor
    value: torch.Tensor
    product: torch.Tensor

    @property
    def attention_mass(self) -> torch.Tensor:
        """``Σ_n A_n``, ``(H, W)``: where the class's attention goes, all blocks together."""
        return self.attention.sum(0)


@torch.no_grad()
def noah_maps(loaded: LoadedModel, images: torch.Tensor) -> NOAHOutput:
    """Logits ``(B, M)`` and the ``(B, N, M, h, w)`` attention and value maps, on the CPU in float32."""
    if not loaded.has_maps:
        raise ConfigError(f"{loaded.label} has a {loaded.model.head_type} head: attention maps need a NOAH head "
                          "(use it as --baseline for Grad-CAM++ instead)")
    out = loaded.model.forward_with_maps(images)
    return NOAHOutput(*(t.float().cpu() for t in out))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(..., h, w)`` maps to ``(..., H, W)``."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def class_maps(output: NOAHOutput, image: int, classes: Sequence[int], names: Sequence[str],
               scores: torch.Tensor, size: tuple[int, int]) -> list[ClassMaps]:
    """The :class:`ClassMaps` of image ``image`` of a batch for each of ``classes``, at ``size``;
    ``scores`` is the batch's ``(B, M)`` class scores."""
    attention = output.attention[image][:, list(classes)]  # (N, k, h, w)
    value = output.value[image][:, list(classes)]
    up_attention = upsample(attention, size)
    up_value = upsample(value.sum(0), size)
    up_product = upsample((attention * value).sum(0), size)
    return [ClassMaps(c, names[c], float(scores[image, c]), up_attention[:, j], up_value[j], up_product[j])
            for j, c in enumerate(classes)]


def parse_classes(requested: Sequence[str], names: Sequence[str]) -> list[int]:
    """Class indices for ``--classes`` entries, each a class name or an index; a
    :class:`ConfigError` names the first one that is neither."""
    lookup = {n: i for i, n in enumerate(names)}
    indices = []
    for item in requested:
        if item in lookup:
            indices.append(lookup[item])
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
            indices.append(int(item))
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise ConfigError(f"--classes: {item!r} is neither a class name ({shown}) nor an index in "
                              f"0..{len(names) - 1}")
    return list(dict.fromkeys(indices))


def choose_classes(scores: torch.Tensor, task: str, top_k: int, threshold: float) -> list[int]:
    """The classes to show for one image's scores ``(M,)``: the ``top_k`` best (multi-class), or
    every label scoring at least ``threshold``, best first (multi-label; the best one if none does)."""
    order = scores.argsort(descending=True).tolist()
    if task == "multiclass":
        return order[: max(1, min(top_k, len(order)))]
    above = [c for c in order if scores[c] >= threshold]
    return above or order[:1]
