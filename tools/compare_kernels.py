"""Time two builds of the compiled NOAH kernels side by side in one process.

Usage (from the repository root, the package installed)::

    cp src/noah/_poca*.so /tmp/before.so      # keep the build you start from
    ... change src/noah/csrc, rebuild (python setup.py build_ext --inplace) ...
    python tools/compare_kernels.py /tmp/before.so [--repeats 25] [--dropout 0.1] [--inference] [--threads 1]

Loads ``/tmp/before.so`` as a second copy of ``noah._poca`` next to the current build and, for
the ResNet18 and MobileNetV2 x0.35 head shapes at batch 32, alternates one training step
(forward + backward of the compiled kernel for a given dlogits) of each build with the training
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
from noah.head.cpu_kernel import feature_rows, threads_for
from noah.head.layout import LOG2E


def load_build(path: str) -> ModuleType:
    """The extension module at ``path`` (another build of ``noah._poca``), loaded beside the current one."""
    spec = importlib.util.spec_from_file_location("noah._poca", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: {path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_step(build: ModuleType, head: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, p: float
                  ) -> tuple[Callable[[], None], tuple[torch.Tensor, ...]]:
    """One forward + backward of ``build``'s training kernel; returns it and its output tensors."""
    b, c, h, w = x.shape
    layout = cpu_train.Layout.of(head)
    wk, wv = cpu_train._matrix(head.query.weight), cpu_train._matrix(head.value.weight)
    bv = head.value.bias.detach().contiguous()
    classes = wk.shape[0] // layout.heads
    packed = x.new_empty(build.train_packed_shape(b, h * w, layout.heads, wk.shape[1], wv.shape[1], *layout[1:]))
    stats, logits = x.new_empty(2, b, layout.heads, classes), x.new_empty(b, classes)
    dx, dwk, dwv, dbv = torch.empty_like(x), torch.empty_like(wk), torch.empty_like(wv), torch.empty_like(bv)
    threshold, keep = cpu_train.dropout_threshold(p)
    threads = threads_for(layout.heads * b * h * w * classes)

    def step() -> None:
        build.train_forward(*[t.numpy() for t in (feature_rows(x), packed, wk, wv, bv, stats, logits)], *layout,
                            threshold, keep, 12345, threads, LOG2E)
        build.train_backward(*[t.numpy() for t in (packed, wk, wv, bv, stats, grad, feature_rows(dx), dwk, dwv, dbv)],
                             c, *layout, threshold, keep, 12345, threads, LOG2E, cpu_train.GROUP)

    return step, (logits, dx, dwk, dwv, dbv)


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
        torch.manual_seed(0)
        x, grad = torch.randn(args.batch, c, h, w), torch.randn(args.batch, m)
        dense_x, dense_w, dense_dy = torch.randn(args.batch * h * w, c), torch.randn(c, m), torch.randn(args.batch * h * w, m)
        if args.inference:
            runs = {name: inference_step(build, head, x) for name, build in (("before", before), ("after", after))}
            floor: Callable[[], object] = lambda: dense_x @ dense_w
        else:
            runs = {name: training_step(build, head, x, grad, args.dropout) for name, build in (("before", before), ("after", after))}

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
