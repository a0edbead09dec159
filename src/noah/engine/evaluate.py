"""``noah eval`` and the evaluation pass that training runs after every epoch.

Every rank evaluates a disjoint shard of the validation set (:class:`ShardSampler`, no padding)
and torchmetrics gathers the states, so each sample counts exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from noah.engine.builders import batches
from noah.engine.distributed import ShardSampler, cleanup_distributed, init_distributed, main_rank_first
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
                        help="weights in the run folder (final = model.safetensors, default) or a .pt checkpoint")
    parser.add_argument("--data", default=None, help="dataset to evaluate on (default: the run's)")
    parser.add_argument("--task", choices=["multiclass", "multilabel"], default=None)
    parser.add_argument("--split", choices=["val", "train"], default="val")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto")
    parser.add_argument("--threshold", type=float, default=None, help="multi-label score threshold")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    from noah.data import create_dataset, resolve_dataset
    from noah.engine.builders import autocast_factory, build_transform, load_run, resolve_data_cfg
    from noah.errors import DataError

    env = init_distributed(args.device)
    try:
        model, run_info = load_run(args.run, args.checkpoint, env.device)
        config = dict(run_info.config)
        data = args.data or config["data"]
        from noah.engine.train import builtin_data_kwargs

        data_kwargs = builtin_data_kwargs(config) if args.data is None else {}
        info = main_rank_first(lambda: resolve_dataset(data, task=args.task or run_info.task, **data_kwargs), env)
        if info.num_classes != run_info.num_classes:
            raise DataError(f"{data} has {info.num_classes} classes but the model was trained on {run_info.num_classes}")
        transform = build_transform(config, resolve_data_cfg(config, model), training=False)
        dataset = create_dataset(info, args.split, transform=transform,
                                 on_bad_image="skip" if args.skip_bad_images else "error")
        loader = DataLoader(dataset, batch_size=args.batch_size or config["batch_size"],
                            sampler=ShardSampler(len(dataset), env.rank, env.world_size),
                            num_workers=config["workers"] if args.workers is None else args.workers)
        autocast, _ = autocast_factory(args.amp, env.device)
        criterion = nn.BCEWithLogitsLoss() if info.task == "multilabel" else nn.CrossEntropyLoss()
        threshold = args.threshold if args.threshold is not None else config.get("threshold", 0.5)
        metrics = evaluate(model, loader, info.task, info.num_classes, env.device, autocast, criterion, threshold)
        if env.is_main:
            if args.json:
                print(json.dumps({"weights": run_info.weights, "data": info.name, "split": args.split, "metrics": metrics}))
            else:
                print(f"{run_info.weights} on {info.name} ({args.split}, {metrics['samples']} images): "
                      f"{format_metrics(metrics)}")
    finally:
        cleanup_distributed()
    return 0
