"""Time two builds of the compiled NOAH kernels side by side in one process.

Usage (from the repository root, the package installed)::

    cp src/noah/_poca*.so /tmp/before.so      # keep the build you start from
    ... change src/noah/csrc, rebuild (python setup.py build_ext --inplace) ...
    python tools/compare_kernels.py /tmp/before.so [--repeats 25] [--dropout 0.1] [--inference] [--threads 1]

Loads ``/tmp/before.so`` as a second copy of ``noah._poca`` next to the current build and, for
the ResNet18 and MobileNetV2 x0.35 head shapes at batch 32, alternates one training step
(the head's forward + backward for a given dlogits, the build as its training kernel) of each build with the training
floor (the three dense matmuls of a linear layer with the same multiply-adds), or with
``--inference`` one no-grad forward of each beside the dense matmul. Prints medians, the ratio
new/old and the largest relative difference of the outputs. Noise on a shared machine moves
single medians by several percent; alternating in one process is what makes the ratio readable.
This is a development tool: ``noah benchmark`` is the measurement the documents quote.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from types import ModuleType
from typing import Callable

import torch

from noah.bench import DEFAULT_SHAPES, _heads, parse_shape
from noah.head import cpu_kernel, cpu_train


def load_build(path: str) -> ModuleType:
    """The extension module at ``path`` (another build of ``noah._poca``), loaded beside the current one."""
    spec = importlib.util.spec_from_file_location("noah._poca", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: {path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_step(build: ModuleType, head: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor
                  ) -> tuple[Callable[[], None], tuple[torch.Tensor, ...]]:
    """One forward + backward of the head (train mode) with ``build`` as its training kernel;
    returns it and its outputs (logits, the input's and the parameters' gradients)."""
    out: list[torch.Tensor] = []

    def step() -> None:
        current, cpu_train._poca = cpu_train._poca, build
        try:
            torch.manual_seed(0)  # the same dropout seed for both builds
            head.zero_grad(set_to_none=True)
            x.grad = None
            logits = head(x)
            logits.backward(grad)
            out[:] = [logits.detach(), x.grad] + [p.grad for p in head.parameters() if p.grad is not None]
        finally:
            cpu_train._poca = current

    step()
    return step, tuple(out)


def inference_step(build: ModuleType, head: torch.nn.Module, x: torch.Tensor
                   ) -> tuple[Callable[[], None], tuple[torch.Tensor, ...]]:
    """One no-grad forward of the head with ``build`` as its inference kernel."""
    out: list[torch.Tensor] = []

    def step() -> None:
        current, cpu_kernel._poca = cpu_kernel._poca, build
        try:
            with torch.no_grad():
                out[:] = [head(x)]
        finally:
            cpu_kernel._poca = current

    step()
    return step, tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="path of the other build's noah._poca shared object")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate of the training steps")
    parser.add_argument("--inference", action="store_true", help="time inference instead of training")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    before, after = load_build(args.before), cpu_kernel._poca
    for shape in DEFAULT_SHAPES:
        c, m, n, r, h, w = parse_shape(shape)
        head = _heads(parse_shape(shape), torch.device("cpu"))["fast"]
        head.eval() if args.inference else head.train()
        if not args.inference:
            head.dropout.p = args.dropout
        torch.manual_seed(0)
        x, grad = torch.randn(args.batch, c, h, w, requires_grad=not args.inference), torch.randn(args.batch, m)
        dense_x, dense_w, dense_dy = torch.randn(args.batch * h * w, c), torch.randn(c, m), torch.randn(args.batch * h * w, m)
        if args.inference:
            runs = {name: inference_step(build, head, x) for name, build in (("before", before), ("after", after))}
            floor: Callable[[], object] = lambda: dense_x @ dense_w
        else:
            runs = {name: training_step(build, head, x, grad) for name, build in (("before", before), ("after", after))}

            def floor() -> None:
                dense_x @ dense_w
                dense_dy @ dense_w.t()
                dense_x.t() @ dense_dy

        fns = {"floor": floor, **{name: step for name, (step, _) in runs.items()}}
        for fn in fns.values():
            fn()
        outputs = {name: [t.clone() for t in out] for name, (_, out) in runs.items()}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                   for a, b in zip(outputs["after"], outputs["before"]))
        print(f"{shape} batch {args.batch}: before/floor {median['before'] / median['floor']:.3f}  "
              f"after/floor {median['after'] / median['floor']:.3f}  after/before {median['after'] / median['before']:.3f}  "
              f"(medians of {args.repeats}; largest relative output difference {diff:.1e})")


if __name__ == "__main__":
    main()
