"""``noah compare``: heads side by side over seeds, under one recipe, on the same data in the same order.

::

    noah compare --models test_resnet,test_vit --heads gap,noah --seeds 3 --recipe demo \\
        --data digits-crowd --output runs/compare [--set attention=positions,classes] [noah train flags]

**Plan.** For every model, every head (the first is the baseline) and every combination of the
``--set`` values that apply to that head, one run per seed (``--seed``, ``--seed + 1``, ...). A
head option that a head has no use for (``--set attention=...`` for ``gap``) leaves that head with
a single row, and the shared settings it ignores (``num_heads``/``key_ratio`` for ``gap``) are
dropped from its runs. Runs of one seed share the data order, the augmentation draws and the
initialisation seed, so the differences between heads are paired. Every row's model is built (and
its parameters and MACs counted) before anything trains, so a setting that cannot work stops the
comparison at once.

**Runs.** Each run is ``noah train`` into ``DIR/runs/<model>-<head>[-<settings>]-s<seed>-<hash>``,
the hash being of the run's whole configuration (loader workers aside): a run with a
``summary.json`` is reused, an unfinished one continues from its ``last.pt``, and runs with other
settings never share a folder -- so an interrupted comparison, run again, resumes where it stopped,
and several comparisons can share one ``DIR`` and its runs. Each run's output goes to
``DIR/logs/<run>.log``; the terminal shows one line per run (done / total, ETA).

**Table.** ``DIR/<table>.md`` and ``.csv``: per model and row, the primary metric (top-1 or mAP,
final epoch) as mean ± sample std over the seeds, its gain over the model's first row, a
two-sided paired t-test over the seeds both finished (scipy), the seeds it won, parameters,
multiply-adds at the input size, and training seconds per run; the Markdown also records the
command, the machine, its load and the wall time.

``--jobs`` trains several runs at once, in worker processes with ``cores / jobs`` torch threads
each; the default is what the CPU takes without oversubscription (one process plus its loader
workers per run; one run at a time on a GPU). Under ``torchrun`` every rank walks the same plan
and each run uses all ranks (``--jobs 1``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import shlex
import signal
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from noah.allocator import keep_freed_memory
from noah.engine.config import HEAD_OPTION_FIELDS, TrainConfig, add_config_arguments, config_fields, given_options
from noah.engine.datasets import resolve_data
from noah.engine.distributed import init_distributed, resolve_device
from noah.engine.model import build_model
from noah.engine.preemption import StopSignals
from noah.engine.recipes import RECIPES, resolve_config
from noah.engine.rundir import RunDir
from noah.engine.train import train
from noah.engine.transforms import resolve_data_cfg
from noah.errors import ConfigError, NoahError, RunInterrupted
from noah.head import head_type
from noah.metrics import primary_metric
from noah.models import count_macs, count_parameters
from noah.tables import cpu_name, emit_table

__all__ = ["add_arguments", "run", "Arm", "PlannedRun", "parse_settings", "plan_runs", "compare", "paired_stats"]

#: TrainConfig fields holding the shared head settings -> the name the head types read them by
_SHARED_FIELDS = {"num_heads": "num_heads", "key_ratio": "key_ratio", "head_dropout": "dropout"}
#: what --set may not vary: a comparison is of heads and their options, on one data set
_FIXED = ("model", "head", "seed", "data", "task", "data_size", "recipe", "device")
#: options that change nothing a run computes, left out of its identity
_NOT_IDENTITY = ("workers",)


# --------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class Arm:
    """One row of the table: a model, a head, and the ``--set`` values that apply to that head."""

    model: str
    head: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def settings_text(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.settings)

    @property
    def label(self) -> str:
        return f"{self.head} {self.settings_text}" if self.settings else self.head


@dataclass(frozen=True)
class PlannedRun:
    """One training run: an arm at one seed, its full configuration and its folder."""

    arm: Arm
    config: TrainConfig
    folder: Path

    @property
    def seed(self) -> int:
        return self.config.seed


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("none", "null", "default"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_settings(texts: Iterable[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """``["attention=positions,classes", ...]`` to ``[("attention", ("positions", "classes")), ...]``.

    Values are read as YAML scalars (``true``, ``8``, ``0.125``); ``none`` is the option's default.
    Unknown options, options a comparison keeps fixed and repeated keys are a :class:`ConfigError`.
    """
    names = {f.name for f in config_fields()}
    settings: list[tuple[str, tuple[Any, ...]]] = []
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise ConfigError(f"--set {text!r}: expected KEY=V1,V2,... such as attention=positions,classes")
        if key not in names:
            raise ConfigError(f"--set {key}: not an option of noah train (see `noah train --help`)")
        if key in _FIXED:
            raise ConfigError(f"--set {key}: a comparison keeps {key} fixed (use --models, --heads, --seeds, --data, "
                              "--recipe)")
        if any(key == k for k, _ in settings):
            raise ConfigError(f"--set {key} is given twice; list all its values in one --set {key}=V1,V2,...")
        parsed = tuple(dict.fromkeys(_parse_value(v) for v in values.split(",")))
        settings.append((key, parsed))
    return settings


def _applies(key: str, head: str) -> bool:
    """Whether option ``key`` means anything for ``head``."""
    kind = head_type(head)
    if key in HEAD_OPTION_FIELDS:
        return key in kind.options
    if key in _SHARED_FIELDS:
        return _SHARED_FIELDS[key] in kind.uses
    return True


def arm_config(base: TrainConfig, arm: Arm) -> TrainConfig:
    """``base`` for ``arm``: its model, head and settings; the head options and shared settings
    the head has no use for set to ``None``."""
    unused = {f: None for f in (*HEAD_OPTION_FIELDS, *_SHARED_FIELDS) if not _applies(f, arm.head)}
    return dataclasses.replace(base, model=arm.model, head=arm.head, **unused, **dict(arm.settings))


def run_identity(config: TrainConfig) -> str:
    """Eight hex digits naming everything a run computes from (its config, loader workers aside)."""
    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_IDENTITY}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def _slug(arm: Arm) -> str:
    # a setting at its default (None) is left out of the name, so that `--set x=none,...` finds the
    # runs of a comparison without --set (the hash still tells every configuration apart)
    parts = [arm.model, arm.head, *(f"{k}={_show(v)}" for k, v in arm.settings if v is not None)]
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts))


def plan_runs(base: TrainConfig, models: list[str], heads: list[str], settings: list[tuple[str, tuple[Any, ...]]],
              seeds: int, root: Path) -> tuple[list[Arm], list[PlannedRun]]:
    """The arms (table rows, in order: models, then heads, then setting combinations) and the runs
    (every arm at seeds ``base.seed .. base.seed + seeds - 1``) of a comparison rooted at ``root``."""
    for name in heads:
        head_type(name)  # an unknown head is a ConfigError naming the known ones
    for key, _ in settings:
        if not any(_applies(key, h) for h in heads):
            raise ConfigError(f"--set {key}: none of the heads {', '.join(heads)} has that option")
    for key in HEAD_OPTION_FIELDS:
        if getattr(base, key) is not None and not any(_applies(key, h) for h in heads):
            raise ConfigError(f"--{key.replace('_', '-')}: none of the heads {', '.join(heads)} has that option")
    arms: list[Arm] = []
    identities: set[str] = set()
    for model, head in itertools.product(models, heads):
        keys = [(k, values) for k, values in settings if _applies(k, head)]
        for combo in itertools.product(*(values for _, values in keys)):
            arm = Arm(model, head, tuple((k, v) for (k, _), v in zip(keys, combo)))
            identity = run_identity(arm_config(base, arm))  # validates the values too
            if identity not in identities:  # e.g. a --set value equal to what the recipe already gives
                identities.add(identity)
                arms.append(arm)
    runs = []
    for arm in arms:
        config = arm_config(base, arm)
        for seed in range(base.seed, base.seed + seeds):
            seeded = dataclasses.replace(config, seed=seed)
            runs.append(PlannedRun(arm, seeded, root / "runs" / f"{_slug(arm)}-s{seed}-{run_identity(seeded)}"))
    return arms, runs


# --------------------------------------------------------------------------------------------
# running


def _finished(run: PlannedRun) -> bool:
    run_dir = RunDir(run.folder)
    if not run_dir.file(RunDir.SUMMARY).is_file():
        return False
    if run_identity(run_dir.read_config()) != run_identity(run.config):
        raise ConfigError(f"{run.folder} holds a finished run of other settings than its name says; move it away")
    return True


def _log_path(run: PlannedRun) -> Path:
    return run.folder.parent.parent / "logs" / f"{run.folder.name}.log"


def _train_logged(config: TrainConfig, folder: Path, log: Path | None) -> str | None:
    """Train (or continue) one run with its output in ``log`` (``None``: discarded); returns
    ``None`` on success, else the one-line reason it failed. A stop request propagates."""
    target = open(log, "a", encoding="utf-8") if log is not None else open(os.devnull, "w")
    with target, contextlib.redirect_stdout(target), contextlib.redirect_stderr(target):
        try:
            train(config, output=str(folder), resume="auto", quiet=True)
        except RunInterrupted:
            raise
        except NoahError as exc:
            print(f"noah compare: this run failed: {exc}")
            return str(exc)
    return None


def _worker_setup(threads: int) -> None:
    torch.set_num_threads(threads)
    keep_freed_memory()


def _worker(config: dict[str, Any], folder: str, log: str) -> str | None:
    return _train_logged(TrainConfig.from_dict(config), Path(folder), Path(log))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(config: TrainConfig, world_size: int) -> int:
    """Runs at once without oversubscribing: on a CPU, cores / (1 + loader workers); one on a GPU
    or under torchrun."""
    if world_size > 1 or resolve_device(config.device).type != "cpu":
        return 1
    return max(1, _cores() // (1 + config.workers))


@dataclass
class Progress:
    """Runs done out of the total, and the time the trained ones took, for the ETA."""

    total: int
    jobs: int
    done: int = 0
    trained_seconds: list[float] = dataclasses.field(default_factory=list)

    def line(self, run: PlannedRun, outcome: str, seconds: float | None, left_to_train: int) -> str:
        self.done += 1
        if seconds is not None:
            self.trained_seconds.append(seconds)
        text = f"[{self.done}/{self.total}] {run.arm.model} {run.arm.label} seed {run.seed}: {outcome}"
        if seconds is not None:
            text += f" in {seconds:.0f} s"
        if self.trained_seconds and left_to_train:
            eta = statistics.mean(self.trained_seconds) * left_to_train / self.jobs
            text += f"; ETA {eta / 60:.1f} min"
        return text


def _outcome(run: PlannedRun, metric: str, error: str | None) -> str:
    if error is not None:
        return f"FAILED ({error})"
    result = read_result(run, metric)
    return f"{metric} {result[0]:.2f}" if result else "no result"


def read_result(run: PlannedRun, metric: str) -> tuple[float, float] | None:
    """``(final-epoch metric, training seconds summed over its epochs)`` of a finished run, or
    ``None``."""
    run_dir = RunDir(run.folder)
    path = run_dir.file(RunDir.SUMMARY)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    seconds = sum(float(r.get("train", {}).get("time", 0.0)) for r in run_dir.read_metrics())
    return float(summary["metrics"][metric]), seconds


def execute(runs: list[PlannedRun], metric: str, jobs: int, is_main: bool, quiet: bool) -> tuple[int, list[str]]:
    """Train the unfinished ``runs`` (``jobs`` at a time); returns how many it trained (or
    continued) and the failures, one line each."""
    say = print if is_main and not quiet else (lambda *a, **k: None)
    pending = [r for r in runs if not _finished(r)]
    progress = Progress(total=len(runs), jobs=jobs)
    for run in runs:
        if run not in pending:
            say(progress.line(run, _outcome(run, metric, None) + " (reused)", None, len(pending)), flush=True)
    failures: list[str] = []
    if is_main:
        for run in pending:
            _log_path(run).parent.mkdir(parents=True, exist_ok=True)
    left = len(pending)

    def finish(run: PlannedRun, error: str | None, seconds: float) -> None:
        nonlocal left
        left -= 1
        if error is not None:
            failures.append(f"{run.folder.name}: {error}")
        say(progress.line(run, _outcome(run, metric, error), seconds, left), flush=True)

    again = "run the same noah compare command again to continue the comparison (finished runs are reused)"

    def stopped(stop: StopSignals, after: str) -> RunInterrupted:
        return RunInterrupted(f"stopped by {stop.name} {after}; {again}", stop.received or signal.SIGTERM)

    with StopSignals() as stop:  # a SIGTERM / SIGUSR1 during a run stops that run and then the comparison
        if jobs <= 1:
            for run in pending:
                start = time.perf_counter()
                try:
                    error = _train_logged(run.config, run.folder, _log_path(run) if is_main else None)
                except RunInterrupted as exc:
                    raise RunInterrupted(f"{exc} -- {again}", exc.exit_status - 128) from exc
                finish(run, error, time.perf_counter() - start)
                if stop.requested and left:
                    raise stopped(stop, f"after {run.folder.name}")
            return len(pending), failures
        threads = max(1, _cores() // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_setup, initargs=(threads,)) as pool:
            started = {}
            for run in pending:
                future = pool.submit(_worker, run.config.to_dict(), str(run.folder), str(_log_path(run)))
                started[future] = (run, time.perf_counter())
            for future in as_completed(started):
                run, start = started[future]
                if future.cancelled():
                    continue
                finish(run, future.result(), time.perf_counter() - start)
                if stop.requested and left:
                    pool.shutdown(wait=True, cancel_futures=True)  # the runs in progress finish first
                    raise stopped(stop, "after the runs in progress")
        return len(pending), failures


# --------------------------------------------------------------------------------------------
# the table


def paired_stats(values: dict[int, float], baseline: dict[int, float]) -> tuple[float | None, int, int]:
    """``(p, wins, pairs)`` of ``values`` against ``baseline`` over the seeds both have: the
    two-sided paired t-test's p-value (``None`` below two pairs or for constant differences), the
    seeds where ``values`` is higher, and the number of pairs."""
    from scipy import stats

    seeds = sorted(set(values) & set(baseline))
    diffs = [values[s] - baseline[s] for s in seeds]
    wins = sum(d > 0 for d in diffs)
    if len(diffs) < 2 or max(diffs) == min(diffs):
        return None, wins, len(diffs)
    p = float(stats.ttest_rel([values[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    return (p if math.isfinite(p) else None), wins, len(diffs)


@dataclass(frozen=True)
class ArmCost:
    params: int
    macs: int


def measure_arms(base: TrainConfig, arms: list[Arm], num_classes: int) -> dict[Arm, ArmCost]:
    """Build every arm's model (a setting that cannot work is a ConfigError here, before any
    training) and count its parameters and its multiply-adds at the input size."""
    costs = {}
    for arm in arms:
        config = arm_config(base, arm)
        model = build_model(config, num_classes).eval()
        size = resolve_data_cfg(config, model)["input_size"]
        costs[arm] = ArmCost(count_parameters(model), count_macs(model, torch.zeros(1, *size)))
    return costs


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def table_rows(arms: list[Arm], runs: list[PlannedRun], costs: dict[Arm, ArmCost], metric: str
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """CSV rows (numbers) and Markdown rows (``mean ± std``) of the comparison."""
    results: dict[Arm, dict[int, tuple[float, float]]] = {arm: {} for arm in arms}
    for run in runs:
        result = read_result(run, metric)
        if result is not None:
            results[run.arm][run.seed] = result
    csv_rows, md_rows = [], []
    first: dict[str, Arm] = {}
    for arm in arms:
        base_arm = first.setdefault(arm.model, arm)
        values = {seed: r[0] for seed, r in results[arm].items()}
        base_values = {seed: r[0] for seed, r in results[base_arm].items()}
        seeds_planned = sum(1 for r in runs if r.arm == arm)
        mean = statistics.mean(values.values()) if values else None
        std = statistics.stdev(values.values()) if len(values) > 1 else None
        is_base = arm == base_arm
        gain = mean - statistics.mean(base_values.values()) if (mean is not None and base_values and not is_base) else None
        p, wins, pairs = paired_stats(values, base_values) if not is_base else (None, 0, 0)
        seconds = statistics.mean(r[1] for r in results[arm].values()) if values else None
        cost = costs[arm]
        csv_rows.append({
            "model": arm.model, "head": arm.head, "settings": arm.settings_text,
            "params": cost.params, "macs": cost.macs, f"{metric}_mean": mean, f"{metric}_std": std,
            "gain": gain, "p_paired_t": p, "wins": wins if not is_base else None, "pairs": pairs if not is_base else None,
            "seeds_done": len(values), "seeds_planned": seeds_planned,
            f"{metric}_per_seed": " ".join(f"{values[s]:.2f}" for s in sorted(values)), "train_s_per_run": seconds,
        })
        shown = "—" if mean is None else f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"
        if len(values) < seeds_planned:
            shown += f" ({len(values)}/{seeds_planned} seeds)"
        md_rows.append({
            "model": arm.model, "head": arm.label, "params (M)": f"{cost.params / 1e6:.3f}",
            "MACs (M)": f"{cost.macs / 1e6:.1f}", f"{metric} (mean ± std)": shown,
            "gain": "baseline" if is_base else ("—" if gain is None else _signed(gain)),
            "p (paired t)": "" if is_base else ("—" if p is None else f"{p:.3f}"),
            "wins": "" if is_base else f"{wins}/{pairs}",
            "train s/run": "—" if seconds is None else f"{seconds:.0f}",
        })
    return csv_rows, md_rows


# --------------------------------------------------------------------------------------------
# the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``noah compare`` flags, then every ``noah train`` option (applied to every run)."""
    g = parser.add_argument_group("comparison")
    g.add_argument("--models", default=None, metavar="A,B,...",
                   help="comma-separated models (default: the recipe's model, or --model)")
    g.add_argument("--heads", default="gap,noah", metavar="A,B,...",
                   help="comma-separated heads; the first is the baseline of the gains (default gap,noah)")
    g.add_argument("--seeds", type=int, default=3, help="runs per row, seeds --seed, --seed+1, ... (default 3)")
    g.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="vary one option across runs, e.g. attention=positions,classes or kv_split=true,false "
                   "('none': the default); several --set give every combination")
    g.add_argument("--recipe", choices=list(RECIPES), default=None, help="preset of every run (default demo)")
    g.add_argument("--config", metavar="YAML", default=None, help="YAML file of config keys overriding the recipe")
    g.add_argument("--output", metavar="DIR", default="runs/compare",
                   help="folder of the runs (DIR/runs), their logs (DIR/logs) and the table (default runs/compare)")
    g.add_argument("--table", default="compare", metavar="NAME", help="table files DIR/NAME.md and .csv "
                   "(default compare)")
    g.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once (default: as many as the CPU takes without oversubscribing; 1 on a GPU)")
    g.add_argument("--quiet", action="store_true", help="no progress lines, only the table")
    add_config_arguments(parser)


def _names(text: str, flag: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"{flag} needs at least one name, got {text!r}")
    return names


def compare(base: TrainConfig, models: list[str], heads: list[str], seeds: int,
            settings: list[tuple[str, tuple[Any, ...]]], output: Path, table: str = "compare",
            jobs: int | None = None, quiet: bool = False, command: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Run a comparison (see the module docstring); returns the CSV rows of its table and the
    failed runs (one line each). Writes ``output/<table>.md`` and ``.csv``."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", table):
        raise ConfigError(f"--table {table!r}: use letters, digits, '_', '.' and '-' only")
    t0, load_before = time.perf_counter(), _load()
    env = init_distributed(base.device)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if env.distributed and (jobs or 1) > 1:
        raise ConfigError("under torchrun every run uses all ranks: --jobs must be 1")
    jobs = jobs or default_jobs(base, env.world_size)
    arms, runs = plan_runs(base, models, heads, settings, seeds, output)
    info = resolve_data(base, env)
    metric = primary_metric(info.task)
    costs = measure_arms(base, arms, info.num_classes)
    say = print if env.is_main and not quiet else (lambda *a, **k: None)
    say(f"noah compare: {len(arms)} rows x {seeds} seeds = {len(runs)} runs on {info.name} ({info.task}, "
        f"{metric}), {jobs} at a time -> {output}", flush=True)
    trained, failures = execute(runs, metric, jobs, env.is_main, quiet)
    rows, md_rows = table_rows(arms, runs, costs, metric)
    if env.is_main:
        minutes = (time.perf_counter() - t0) / 60
        notes = [
            f"Command: `{command}`" if command else "",
            f"Machine: {cpu_name()}, {_cores()} cores, torch {torch.__version__}, {jobs} run(s) at a time; "
            f"load average (1 min) {load_before} before, {_load()} after; wall time {minutes:.1f} min, "
            f"{trained} of the {len(runs)} runs trained" + ("." if trained == len(runs) else ", the others reused."),
            f"{metric}: final epoch, mean ± sample std over seeds {base.seed}..{base.seed + seeds - 1}; gain: over the "
            "model's first row; p: two-sided paired t-test over the seeds both finished; wins: seeds where the row "
            "beat the first row; MACs at the input size, batch 1.",
        ]
        if failures:
            notes.append("Failed runs: " + "; ".join(failures))
        title = f"noah compare on {info.name}: {', '.join(models)} with {', '.join(heads)}"
        emit_table(rows, title, table, output, [n for n in notes if n], markdown_rows=md_rows)
    return rows, failures


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover - platforms without it
        return "unknown"


def command_line(args: argparse.Namespace) -> str:
    """The ``noah compare`` command that repeats ``args`` (flags in canonical spelling)."""
    words = ["noah", "compare"]
    for flag, value in (("--models", args.models), ("--heads", args.heads), ("--seeds", args.seeds),
                        ("--recipe", args.recipe), ("--config", args.config), ("--output", args.output),
                        ("--table", args.table), ("--jobs", args.jobs)):
        if value is not None:
            words += [flag, str(value)]
    for setting in args.settings:
        words += ["--set", setting]
    for name, value in given_options(args).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            words += [flag, *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
    if args.quiet:
        words.append("--quiet")
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    options = given_options(args)
    if "head" in options:
        raise ConfigError("noah compare takes --heads (a comma-separated list, the first the baseline), not --head")
    if "model" in options and args.models is not None:
        raise ConfigError("give the models as --models A,B,... or one as --model, not both")
    base = resolve_config(args.recipe, args.config, options)
    keep_freed_memory()  # as noah train does
    models = _names(args.models, "--models") if args.models is not None else [base.model]
    heads = _names(args.heads, "--heads")
    command = command_line(args)
    _, failures = compare(base, models, heads, args.seeds, parse_settings(args.settings), Path(args.output),
                          args.table, args.jobs, args.quiet, command)
    return 1 if failures else 0
