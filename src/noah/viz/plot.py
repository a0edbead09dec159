"""``noah plot RUN_DIR...``: the training curves of one or more runs on one figure, as PNG and SVG
(see :mod:`noah.viz.curves`)."""

from __future__ import annotations

import argparse

from noah.errors import ConfigError
from noah.viz.curves import curves_figure, read_curves
from noah.viz.figures import figure_bytes
from noah.viz.output import OutputFolder

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `noah train`")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="folder for NAME.png and NAME.svg (default: the run's folder, for one run)")
    parser.add_argument("--name", default="curves", help="file name without extension (default curves)")
    parser.add_argument("--title", default="", help="a title over the figure")
    parser.add_argument("--overwrite", action="store_true", help="replace NAME.png / NAME.svg if they exist")


def run(args: argparse.Namespace) -> int:
    if args.output is None and len(args.runs) > 1:
        raise ConfigError("several runs: pass --output DIR for the figure")
    names = [f"{args.name}.png", f"{args.name}.svg"]
    out = OutputFolder(args.output or args.runs[0], names, args.overwrite)
    fig = curves_figure([read_curves(r) for r in args.runs], args.title)
    for name, fmt in zip(names, ("png", "svg")):
        print(out.write(name, figure_bytes(fig, fmt, dpi=120)))
    return 0
