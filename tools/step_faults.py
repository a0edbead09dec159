"""Where a CPU training step's time goes besides arithmetic: page faults, per step, GAP vs NOAH.

Usage (from the repository root, the package installed)::

    python tools/step_faults.py [mobilenetv2_035] [--repeats 6] [--batch-size 32] [--threads 2]
    NOAH_KEEP_FREED_MEMORY=0 python tools/step_faults.py ...   # with glibc's default malloc

Builds the GAP baseline and the NOAH model, applies :func:`noah.allocator.keep_freed_memory`
(as ``noah train`` and ``noah benchmark`` do; the environment variable above turns it off) and
alternates SGD steps of the two (``noah benchmark --train``'s step and order), printing per step the
medians of wall time, the process's user and system CPU time and its minor page faults
(``getrusage``). System time is mostly the kernel faulting pages in, zero-filled, for memory the
allocator gave back after the previous step. A development tool: ``noah benchmark`` is the
measurement the documents quote.
"""

from __future__ import annotations

import argparse
import resource
import statistics
from typing import Callable

import torch

from noah.allocator import allocator_status, keep_freed_memory
from noah.bench import _sgd_step, time_interleaved
from noah.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="mobilenetv2_035")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    steps = {}
    for head in ("gap", "noah"):
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=1000, head=head).train()
        torch.manual_seed(1)
        images, target = torch.randn(args.batch_size, 3, 224, 224), torch.randint(0, 1000, (args.batch_size,))
        steps[head] = _sgd_step(model, images, target)
    samples: dict[str, list[tuple[float, ...]]] = {head: [] for head in steps}

    def measured(head: str, step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            before = resource.getrusage(resource.RUSAGE_SELF)
            step()
            after = resource.getrusage(resource.RUSAGE_SELF)
            samples[head].append(((after.ru_utime - before.ru_utime) * 1e3, (after.ru_stime - before.ru_stime) * 1e3,
                                  after.ru_minflt - before.ru_minflt))
        return run

    timings = time_interleaved({head: measured(head, step) for head, step in steps.items()}, 1, args.repeats,
                               torch.device("cpu"))
    print(f"{args.model}, batch {args.batch_size}, {args.threads} threads, malloc: {allocator_status()}; "
          f"medians of {args.repeats} steps each")
    for head, rows in samples.items():
        wall = timings.median(head) * 1e3
        user, system, faults = (statistics.median(column) for column in zip(*rows[1:]))  # after the warm-up step
        print(f"  {head:5s} wall {wall:7.0f} ms   user {user:7.0f} ms   system {system:6.0f} ms   "
              f"minor faults {faults:8.0f}")


if __name__ == "__main__":
    main()
