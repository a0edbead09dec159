"""``noah eval`` and the evaluation pass that training runs after every epoch.

Every rank evaluates a disjoint shard of the validation set (:class:`ShardSampler`, no padding)
and torchmetrics gathers the states, so each sample counts exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import replace
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn

from noah.engine.config import add_config_arguments, given_options
from noah.engine.datasets import build_dataset, resolve_data
from noah.engine.distributed import cleanup_distributed, init_distributed
from noah.engine.loaders import batches, eval_loader
from noah.engine.model import load_run
from noah.engine.precision import autocast_factory
from noah.engine.transforms import build_transform, resolve_data_cfg
from noah.errors import DataError
from noah.metrics import ClassificationMetrics

__all__ = ["add_arguments", "run", "evaluate", "format_metrics"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    task: str,
    num_classes: int,
    device: torch.device,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    criterion: nn.Module | None = None,
    threshold: float = 0.5,
    channels_last: bool = False,
) -> dict[str, float]:
    """Run ``model`` (switched to eval mode) over ``loader``; the task's metrics over all ranks.

    Returns ``{"top1", "top5"}`` or ``{"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}`` in percent,
    plus ``loss`` (if ``criterion``) and ``samples``.
    """
    model.eval()
    metrics = ClassificationMetrics(task, num_classes, threshold=threshold, device=device)
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


def format_metrics(metrics: dict[str, float] | None) -> str:
    """``top1 71.23  top5 90.10  loss 1.2345`` -- one line for the terminal."""
    if not metrics:
        return "-"
    parts = []
    for name, value in metrics.items():
        if name == "samples":
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
EVAL_OPTIONS = ("data", "task", "batch_size", "workers", "device", "amp", "threshold", "skip_bad_images")


def run(args: argparse.Namespace) -> int:
    given = given_options(args)
    env = init_distributed(given.get("device", "auto"))
    try:
        model, run_info = load_run(args.run, args.checkpoint, env.device)
        config = replace(run_info.config, **given)
        info = resolve_data(config, env, task=config.task or run_info.task)
        if info.num_classes != run_info.num_classes:
            raise DataError(f"{info.name} has {info.num_classes} classes but the model was trained on "
                            f"{run_info.num_classes}")
        transform = build_transform(config, resolve_data_cfg(config, model), training=False)
        dataset = build_dataset(config, info, args.split, transform)
        loader = eval_loader(dataset, config.batch_size, config.workers, env)
        autocast, _ = autocast_factory(config.amp, env.device)
        criterion = nn.BCEWithLogitsLoss() if info.task == "multilabel" else nn.CrossEntropyLoss()
        metrics = evaluate(model, loader, info.task, info.num_classes, env.device, autocast, criterion,
                           config.threshold)
        if env.is_main:
            if args.json:
                print(json.dumps({"weights": str(run_info.weights), "data": info.name, "split": args.split,
                                  "metrics": metrics}))
            else:
                print(f"{run_info.weights} on {info.name} ({args.split}, {metrics['samples']} images): "
                      f"{format_metrics(metrics)}")
    finally:
        cleanup_distributed()
    return 0
