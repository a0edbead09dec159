"""``noah models``: the paper's 26 models, their presets, and measured vs printed sizes."""

from __future__ import annotations

import argparse

import torch

from noah.models import count_parameters, create_model, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="", help="only models whose name contains this")


def measured_params(name: str) -> tuple[float, float]:
    """Parameters in millions of the GAP baseline and the NOAH model (1000 classes), built on the meta device."""
    with torch.device("meta"):
        baseline = count_parameters(create_model(name, head="gap"))
        noah = count_parameters(create_model(name, head="noah"))
    return baseline / 1e6, noah / 1e6


def run(args: argparse.Namespace) -> int:
    rows = list_models(args.pattern)
    header = f"{'model':27s} {'family':6s} {'N':>2s} {'r':>5s} {'drop':>4s}  {'params M (paper)':>22s}  {'params M (built)':>16s}  {'top-1 % (paper)':>15s}"
    print(header)
    print("-" * len(header))
    notes = []
    for m in rows:
        base, noah = measured_params(m.name)
        flag = ""
        if m.param_note:
            notes.append(f"{m.name}: {m.param_note}")
            flag = " *"
        print(
            f"{m.name:27s} {m.family:6s} {m.num_heads:2d} {'1/' + str(round(1 / m.key_ratio)):>5s} {m.head_dropout:4.1f}  "
            f"{m.params[0]:9.2f} / {m.params[1]:9.2f}  {base:7.2f} / {noah:6.2f}  {m.top1[0]:6.2f} / {m.top1[1]:6.2f}{flag}"
        )
    if notes:
        print("\n* printed count not reproducible:")
        for note in notes:
            print(f"  {note}")
    print(f"\n{len(rows)} models; build one with noah.create_model(NAME, head='noah'|'gap') or timm.create_model('noah_NAME')")
    return 0
