"""``noah export --run DIR``: a trained run as a portable model folder (and ONNX / TorchScript).

The folder holds ``config.json`` (architecture, head options, classes, task, the run's input
size, mean and std) and ``model.safetensors``, which ``noah.create_model(pretrained=FOLDER)`` and
``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=FOLDER))`` load back;
``--format onnx`` / ``torchscript`` adds ``model.onnx`` / ``model.torchscript.pt``, checked
against PyTorch by the command (see :mod:`noah.export`).
"""

from __future__ import annotations

import argparse
import os

from noah.engine.model import load_run
from noah.engine.transforms import resolve_data_cfg
from noah.export import FORMATS, export_model

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", metavar="DIR", required=True, help="a run folder written by `noah train`")
    parser.add_argument("--checkpoint", metavar="FILE|best|last|final", default=None,
                        help="the run's own weights (final = model.safetensors, the default; best; last), or a "
                        "weights file or .pt checkpoint (path from the current directory)")
    parser.add_argument("--format", choices=FORMATS, default="safetensors",
                        help="safetensors: the model folder only; onnx / torchscript: plus that file, checked")
    parser.add_argument("--output", metavar="FOLDER", default=None,
                        help="a new folder to write (default: DIR/export-FORMAT); never overwritten")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")


def run(args: argparse.Namespace) -> int:
    model, info = load_run(args.run, args.checkpoint)
    output = args.output or os.path.join(args.run, f"export-{args.format}")
    data_cfg = resolve_data_cfg(info.config, model)
    result = export_model(model, output, args.format, class_names=info.class_names, task=info.task,
                          data_config=data_cfg, opset=args.opset)
    print(f"exported {info.weights} ({info.config.model}, {info.config.head} head, {info.num_classes} classes) "
          f"to {result.folder}")
    if result.check is not None:
        print(f"  {result.check.describe()}")
    print(f"  load it with noah.create_model(pretrained={str(result.folder)!r})")
    return 0
