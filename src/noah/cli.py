"""The ``noah`` command.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them up, so a new command is one line in
``COMMANDS``. Errors meant for the user (:class:`noah.errors.NoahError`, missing files, bad
flags) print as one line and exit with status 2; anything else keeps its traceback. A closed
output pipe (``noah models | head``) and Ctrl-C end quietly, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Sequence

from noah.errors import NoahError, RunInterrupted

#: command -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("noah.commands.models", "list the paper's models with their presets and numbers"),
    "info": ("noah.commands.info", "describe one model: backbone, head, parameters, feature map"),
    "benchmark": ("noah.bench", "measure NOAH against the GAP baseline: parameters, MACs, speed"),
    "train": ("noah.engine.train", "train a model (built-in digit scenes by default)"),
    "compare": ("noah.engine.compare", "train heads side by side over seeds and tabulate them with paired tests"),
    "eval": ("noah.engine.evaluate", "evaluate a trained run or checkpoint on a dataset"),
    "predict": ("noah.engine.predict", "classify image files with a trained run"),
    "export": ("noah.engine.export", "write a trained run as a portable model folder, ONNX or TorchScript"),
    "visualize": ("noah.viz.visualize", "show NOAH's attention maps beside a baseline's Grad-CAM++; score them on boxes"),
    "plot": ("noah.viz.plot", "plot the training curves of one or more runs (PNG and SVG)"),
    "report": ("noah.viz.report", "write a self-contained HTML report of runs or a comparison"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, import just that command's module."""
    parser = argparse.ArgumentParser(prog="noah", description="NOAH: Non-glObal Attentive Head for image classifiers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    return parser


def _stdout_closed() -> int:
    """The reader of our output went away (``noah models | head -3``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail too
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "noah"
    try:
        # Import only the chosen command's module: `noah models` should not pay for the trainer.
        chosen = next((a for a in argv if a in COMMANDS), None)
        parser = build_parser(only=chosen)
        args = parser.parse_args(argv)
        command = f"noah {args.command}"
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except RunInterrupted as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except NoahError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
