"""Classification metrics of SPEC §6, computed with torchmetrics.

* multi-class: top-1 and top-5 accuracy (micro, i.e. the share of samples);
* multi-label: mAP (mean of average precision over the classes with at least one positive
  validation label: AP is undefined for the others, and counting them as 0 would make mAP
  depend on which classes happen to be absent) and, at a score threshold
  (0.5 by default), CP / CR (per-class precision / recall averaged over classes), OP / OR
  (precision / recall over all image-label pairs), CF1 = 2·CP·CR/(CP+CR), OF1 = 2·OP·OR/(OP+OR).

Multi-label targets may hold :data:`IGNORE_TARGET` (-1) for image-label pairs that count neither
way (Pascal VOC's "difficult"-only labels): every multi-label metric leaves those pairs out. With
``voc_ap=True`` the multi-label metrics add Pascal VOC's interpolated APs (``mAP_11pt``,
``mAP_area``; see :mod:`noah.metrics.voc`).

CF1 is *not* torchmetrics' macro F1 (the mean of per-class F1 scores): it is derived from CP and
CR, as in the multi-label literature. All values are percentages. Under
``torch.distributed`` torchmetrics gathers the states of every rank in ``compute()``, so each
validation sample counts once as long as every rank sees a disjoint shard.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MultilabelAveragePrecision,
    MultilabelPrecision,
    MultilabelPrecisionRecallCurve,
    MultilabelRecall,
    MultilabelStatScores,
)

from noah.errors import ConfigError
from noah.metrics.voc import voc_average_precision
from noah.targets import IGNORE_TARGET

__all__ = ["ClassificationMetrics", "IGNORE_TARGET", "TASKS", "primary_metric"]

TASKS = ("multiclass", "multilabel")


def primary_metric(task: str) -> str:
    """The metric that picks the best checkpoint: ``top1`` (multi-class), ``mAP`` (multi-label and
    re-identification)."""
    return "top1" if task == "multiclass" else "mAP"


def _harmonic(a: float, b: float) -> float:
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


class ClassificationMetrics:
    """Accumulate logits and targets over batches; ``compute()`` gives the task's metrics.

    Args:
        task: ``"multiclass"`` or ``"multilabel"``.
        num_classes: ``M``.
        threshold: score threshold (after a sigmoid) for CP/CR/OP/OR in the multi-label task.
        device: where the metric states live (the device the logits come from).
        voc_ap: multi-label only: also Pascal VOC's 11-point and area APs (``mAP_11pt``, ``mAP_area``).

    ``update(logits, target, loss=None)`` takes logits ``(B, M)`` and targets ``(B,)`` class
    indices (multi-class) or ``(B, M)`` multi-hot (multi-label; 1 positive, 0 negative,
    :data:`IGNORE_TARGET` not counted); ``loss`` is the batch's mean loss.
    ``compute()`` returns floats: ``top1``, ``top5`` or ``mAP``, (``mAP_11pt``, ``mAP_area``),
    ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1`` (percent), plus ``loss`` (mean over samples, if
    given) and ``samples`` (how many samples were counted, over all ranks).
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        threshold: float = 0.5,
        device: torch.device | str | None = None,
        voc_ap: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if voc_ap and task != "multilabel":
            raise ConfigError("voc_ap needs the multilabel task")
        self.task = task
        self.num_classes = num_classes
        self.voc_ap = voc_ap
        # states that feed other values rather than being reported themselves
        self._internal = {"support", "pr_curve"}
        metrics: dict[str, Any] = {"samples": SumMetric(), "loss": MeanMetric()}
        if task == "multiclass":
            metrics["top1"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            self.top_k = min(5, num_classes)
            metrics[f"top{self.top_k}"] = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
        else:
            ignore = {"ignore_index": IGNORE_TARGET}
            metrics["mAP"] = MultilabelAveragePrecision(num_classes, average="none", **ignore)
            metrics["support"] = MultilabelStatScores(num_classes, average="none", **ignore)  # positives per class
            if voc_ap:
                metrics["pr_curve"] = MultilabelPrecisionRecallCurve(num_classes, **ignore)
            for name, cls in (("P", MultilabelPrecision), ("R", MultilabelRecall)):
                metrics[f"C{name}"] = cls(num_classes, threshold=threshold, average="macro", **ignore)
                metrics[f"O{name}"] = cls(num_classes, threshold=threshold, average="micro", **ignore)
        # compute_groups would merge states of metrics it thinks identical; keep them apart.
        self.collection = MetricCollection(metrics, compute_groups=False)
        if device is not None:
            self.collection.to(device)
        self._has_loss = False

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | float | None = None) -> None:
        """Add one batch: ``logits (B, M)``, ``target (B,)`` or ``(B, M)``, optional mean ``loss``."""
        logits = logits.detach().float()
        batch = logits.shape[0]
        for name, metric in self.collection.items():
            if name == "samples":
                metric.update(torch.tensor(float(batch), device=logits.device))
            elif name == "loss":
                if loss is not None:
                    value = loss.detach().float() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
                    metric.update(value.to(logits.device), weight=batch)
                    self._has_loss = True
            elif self.task == "multiclass":
                metric.update(logits, target.long())
            else:
                # Scores, not logits: torchmetrics guesses "logits" per batch from the value range.
                metric.update(logits.sigmoid(), target.long())

    def compute(self) -> dict[str, float]:
        """The metrics over everything seen since the last ``reset()`` (synced across ranks)."""
        out: dict[str, float] = {}
        for name, metric in self.collection.items():
            if (name == "loss" and not self._has_loss) or name in self._internal:
                continue
            if name == "mAP":
                present = self.collection["support"].compute()[:, 4] > 0
                with warnings.catch_warnings():  # about the classes without positives, left out here
                    warnings.filterwarnings("ignore", message="No positive samples found in target")
                    per_class = metric.compute()
                out[name] = 100.0 * float(per_class[present].mean()) if bool(present.any()) else 0.0
                if self.voc_ap:
                    out.update(self._voc_maps(present))
                continue
            value = float(metric.compute())
            out[name] = value if name in ("samples", "loss") else 100.0 * value
        out["samples"] = int(out["samples"])
        if self.task == "multilabel":
            out["CF1"] = _harmonic(out["CP"], out["CR"])
            out["OF1"] = _harmonic(out["OP"], out["OR"])
            order = ["mAP"] + (["mAP_11pt", "mAP_area"] if self.voc_ap else []) + ["CP", "CR", "CF1", "OP", "OR", "OF1"]
        else:
            order = ["top1", f"top{self.top_k}"]
        return {k: out[k] for k in order + [k for k in ("loss", "samples") if k in out]}

    def _voc_maps(self, present: torch.Tensor) -> dict[str, float]:
        """VOC's 11-point and area mAP (percent) over the classes in ``present``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            precisions, recalls, _ = self.collection["pr_curve"].compute()
        out = {}
        for key, method in (("mAP_11pt", "11point"), ("mAP_area", "area")):
            # [:-1]: the last point (precision 1, recall 0) is torchmetrics' addition, no threshold's
            aps = [voc_average_precision(p[:-1], r[:-1], method)
                   for p, r, keep in zip(precisions, recalls, present.tolist()) if keep]
            out[key] = 100.0 * sum(aps) / len(aps) if aps else 0.0
        return out

    def reset(self) -> None:
        self.collection.reset()
        self._has_loss = False
