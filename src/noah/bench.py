"""``noah benchmark``: what NOAH costs next to the GAP baseline, and what the head alone costs.

Three modes, each printing a table and (with ``--output DIR``) writing CSV and Markdown:

* default -- for the paper's models (``--models a,b``; all 26 of `noah models` by default) build the GAP baseline
  and the NOAH model and measure parameters, multiply-adds (torch's FLOP counter, MACs =
  FLOPs / 2, at batch 1), single-thread batch-1 latency and throughput at ``--batch-size`` on
  ``--device``, with the NOAH/baseline overhead. Baseline and NOAH runs alternate inside each
  repeat (in reverse order every other repeat); times are medians over the repeats, and ratios
  and overheads the median of the per-repeat ratios, so load on a shared machine hits both alike
  and its drift over the run cancels out.
* ``--head-only`` -- for head shapes ``C,M,N,r,H,W`` (``--shapes``): inference time of the fast
  head, the plain formulation and the "matmul floor", one dense ``(B*L, C) @ (C, M)`` matmul with
  the same multiply-add count, interleaved in one process; plus one training step (forward +
  backward) of the plain, fast and lean paths.
* ``--memory`` -- peak memory of one training step of a head per implementation, each in a fresh
  subprocess: growth of the resident set (``VmHWM`` after resetting it) over the step.

``--train`` turns each mode to training:

* ``--train`` -- for the paper's models (or ``--models``): one SGD step (forward, cross-entropy,
  backward, optimizer step) of the GAP baseline and of the NOAH model in train mode, interleaved,
  with the overhead's quartiles over the repeats; where the compiled kernel is in use, also of
  the NOAH model with it disabled (``noah_torch``: the PyTorch autograd path).
* ``--train --head-only`` -- forward + backward of the head alone beside the "training floor",
  the three dense matmuls a linear layer with the same multiply-adds needs for forward and
  backward (``X @ W``, ``dY @ W^T``, ``X^T @ dY`` with ``X`` ``(B*L, C)``, ``W`` ``(C, M)``).
* ``--train --memory`` -- peak memory of one training step of the GAP and NOAH models (and NOAH
  without the kernel), each in a fresh subprocess, and what the head saves for backward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from noah.allocator import allocator_status, keep_freed_memory
from noah.errors import ConfigError
from noah.head.cpu_kernel import fused_available, fused_status, kernel_disabled
from noah.head.cpu_train import train_available, train_status
from noah.head.triton_impl import fast_uses_triton, triton_disabled
from noah.models.cost import count_macs
from noah.tables import cpu_name as _cpu_name
from noah.tables import emit_table as _emit

__all__ = ["add_arguments", "run", "parse_shape", "HeadShape", "DEFAULT_SHAPES", "PAPER_RUNTIME"]

#: (C, M, N, r, H, W): the ResNet18 and MobileNetV2 x0.35 heads of the paper
DEFAULT_SHAPES = ("512,1000,4,1/2,7,7", "1280,1000,8,1/4,7,7")
#: the memory-lean showcase: ViT-B/16 tokens (14x14) with ImageNet-21k's 21,841 classes
DEFAULT_MEMORY_SHAPE = "768,21841,4,1/2,14,14"

#: Table XVII of the paper (SPEC §8): FPS as (baseline, NOAH)
PAPER_RUNTIME = {
    "resnet18": {"gpu": (2394, 2118), "cpu": (12.98, 12.20)},
    "mobilenetv2_035": {"gpu": (3577, 2850), "cpu": (36.09, 28.60)},
    "deit_tiny_050_patch16_224": {"gpu": (2170, 1645)},
}


class HeadShape(tuple):
    """``(C, M, N, r, H, W)`` of a NOAH head."""

    __slots__ = ()

    def __new__(cls, c: int, m: int, n: int, r: float, h: int, w: int) -> "HeadShape":
        return super().__new__(cls, (c, m, n, r, h, w))

    def __str__(self) -> str:
        c, m, n, r, h, w = self
        return f"C={c} M={m} N={n} r={Fraction(r).limit_denominator(64)} {h}x{w}"


def parse_shape(text: str) -> HeadShape:
    """``"C,M,N,r,H,W"`` (``r`` as ``0.25`` or ``1/4``) to a :class:`HeadShape`, else ConfigError."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 6:
        raise ConfigError(f"malformed head shape {text!r}: expected C,M,N,r,H,W such as 512,1000,4,1/2,7,7")
    try:
        c, m, n, h, w = (int(parts[i]) for i in (0, 1, 2, 4, 5))
        r = float(Fraction(parts[3]))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"malformed head shape {text!r}: C, M, N, H, W must be integers and r a number") from None
    if min(c, m, n, h, w) <= 0:
        raise ConfigError(f"malformed head shape {text!r}: sizes must be positive")
    from noah.head import split_channels

    split_channels(c, n, r)  # raises ConfigError for splits that cannot work
    return HeadShape(c, m, n, r, h, w)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"malformed {what} {text!r}: expected comma-separated integers") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"malformed {what} {text!r}: expected positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--head-only", action="store_true", help="time the head alone: fast vs plain vs matmul floor")
    mode.add_argument("--memory", action="store_true",
                      help="peak memory of one head training step per implementation (with --train: of whole models)")
    parser.add_argument("--train", action="store_true",
                        help="training instead of inference: whole-model SGD steps, with --head-only the head's "
                             "forward + backward against the training floor, with --memory whole-model peak memory")
    parser.add_argument("--models", default=None, help="comma-separated model names (default: the 26 of `noah models`)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="C,M,N,r,H,W",
                        help=f"head shapes for --head-only / --memory (default {' '.join(DEFAULT_SHAPES)} / {DEFAULT_MEMORY_SHAPE})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch for model runs (default 32); training batch for --memory (default 8; 32 with --train)")
    parser.add_argument("--head-batches", default="1,32", help="batch sizes for --head-only (default 1,32)")
    parser.add_argument("--impls", default="plain,fast,lean", help="implementations for --memory (default plain,fast,lean)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none",
                        help="--train (whole models): run forward and loss under autocast in this dtype (default none)")
    parser.add_argument("--img-size", type=int, default=None, help="input side for model runs (default: each model's)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed runs; medians of times and of per-repeat ratios are reported (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for throughput/head timings (default: torch's)")
    parser.add_argument("--no-latency", action="store_true", help="skip the single-thread batch-1 latency")
    parser.add_argument("--no-train", action="store_true", help="--head-only: skip the training-step timings")
    parser.add_argument("--output", type=Path, default=None, help="directory for CSV and Markdown results")


# -- timing -----------------------------------------------------------------------------------


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings:
    """Seconds per call of each timed function, one sample per repeat: ``samples[name][i]`` is
    repeat ``i``'s. Ratios are read repeat by repeat (each call against its neighbour in the same
    repeat), so a shared machine's drift over the run cancels out of them."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        self.samples = samples

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratios(self, a: str, b: str) -> list[float]:
        """``a / b`` in every repeat."""
        return [x / y for x, y in zip(self.samples[a], self.samples[b])]

    def ratio(self, a: str, b: str) -> float:
        """The median of the per-repeat ratios ``a / b``."""
        return statistics.median(self.ratios(a, b))

    def ratio_quartiles(self, a: str, b: str) -> tuple[float, float]:
        """First and third quartiles of the per-repeat ratios ``a / b`` (both the ratio itself
        with a single repeat)."""
        ratios = self.ratios(a, b)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q1, q3


def _how_read(repeats: int, warmup: int) -> str:
    """How a table's times and ratios were read, for its notes."""
    return (f"{repeats} interleaved repeats after {warmup} warm-up runs (the order reversed every other repeat): "
            "times are medians, ratios and overheads the median of the per-repeat ratios")


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device) -> Timings:
    """Seconds per call of each function, the functions alternating within every repeat, in
    reverse order every other repeat (so no function always runs right after the same one)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return Timings(samples)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; expected cpu or cuda")
    return device


# -- output -----------------------------------------------------------------------------------


def _environment(device: torch.device, threads: int | None) -> str:
    cpu = _cpu_name()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu}, {os.cpu_count()} CPUs"
    return (
        f"machine: {where}; torch {torch.__version__}; torch threads {threads or torch.get_num_threads()}; "
        f"fused CPU kernel: {fused_status()}; malloc: {allocator_status()}"
    )


# -- whole models -----------------------------------------------------------------------------


def _model_names(text: str | None) -> list[str]:
    import timm

    from noah.models import get_paper_model, list_models

    if text is None:
        return [m.name for m in list_models()]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--models is empty; give comma-separated names (see `noah models`)")
    for name in names:
        if get_paper_model(name) is None and not timm.is_model(name):
            raise ConfigError(f"unknown model {name!r}: expected one of the paper's models (`noah models`) or a timm model name")
    return names


def _benchmark_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from noah.models import count_parameters, create_model

    torch.manual_seed(0)
    base = create_model(name, num_classes=args.num_classes, head="gap").eval()
    torch.manual_seed(0)
    noah = create_model(name, num_classes=args.num_classes, head="noah").eval()
    size = args.img_size or noah.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    one = torch.randn(1, 3, size, size)
    row: dict[str, Any] = {
        "model": name,
        "params_base_M": count_parameters(base) / 1e6,
        "params_noah_M": count_parameters(noah) / 1e6,
        "macs_base_G": count_macs(base, one) / 1e9,
        "macs_noah_G": count_macs(noah, one) / 1e9,
    }
    with torch.no_grad():
        if not args.no_latency:
            with _threads(1):
                t = time_interleaved({"base": lambda: base(one), "noah": lambda: noah(one)}, args.warmup, args.repeats, torch.device("cpu"))
            row["lat_base_ms"], row["lat_noah_ms"] = t.median("base") * 1e3, t.median("noah") * 1e3
            row["lat_overhead_%"] = (t.ratio("noah", "base") - 1) * 100
        base.to(device)
        noah.to(device)
        batch = torch.randn(args.batch_size, 3, size, size, device=device)
        with _threads(args.threads):
            t = time_interleaved({"base": lambda: base(batch), "noah": lambda: noah(batch)}, args.warmup, args.repeats, device)
        row["fps_base"], row["fps_noah"] = args.batch_size / t.median("base"), args.batch_size / t.median("noah")
        row["speed_ratio"] = t.ratio("base", "noah")
        row["thr_overhead_%"] = (t.ratio("noah", "base") - 1) * 100
    return row


def _per_model(args: argparse.Namespace, device: torch.device, benchmark: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """``benchmark(name, args, device)``'s row for each model of ``--models``, with progress on stderr."""
    rows = []
    for name in _model_names(args.models):
        start = time.perf_counter()
        rows.append(benchmark(name, args, device))
        print(f"  {name}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _run_models(args: argparse.Namespace) -> int:
    device = _device(args.device)
    rows = _per_model(args, device, _benchmark_model)
    notes = [
        _environment(device, args.threads),
        f"latency: batch 1, 1 thread, CPU; throughput: batch {args.batch_size} on {device}; "
        f"{_how_read(args.repeats, args.warmup)}; MACs at batch 1",
    ]
    _emit(rows, "NOAH vs GAP baseline", "benchmark", args.output, notes)
    return 0


#: --amp: the autocast dtype of a training step (None: float32 throughout)
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sgd_step(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor,
              amp: torch.dtype | None = None) -> Callable[[], None]:
    """One training step of ``model``: forward, cross-entropy (under autocast in ``amp``, with
    loss scaling for float16), backward, SGD (momentum) update."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    device = images.device.type
    scaler = torch.amp.GradScaler(device, enabled=amp == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(images), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _without_kernels_step(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with the head on its PyTorch path: no compiled CPU kernel, no Triton kernel."""
    def run() -> None:
        with kernel_disabled(), triton_disabled():
            step()

    return run


def _benchmark_training(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from noah.models import create_model

    models = {}
    for head in ("gap", "noah"):
        torch.manual_seed(0)  # the same backbone initialisation
        models[head] = create_model(name, num_classes=args.num_classes, head=head)
    size = args.img_size or models["noah"].pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    one = torch.randn(1, 3, size, size)
    macs = {}
    for head, model in models.items():
        macs[head] = count_macs(model.eval(), one) / 1e9
        model.to(device).train()
    torch.manual_seed(1)
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    target = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    runs = {head: _sgd_step(model, images, target, AMP_DTYPES[args.amp]) for head, model in models.items()}
    with_kernel = _kernel_for_training(device, args.amp)
    with _threads(args.threads):
        t = time_interleaved(runs, args.warmup, args.repeats, device)
        # the PyTorch head's maps churn memory for whatever runs next: timed in a pass of its own
        slow = time_interleaved({"gap": runs["gap"], "noah_torch": _without_kernels_step(runs["noah"])},
                                args.warmup, args.repeats, device) if with_kernel else None
    row: dict[str, Any] = {
        "model": name, "batch": args.batch_size, "macs_base_G": macs["gap"], "macs_noah_G": macs["noah"],
        "step_base_ms": t.median("gap") * 1e3, "step_noah_ms": t.median("noah") * 1e3,
        "train_overhead_%": (t.ratio("noah", "gap") - 1) * 100,
    }
    q1, q3 = t.ratio_quartiles("noah", "gap")
    row["overhead_q1_%"], row["overhead_q3_%"] = (q1 - 1) * 100, (q3 - 1) * 100
    if slow is not None:
        row["step_noah_torch_ms"] = slow.median("noah_torch") * 1e3
        row["torch_overhead_%"] = (slow.ratio("noah_torch", "gap") - 1) * 100
    return row


def _kernel_for_training(device: torch.device, amp: str = "none") -> bool:
    """Whether NOAH's default training path on ``device`` is a kernel (compiled CPU or Triton);
    the compiled CPU kernel is float32 only, so not under autocast."""
    if device.type == "cuda":
        return fast_uses_triton(device)
    return train_available() and amp == "none"


def _run_training(args: argparse.Namespace) -> int:
    device = _device(args.device)
    rows = _per_model(args, device, _benchmark_training)
    kernel = "the Triton kernels" if device.type == "cuda" else "the compiled kernel"
    amp = "" if args.amp == "none" else f", forward and loss under {args.amp} autocast"
    notes = [
        _environment(device, args.threads) + f"; fused CPU training kernel: {train_status()}",
        f"one training step = forward + cross-entropy + backward + SGD step{amp}, train mode (the paper's head "
        f"dropout), batch {args.batch_size}, random {args.num_classes}-class data; "
        f"{_how_read(args.repeats, args.warmup)}; overhead = NOAH step / GAP step - 1, "
        "overhead_q1/q3: its first and third quartiles over the repeats"
        + (f"; noah_torch: the NOAH model with {kernel} disabled (PyTorch autograd head), timed against gap in a "
           "pass of its own"
           if _kernel_for_training(device, args.amp) else ""),
    ]
    _emit(rows, "NOAH vs GAP baseline, training", "train", args.output, notes)
    return 0


# -- head only --------------------------------------------------------------------------------


def _heads(shape: HeadShape, device: torch.device) -> dict[str, Any]:
    from noah.head import NOAHHead

    c, m, n, r, _, _ = shape
    torch.manual_seed(0)
    fast = NOAHHead(c, m, n, r).to(device)
    heads = {"fast": fast}
    for impl in ("plain", "lean"):
        head = NOAHHead(c, m, n, r, impl=impl).to(device)
        head.load_state_dict(fast.state_dict())
        heads[impl] = head
    return heads


def _run_head_only(args: argparse.Namespace) -> int:
    device = _device(args.device)
    shapes = [parse_shape(s) for s in (args.shapes or DEFAULT_SHAPES)]
    batches = _int_list(args.head_batches, "--head-batches")
    with_kernel = device.type == "cpu" and fused_available()
    rows = []
    for shape in shapes:
        c, m, n, r, h, w = shape
        heads = _heads(shape, device)
        for b in batches:
            x = torch.randn(b, c, h, w, device=device)
            dense_x = torch.randn(b * h * w, c, device=device)
            dense_w = torch.randn(c, m, device=device)
            with torch.no_grad(), _threads(args.threads):
                for head in heads.values():
                    head.eval()
                error = (heads["fast"](x) - heads["plain"](x)).abs().max() / heads["plain"](x).abs().max()

                def floor() -> torch.Tensor:
                    return dense_x @ dense_w

                others = {"plain": lambda: heads["plain"](x)}
                if with_kernel:
                    others["fast_torch"] = lambda: _without_kernel(heads["fast"], x)
                columns = _against_floor(floor, lambda: heads["fast"](x), others, args, device)
            row: dict[str, Any] = {"shape": str(shape), "batch": b, **columns}
            row["fast_vs_plain_rel_err"] = float(error)
            if not args.no_train:
                row.update(_train_times(heads, x, args, device))
            rows.append(row)
    notes = [
        _environment(device, args.threads),
        "floor: one dense (B*L, C) @ (C, M) matmul with the same multiply-adds; inference under torch.no_grad(); "
        + ("fast_torch: the fast head with its compiled kernel disabled (PyTorch ops only); " if with_kernel else "")
        + "floor and fast are timed as a pair, the other heads against floor in a pass of their own; "
        + "fast/floor_q1/q3: the first and third quartiles of fast/floor over the repeats; "
        + f"train_*: forward + backward of a sum loss in train mode ({_train_repeats(args)} repeats); "
        + _how_read(args.repeats, args.warmup),
    ]
    _emit(rows, "NOAH head alone", "head_only", args.output, notes)
    return 0


def _against_floor(floor: Callable[[], Any], fast: Callable[[], Any], others: dict[str, Callable[[], Any]],
                   args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """A head row's timings: ``fast`` beside ``floor`` alone, then ``others`` against ``floor`` in
    a pass of their own (the PyTorch-path heads' maps churn memory for whatever runs next);
    medians in ms, ratios to the floor, and fast/floor's first and third quartiles."""
    pair = time_interleaved({"floor": floor, "fast": fast}, args.warmup, args.repeats, device)
    rest = time_interleaved({"floor": floor, **others}, args.warmup, args.repeats, device)
    row = {"floor_ms": pair.median("floor") * 1e3, "fast_ms": pair.median("fast") * 1e3}
    row.update({f"{k}_ms": rest.median(k) * 1e3 for k in others})
    row["fast/floor"] = pair.ratio("fast", "floor")
    row.update({f"{k}/floor": rest.ratio(k, "floor") for k in others})
    row["fast/floor_q1"], row["fast/floor_q3"] = pair.ratio_quartiles("fast", "floor")
    return row


def _without_kernel(head: Any, x: torch.Tensor) -> torch.Tensor:
    with kernel_disabled():
        return head(x)


def _train_repeats(args: argparse.Namespace) -> int:
    """Repeats of --head-only's training columns: half of --repeats, at least 3."""
    return max(3, args.repeats // 2)


def _train_times(heads: dict[str, Any], x: torch.Tensor, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    xg = x.clone().requires_grad_()

    def step(head: Any) -> Callable[[], None]:
        def fn() -> None:
            head.zero_grad(set_to_none=True)
            head(xg).sum().backward()

        return fn

    for head in heads.values():
        head.train()
    with _threads(args.threads):
        t = time_interleaved({k: step(h) for k, h in heads.items()}, max(1, args.warmup // 2), _train_repeats(args), device)
    return {f"train_{k}_ms": t.median(k) * 1e3 for k in heads}


def _head_step(head: Any, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        head.zero_grad(set_to_none=True)
        x.grad = None
        head(x).backward(grad)

    return step


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def _gradient_error(heads: dict[str, Any], x: torch.Tensor, grad: torch.Tensor) -> float:
    """Largest relative difference of the fast head's gradients (x and weights) from plain's."""
    found = {}
    for name in ("fast", "plain"):
        _head_step(heads[name], x, grad)()
        found[name] = [x.grad.clone()] + [heads[name].get_parameter(p).grad.clone() for p in ("query.weight", "value.weight", "value.bias")]
    return max(_relative_error(a, b) for a, b in zip(found["fast"], found["plain"]))


def _run_head_training(args: argparse.Namespace) -> int:
    device = _device(args.device)
    shapes = [parse_shape(s) for s in (args.shapes or DEFAULT_SHAPES)]
    batches = _int_list(args.head_batches, "--head-batches")
    with_kernel = device.type == "cpu" and train_available()
    rows = []
    for shape in shapes:
        c, m, n, r, h, w = shape
        heads = _heads(shape, device)
        for head in heads.values():
            head.train()
        for b in batches:
            torch.manual_seed(1)
            x = torch.randn(b, c, h, w, device=device, requires_grad=True)
            grad = torch.randn(b, m, device=device)
            dense_x, dense_w = torch.randn(b * h * w, c, device=device), torch.randn(c, m, device=device)
            dense_dy = torch.randn(b * h * w, m, device=device)

            def floor() -> None:
                dense_x @ dense_w
                dense_dy @ dense_w.t()
                dense_x.t() @ dense_dy

            fast = _head_step(heads["fast"], x, grad)
            others = {"fast_torch": _without_kernels_step(fast)} if with_kernel else {}
            others.update({k: _head_step(heads[k], x, grad) for k in ("plain", "lean")})
            with _threads(args.threads):
                error = _gradient_error(heads, x, grad)
                columns = _against_floor(floor, fast, others, args, device)
            row: dict[str, Any] = {"shape": str(shape), "batch": b, **columns, "grad_rel_err": error}
            rows.append(row)
    notes = [
        _environment(device, args.threads) + f"; fused CPU training kernel: {train_status()}",
        "floor: the three dense matmuls of a linear layer with the same multiply-adds, forward + backward "
        "((B*L, C) @ (C, M), dY @ W^T, X^T @ dY); the heads: forward + backward for a given dlogits, train mode, "
        "no dropout"
        + ("; fast: the compiled training kernel; fast_torch: the same head with the kernel disabled" if with_kernel else "")
        + "; floor and fast are timed as a pair, the other heads against floor in a pass of their own"
        + "; grad_rel_err: fast vs plain, largest relative difference of dX, dWk, dWv, dbv; "
        + _how_read(args.repeats, args.warmup)
        + "; fast/floor_q1/q3: the first and third quartiles of fast/floor over the repeats",
    ]
    _emit(rows, "NOAH head alone, training", "head_train", args.output, notes)
    return 0


# -- memory -----------------------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def memory_child(shape: str, impl: str, batch: int, device: str) -> dict[str, Any]:
    """One training step of a head in this process; returns peak memory growth and time.

    On CPU: growth of the resident set's high-water mark over the step (``VmHWM`` reset through
    ``/proc/self/clear_refs`` just before it). On CUDA: ``torch.cuda.max_memory_allocated``.
    """
    from noah.head import NOAHHead

    c, m, n, r, h, w = parse_shape(shape)
    dev = torch.device(device)
    # initialise the math libraries and thread pools on a tiny head first
    warm = NOAHHead(c, 8, n, r, impl=impl).to(dev).train()
    warm(torch.randn(2, c, h, w, device=dev, requires_grad=True)).sum().backward()
    head = NOAHHead(c, m, n, r, impl=impl).to(dev).train()
    x = torch.randn(batch, c, h, w, device=dev, requires_grad=True)
    target = torch.randint(0, m, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    torch.nn.functional.cross_entropy(head(x), target).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        peak = _rss_kib("VmHWM") * 1024
    seconds = time.perf_counter() - start
    return {"peak_MiB": (peak - before) / 2**20, "step_s": seconds}


def _run_memory(args: argparse.Namespace) -> int:
    device = _device(args.device)
    shapes = [parse_shape(s) for s in (args.shapes or [DEFAULT_MEMORY_SHAPE])]
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    from noah.head import available_impls

    for impl in impls:
        if impl not in available_impls():
            raise ConfigError(f"unknown head impl {impl!r} in --impls; expected some of {', '.join(available_impls())}")
    if device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
        raise ConfigError("--memory on CPU needs Linux's /proc/self/clear_refs to measure peak memory")
    rows = []
    for shape in shapes:
        c, m, n, r, h, w = shape
        spec = f"{c},{m},{n},{r},{h},{w}"
        maps = n * m * args.batch_size * h * w * 4 / 2**20
        for impl in impls:
            code = (
                "import json, sys, torch\n"
                + (f"torch.set_num_threads({args.threads})\n" if args.threads else "")
                + "from noah.bench import memory_child\n"
                + f"print(json.dumps(memory_child({spec!r}, {impl!r}, {args.batch_size}, {str(device)!r})))\n"
            )
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            measured, status = {"peak_MiB": float("nan"), "step_s": float("nan")}, "ok"
            if result.returncode == 0:
                measured = json.loads(result.stdout.strip().splitlines()[-1])
            else:
                status = "failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"shape": str(shape), "batch": args.batch_size, "impl": impl, "peak_MiB": measured["peak_MiB"],
                   "one_map_MiB": maps, "step_s": measured["step_s"], "status": status}
            rows.append(row)
            print(f"  {shape} batch {args.batch_size} {impl}: {row['status']}", file=sys.stderr, flush=True)
    how = "growth of peak RSS (VmHWM) over one step" if device.type == "cpu" else "torch.cuda.max_memory_allocated over one step"
    notes = [
        _environment(device, args.threads),
        f"one training step (cross-entropy forward + backward, train mode) of the head alone in a fresh process; "
        f"peak_MiB = {how}; one_map_MiB = size of one float32 (B, N, M, L) map",
    ]
    _emit(rows, "NOAH head training memory", "memory", args.output, notes)
    return 0


def train_memory_child(name: str, head: str, batch: int, num_classes: int, img_size: int | None) -> dict[str, Any]:
    """Two SGD steps of model ``name`` in this process; the second's peak resident-set growth.

    The first step allocates gradients and optimizer state; then the memory it freed goes back to
    the system (glibc's ``malloc_trim``, else it would stay resident and hide the second step's
    allocations) and ``VmHWM`` is reset through ``/proc/self/clear_refs``. Also reports what the
    head saved for backward (tensors other than parameters, counted once each).
    """
    from noah.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, head=head).train()
    size = img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    images = torch.randn(batch, 3, size, size)
    target = torch.randint(0, num_classes, (batch,))
    step = _sgd_step(model, images, target)
    step()
    saved = _saved_by(model.head, step)
    _return_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM") * 1024
    return {"peak_MiB": (peak - before) / 2**20, "head_saved_MiB": saved / 2**20, "step_s": seconds}


def _return_freed_memory() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed memory may stay resident
        pass


def _saved_by(module: torch.nn.Module, step: Callable[[], None]) -> int:
    """Bytes of the tensors (not parameters) that autograd saves while ``module`` runs in ``step``."""
    params = {p.data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}
    inside = [False]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if inside[0] and tensor.data_ptr() not in params:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    hooks = [module.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
             module.register_forward_hook(lambda *_: inside.__setitem__(0, False))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        for hook in hooks:
            hook.remove()
    return sum(seen.values())


def _run_training_memory(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if device.type != "cpu":
        raise ConfigError("--train --memory measures CPU memory (peak RSS); use --device cpu")
    if not Path("/proc/self/clear_refs").exists():
        raise ConfigError("--memory on CPU needs Linux's /proc/self/clear_refs to measure peak memory")
    variants = {"gap": ("gap", False), "noah": ("noah", False)}
    if train_available():
        variants["noah_torch"] = ("noah", True)
    rows = []
    for name in _model_names(args.models):
        row: dict[str, Any] = {"model": name, "batch": args.batch_size}
        for variant, (head, disable) in variants.items():
            code = (
                "import json, torch\n"
                + (f"torch.set_num_threads({args.threads})\n" if args.threads else "")
                + "from noah.bench import train_memory_child\n"
                + f"print(json.dumps(train_memory_child({name!r}, {head!r}, {args.batch_size}, {args.num_classes}, "
                f"{args.img_size!r})))\n"
            )
            env = {**os.environ, "NOAH_DISABLE_KERNEL": "1"} if disable else None
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            measured = {"peak_MiB": float("nan"), "head_saved_MiB": float("nan"), "step_s": float("nan")}
            if result.returncode == 0:
                measured = json.loads(result.stdout.strip().splitlines()[-1])
            else:
                row["status"] = "failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1]
            row[f"peak_{variant}_MiB"] = measured["peak_MiB"]
            if head == "noah":
                row[f"head_saved_{variant}_MiB"] = measured["head_saved_MiB"]
            print(f"  {name} {variant}: {'ok' if result.returncode == 0 else 'failed'}", file=sys.stderr, flush=True)
        row["noah/gap"] = row["peak_noah_MiB"] / row["peak_gap_MiB"]
        row.setdefault("status", "ok")
        rows.append(row)
    notes = [
        _environment(device, args.threads) + f"; fused CPU training kernel: {train_status()}",
        f"one training step (forward + cross-entropy + backward + SGD step, train mode, batch {args.batch_size}) in a "
        "fresh process after a first step that allocated gradients and optimizer state; peak_*_MiB = growth of peak "
        "RSS (VmHWM) over the step; head_saved_*_MiB = tensors the head saves for backward (not parameters)"
        + ("; noah_torch: NOAH_DISABLE_KERNEL=1 (PyTorch autograd head)" if "noah_torch" in variants else ""),
    ]
    _emit(rows, "NOAH vs GAP baseline, training memory", "train_memory", args.output, notes)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.batch_size is None:
        args.batch_size = 8 if args.memory and not args.train else 32
    for name in ("batch_size", "warmup", "repeats"):
        value = getattr(args, name)
        if value < (0 if name == "warmup" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'non-negative' if name == 'warmup' else 'positive'}, got {value}")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    if args.amp != "none" and not (args.train and not args.head_only and not args.memory):
        raise ConfigError("--amp applies to whole-model training timings (--train without --head-only/--memory)")
    if not args.memory:  # as `noah train` runs (peak memory is measured with glibc's defaults)
        keep_freed_memory()
    if args.train:
        if args.head_only:
            return _run_head_training(args)
        return _run_training_memory(args) if args.memory else _run_training(args)
    if args.head_only:
        return _run_head_only(args)
    if args.memory:
        return _run_memory(args)
    return _run_models(args)
