"""Training curves of one or more runs on one figure, in the style of the paper's Fig. 3.

Three panels, one colour per run: the primary validation metric (top-1 or mAP) per epoch, solid,
with the training one dashed where the run recorded it; the loss, validation solid and training
dashed; and the learning rate at the end of each epoch. The legend names each run by its model
and head (and its folder, where two runs would share a name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, ConfigError
from noah.metrics import primary_metric

__all__ = ["RunCurves", "read_curves", "curves_figure", "METRIC_LABELS"]

METRIC_LABELS = {"top1": "top-1 accuracy (%)", "mAP": "mAP (%)"}


@dataclass
class RunCurves:
    """Per-epoch values of one run (``None`` where an epoch's record lacks the value)."""

    folder: Path
    model: str
    head: str
    task: str
    metric: str
    epochs: list[int] = field(default_factory=list)
    val_metric: list[float | None] = field(default_factory=list)
    train_metric: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model} · {self.head}"


def read_curves(run: str | os.PathLike) -> RunCurves:
    """The curves of a run folder; :class:`CheckpointError` if it is not one or has no finished epoch."""
    run_dir = RunDir(run)
    config = run_dir.read_config()
    task, _ = run_dir.read_classes()
    records = run_dir.read_metrics()
    if not records:
        raise CheckpointError(f"{run_dir.root} has no finished epoch yet ({RunDir.METRICS} is missing or empty)")
    metric = primary_metric(task)
    curves = RunCurves(run_dir.root, config.model, config.head, task, metric)
    for record in sorted(records, key=lambda r: r.get("epoch", 0)):
        train, val = record.get("train") or {}, record.get("val") or {}
        curves.epochs.append(int(record["epoch"]))
        curves.val_metric.append(val.get(metric))
        curves.train_metric.append(train.get(metric))
        curves.val_loss.append(val.get("loss"))
        curves.train_loss.append(train.get("loss"))
        curves.lr.append(train.get("lr"))
    return curves


def _labels(runs: Sequence[RunCurves]) -> list[str]:
    names = [r.name for r in runs]
    return [f"{n} ({r.folder.name})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def _plot(ax, epochs: list[int], values: list[float | None], **style) -> bool:
    points = [(e, v) for e, v in zip(epochs, values) if v is not None]
    if not points:
        return False
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, **style)
    return True


def curves_figure(runs: Sequence[RunCurves], title: str = "") -> Figure:
    """The three-panel figure (metric, loss, learning rate) of ``runs``, which must share their
    primary metric (:class:`ConfigError` otherwise)."""
    metrics = {r.metric for r in runs}
    if len(metrics) > 1:
        kinds = ", ".join(f"{r.folder.name}: {r.metric}" for r in runs)
        raise ConfigError(f"the runs report different metrics ({kinds}); plot multi-class and multi-label runs apart")
    metric = metrics.pop()
    fig = Figure(figsize=(13, 4), layout="constrained")
    ax_metric, ax_loss, ax_lr = fig.subplots(1, 3)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    any_train_metric = False
    for run, colour, label in zip(runs, colours, _labels(runs)):
        _plot(ax_metric, run.epochs, run.val_metric, color=colour, linestyle="-", label=label)
        any_train_metric |= _plot(ax_metric, run.epochs, run.train_metric, color=colour, linestyle="--")
        _plot(ax_loss, run.epochs, run.val_loss, color=colour, linestyle="-", label=label)
        _plot(ax_loss, run.epochs, run.train_loss, color=colour, linestyle="--")
        _plot(ax_lr, run.epochs, run.lr, color=colour, label=label)
    ax_metric.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax_metric.set_title(f"{METRIC_LABELS.get(metric, metric).split(' (')[0]}: validation solid"
                        + (", training dashed" if any_train_metric else " (training not recorded)"), fontsize=10)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss: validation solid, training dashed", fontsize=10)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate (end of epoch)", fontsize=10)
    for ax in (ax_metric, ax_loss, ax_lr):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = ax_metric.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle="-"), Line2D([], [], color="grey", linestyle="--")]
    labels += ["validation", "training"]
    ax_metric.legend(handles, labels, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
