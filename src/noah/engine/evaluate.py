"""``noah eval`` and the evaluation pass that training runs after every epoch.

Every rank evaluates a disjoint shard of the validation set (:class:`ShardSampler`, no padding)
and torchmetrics gathers the states, so each sample counts exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import replace
from typing import Any, Callable, ContextManager, Iterable

import torch
from torch import nn

from noah.data import DatasetInfo
from noah.engine.config import TrainConfig, add_config_arguments, given_options
from noah.engine.datasets import build_dataset, resolve_data
from noah.engine.distributed import DistEnv, cleanup_distributed, init_distributed
from noah.engine.loaders import batches, eval_loader
from noah.engine.model import load_run
from noah.engine.precision import autocast_factory
from noah.engine.transforms import build_transform, resolve_data_cfg
from noah.engine.optim import build_eval_criterion
from noah.errors import ConfigError, DataError
from noah.metrics import ClassificationMetrics, LongTailMetrics, ReIDMetrics

__all__ = ["add_arguments", "run", "evaluate", "evaluate_reid", "build_metrics", "Validation", "format_metrics"]


def build_metrics(info: DatasetInfo, threshold: float, device: torch.device) -> ClassificationMetrics:
    """The metrics the field reports for ``info``'s data: top-1/top-5 (multi-class; iNaturalist
    also per supercategory and by many/medium/few-shot classes), mAP and CP/CR/CF1/OP/OR/OF1 at
    ``threshold`` (multi-label; Pascal VOC also its 11-point and area mAP)."""
    if info.format == "inat":
        return LongTailMetrics(info.num_classes, info.class_counts, info.class_supercategory, info.supercategories,
                               device=device)
    return ClassificationMetrics(info.task, info.num_classes, threshold=threshold, device=device,
                                 voc_ap=info.format == "voc")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    metrics: ClassificationMetrics,
    device: torch.device,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    criterion: nn.Module | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Run ``model`` (switched to eval mode) over ``loader`` into a fresh ``metrics`` object (see
    :func:`build_metrics`); its ``compute()`` over all ranks: e.g. ``{"top1", "top5"}`` or
    ``{"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}`` in percent, plus ``loss`` (if
    ``criterion``) and ``samples``.
    """
    model.eval()
    metrics.reset()
    for images, target in batches(loader):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        logits = logits.float()
        loss = criterion(logits, target) if criterion is not None else None
        metrics.update(logits, target, loss)
    return metrics.compute()


@torch.no_grad()
def evaluate_reid(
    model: nn.Module,
    query_loader: Iterable,
    gallery_loader: Iterable,
    metrics: ReIDMetrics,
    device: torch.device,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    pool: str = "attention",
    channels_last: bool = False,
) -> dict[str, float]:
    """Embed the query and gallery images (``model.forward_embedding(images, pool)``) and match
    them: CMC ``rank1``/``rank5``/``rank10`` and ``mAP`` in percent over all ranks, plus the
    ``queries`` counted and the ``gallery`` size (see :mod:`noah.metrics.reid`)."""
    model.eval()
    metrics.reset()
    for loader, is_query in ((query_loader, True), (gallery_loader, False)):
        for images, target in batches(loader):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                features = model.forward_embedding(images, pool)
            metrics.update(features.float(), target.to(device), query=is_query)
    return metrics.compute()


class Validation:
    """The validation pass of a run: the data (the ``split`` of a classification dataset, or a
    re-ID dataset's query and gallery), this rank's shard of it, and the metrics the field reports.

    Calling it with a model gives the metrics over all ranks (see :func:`evaluate` and
    :func:`evaluate_reid`).
    """

    def __init__(self, config: TrainConfig, info: DatasetInfo, data_cfg: dict, env: DistEnv, split: str = "val") -> None:
        self.config, self.device, self.task = config, env.device, info.task
        transform = build_transform(config, data_cfg, training=False)
        if info.task == "reid":
            if split != "val":
                raise ConfigError(f"re-ID data is evaluated on its query and gallery, not a {split!r} split")
            self.datasets = [build_dataset(config, info, role, transform) for role in ("query", "gallery")]
            self.metrics: Any = ReIDMetrics(config.reid_distance).to(env.device)
            self.criterion = None
        else:
            self.datasets = [build_dataset(config, info, split, transform)]
            self.metrics = build_metrics(info, config.threshold, env.device)
            self.criterion = build_eval_criterion(info.task)
        self.loaders = [eval_loader(d, config.batch_size, config.workers, env) for d in self.datasets]

    @property
    def num_images(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __call__(self, model: nn.Module, autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, float]:
        if self.task == "reid":
            return evaluate_reid(model, *self.loaders, self.metrics, self.device, autocast,
                                 pool=self.config.embedding_pool, channels_last=self.config.channels_last)
        return evaluate(model, self.loaders[0], self.metrics, self.device, autocast, self.criterion,
                        channels_last=self.config.channels_last)


def format_metrics(metrics: dict[str, float] | None) -> str:
    """``top1 71.23  top5 90.10  loss 1.2345`` -- one line for the terminal."""
    if not metrics:
        return "-"
    parts = []
    for name, value in metrics.items():
        if name in ("samples", "queries", "gallery"):
            continue
        parts.append(f"{name} {value:.4f}" if name == "loss" else f"{name} {value:.2f}")
    return "  ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", metavar="DIR", default=None, help="a run folder written by `noah train`")
    parser.add_argument("--checkpoint", metavar="FILE|best|last|final", default=None,
                        help="the run's own weights (final = model.safetensors, the default; best; last), or a "
                        "weights file or .pt checkpoint (path from the current directory)")
    parser.add_argument("--split", choices=["val", "train"], default="val")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_config_arguments(parser, only=EVAL_OPTIONS, default_text="the run's")


#: training options that `noah eval` can override (the rest come from the run)
EVAL_OPTIONS = ("data", "task", "format", "val_split", "difficult", "batch_size", "workers", "device", "amp", "threshold",
                "skip_bad_images", "embedding_pool", "reid_distance")


def run(args: argparse.Namespace) -> int:
    given = given_options(args)
    env = init_distributed(given.get("device", "auto"))
    try:
        model, run_info = load_run(args.run, args.checkpoint, env.device)
        config = replace(run_info.config, **given)
        info = resolve_data(config, env, task=config.task or run_info.task)
        if info.task != "reid" and info.num_classes != run_info.num_classes:
            raise DataError(f"{info.name} has {info.num_classes} classes but the model was trained on "
                            f"{run_info.num_classes}")
        validation = Validation(config, info, resolve_data_cfg(config, model), env, args.split)
        autocast, _ = autocast_factory(config.amp, env.device)
        metrics = validation(model, autocast)
        if env.is_main:
            if args.json:
                print(json.dumps({"weights": str(run_info.weights), "data": info.name, "split": args.split,
                                  "metrics": metrics}))
            else:
                print(f"{run_info.weights} on {info.name} ({args.split}, {validation.num_images} images): "
                      f"{format_metrics(metrics)}")
    finally:
        cleanup_distributed()
    return 0
