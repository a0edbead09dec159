"""``noah info MODEL``: what create_model builds for one name."""

from __future__ import annotations

import argparse

import torch

from noah.head import NOAHHead
from noah.head.cpu_kernel import fused_status
from noah.head.cpu_train import train_status
from noah.head.triton_impl import triton_status
from noah.models import HEAD_TYPES, count_parameters, create_model, get_paper_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a paper model (see `noah models`) or any timm model name")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--head", choices=HEAD_TYPES, default="noah")
    parser.add_argument("--num-heads", type=int, default=None, help="override N")
    parser.add_argument("--key-ratio", type=float, default=None, help="override r")
    parser.add_argument("--img-size", type=int, default=None, help="input side (default: the model's)")


def run(args: argparse.Namespace) -> int:
    kwargs = dict(num_classes=args.num_classes, num_heads=args.num_heads, key_ratio=args.key_ratio)
    model = create_model(args.model, head=args.head, **kwargs)
    baseline = create_model(args.model, head="gap", num_classes=args.num_classes) if args.head != "gap" else model
    model.eval()
    size = args.img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    with torch.no_grad():
        fmap = model.forward_features(torch.zeros(1, 3, size, size))
    paper = get_paper_model(args.model)
    lines = [
        ("model", args.model + (" (paper model)" if paper else " (timm backbone)")),
        ("backbone", type(model.backbone).__name__),
        ("head", "GAP + linear" if args.head == "gap" else f"{type(model.head).__name__}({model.head.extra_repr()})"),
        ("feature map", f"(B, {fmap.shape[1]}, {fmap.shape[2]}, {fmap.shape[3]}) at {size}x{size} input"),
        ("params", f"{count_parameters(model) / 1e6:.4f} M (GAP baseline {count_parameters(baseline) / 1e6:.4f} M)"),
    ]
    if isinstance(model.head, NOAHHead):
        lines.append(("CPU kernel", fused_status()))
        lines.append(("CPU training kernel", train_status()))
        lines.append(("GPU kernels", triton_status()))
    if paper:
        lines.append(("paper", f"params {paper.params[0]} / {paper.params[1]} M, top-1 {paper.top1[0]} / {paper.top1[1]} %"))
        if paper.param_note:
            lines.append(("note", paper.param_note))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:>{width}s}  {value}")
    return 0
