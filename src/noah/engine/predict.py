"""``noah predict IMAGE... --run DIR``: the top classes (multi-class) or the labels above the
threshold (multi-label), with their scores, for each image."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from noah.data.folders import read_image

__all__ = ["add_arguments", "run", "predict"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--run", metavar="DIR", required=True, help="a run folder written by `noah train`")
    parser.add_argument("--checkpoint", metavar="FILE|best|last|final", default=None,
                        help="the run's own weights (final = model.safetensors, the default; best; last), or a "
                        "weights file or .pt checkpoint (path from the current directory)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (multi-class)")
    parser.add_argument("--threshold", type=float, default=None, help="multi-label score threshold (default: the run's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    transform: Any,
    paths: list[str],
    task: str,
    class_names: list[str],
    device: torch.device,
    top_k: int = 5,
    threshold: float = 0.5,
    batch_size: int = 32,
) -> list[list[tuple[str, float]]]:
    """Per image, ``(class name, score)`` pairs, best first: the ``top_k`` softmax scores
    (multi-class) or every label whose sigmoid score is at least ``threshold`` (multi-label)."""
    logits = torch.cat([
        model(torch.stack([transform(read_image(p)) for p in paths[i : i + batch_size]]).to(device)).float()
        for i in range(0, len(paths), batch_size)
    ])
    results = []
    if task == "multiclass":
        scores, indices = logits.softmax(dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
        for s, i in zip(scores.tolist(), indices.tolist()):
            results.append([(class_names[c], v) for c, v in zip(i, s)])
    else:
        for row in logits.sigmoid().tolist():
            chosen = sorted(((v, c) for c, v in enumerate(row) if v >= threshold), reverse=True)
            results.append([(class_names[c], v) for v, c in chosen])
    return results


def run(args: argparse.Namespace) -> int:
    from noah.engine.distributed import resolve_device
    from noah.engine.model import load_run
    from noah.engine.transforms import build_transform, resolve_data_cfg

    device = resolve_device(args.device)
    model, info = load_run(args.run, args.checkpoint, device)
    transform = build_transform(info.config, resolve_data_cfg(info.config, model), training=False)
    threshold = args.threshold if args.threshold is not None else info.config.threshold
    results = predict(model, transform, args.images, info.task, info.class_names, device, args.top_k, threshold)
    for path, pairs in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": path, "predictions": [{"class": c, "score": s} for c, s in pairs]}))
            continue
        print(path)
        if not pairs:
            print(f"  (no label scores {threshold:.2f} or more)")
        for name, score in pairs:
            print(f"  {score:7.4f}  {name}")
    return 0
