"""Long-tailed, fine-grained classification metrics (iNaturalist): accuracy broken down by
supercategory and by how many training images a class had.

* ``top1`` / ``top5``: the share of validation images whose class is among the top-k scores;
* ``top1/<supercategory>``, ``top5/<supercategory>``: the same over the validation images of one
  supercategory (iNaturalist's per-supercategory table);
* ``top1_many`` / ``top1_medium`` / ``top1_few``: the mean of per-class top-1 accuracy over the
  classes with more than ``many_shot`` (100), between ``few_shot`` (20) and ``many_shot``
  inclusive, and fewer than ``few_shot`` training images: the many/medium/few-shot convention of
  the long-tail literature (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World",
  CVPR 2019), which averages per-class accuracies. A group without a class that has validation
  images is left out of the result.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics.classification import MulticlassStatScores

from noah.errors import ConfigError
from noah.metrics.classification import ClassificationMetrics

__all__ = ["LongTailMetrics", "SHOT_GROUPS", "shot_groups"]

SHOT_GROUPS = ("many", "medium", "few")


def shot_groups(class_counts: Sequence[int], many_shot: int = 100, few_shot: int = 20) -> list[str]:
    """``"many"`` (> ``many_shot`` training images), ``"medium"`` or ``"few"`` (< ``few_shot``) per class."""
    if not 0 < few_shot <= many_shot:
        raise ConfigError(f"need 0 < few_shot <= many_shot, got few_shot={few_shot}, many_shot={many_shot}")
    return ["many" if n > many_shot else "few" if n < few_shot else "medium" for n in class_counts]


class LongTailMetrics(ClassificationMetrics):
    """:class:`ClassificationMetrics` (multi-class) plus the long-tail and supercategory breakdowns.

    Args:
        num_classes: ``M``.
        class_counts: training images per class, ``M`` values (what decides many/medium/few).
        class_supercategory: supercategory index of each class (``M`` values), or ``None``.
        supercategories: the supercategory names those indices point into.
        many_shot, few_shot: the group thresholds (see the module docstring).
        device: where the metric states live.

    ``update(logits (B, M), target (B,), loss=None)`` and ``reset()`` as in the base class;
    ``compute()`` adds ``top1_many``, ``top1_medium``, ``top1_few`` and per supercategory
    ``top1/<name>``, ``top5/<name>`` (percent) after ``top1``/``top5``.
    """

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int],
        class_supercategory: Sequence[int] | None = None,
        supercategories: Sequence[str] = (),
        many_shot: int = 100,
        few_shot: int = 20,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__("multiclass", num_classes, device=device)
        if len(class_counts) != num_classes:
            raise ConfigError(f"class_counts has {len(class_counts)} values for {num_classes} classes")
        if class_supercategory is not None:
            if len(class_supercategory) != num_classes:
                raise ConfigError(f"class_supercategory has {len(class_supercategory)} values for {num_classes} classes")
            if any(not 0 <= s < len(supercategories) for s in class_supercategory):
                raise ConfigError(f"class_supercategory points outside the {len(supercategories)} supercategory names")
        groups = shot_groups(class_counts, many_shot, few_shot)
        self.shot_masks = {g: torch.tensor([x == g for x in groups]) for g in SHOT_GROUPS}
        self.supercategories = list(supercategories)
        self.class_supercategory = None if class_supercategory is None else torch.as_tensor(class_supercategory)
        # per class: [tp, fp, tn, fn, support]; tp = validation images of that class ranked in the top k
        stats = {f"stats{k}": MulticlassStatScores(num_classes, top_k=k, average="none") for k in (1, self.top_k)}
        self._internal |= set(stats)
        self.collection.add_metrics(stats)
        if device is not None:
            self.collection.to(device)

    def compute(self) -> dict[str, float]:
        out = super().compute()
        head = {k: out.pop(k) for k in ("top1", f"top{self.top_k}")}
        correct, support = {}, None
        for k in (1, self.top_k):
            stats = self.collection[f"stats{k}"].compute().cpu()
            correct[k], support = stats[:, 0].double(), stats[:, 4].double()
        seen = support > 0
        for group, mask in self.shot_masks.items():
            keep = mask & seen
            if bool(keep.any()):
                head[f"top1_{group}"] = 100.0 * float((correct[1][keep] / support[keep]).mean())
        if self.class_supercategory is not None:
            for index, name in enumerate(self.supercategories):
                members = self.class_supercategory == index
                total = float(support[members].sum())
                if total > 0:
                    for k in (1, self.top_k):
                        head[f"top{k}/{name}"] = 100.0 * float(correct[k][members].sum()) / total
        return {**head, **out}
