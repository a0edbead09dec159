"""``noah train``: one training loop for NOAH and GAP heads, in the style of timm's train.py.

Reads as: parse flags -> resolve the config (recipe <- YAML <- flags, one typed schema) -> claim
the run folder -> build data, model, optimizer, scheduler, EMA, AMP -> maybe resume -> for each
epoch: train, evaluate, write ``metrics.jsonl`` / ``last.pt`` / ``best.pt`` -> write
``model.safetensors`` and ``summary.json``.

Every random draw is a function of ``(seed, epoch)`` (see :mod:`noah.engine.seeding` and
:mod:`noah.engine.loaders`), so a run resumed from any checkpoint -- the end of an epoch, or the
mid-epoch one written when SIGTERM / SIGUSR1 asked it to stop -- replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Callable, ContextManager, Iterable

import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from noah.allocator import keep_freed_memory
from noah.engine.checkpoint import load_checkpoint, rng_state, set_rng_state
from noah.engine.config import TrainConfig, add_config_arguments, given_options
from noah.engine.datasets import build_dataset, resolve_data
from noah.engine.distributed import (
    DistEnv, all_reduce_max, all_reduce_sum, cleanup_distributed, init_distributed, on_main_rank,
)
from noah.engine.evaluate import Validation, format_metrics
from noah.engine.loaders import TrainLoader
from noah.engine.model import build_model, head_impl_problem, load_pretrained, state_dict_mismatch
from noah.engine.optim import build_criterion, build_optimizer_and_scheduler
from noah.engine.precision import autocast_factory
from noah.engine.preemption import StopSignals
from noah.engine.recipes import RECIPE_HELP, RECIPES, resolve_config
from noah.engine.rundir import RunDir
from noah.engine.seeding import epoch_seed, seed_everything, set_deterministic
from noah.engine.transforms import build_transform, resolve_data_cfg
from noah.errors import CheckpointError, ConfigError, NoahError, RunFolderError, RunInterrupted
from noah.metrics import primary_metric

__all__ = ["add_arguments", "run", "train", "train_one_epoch", "NonFiniteLossError", "EpochProgress"]


class NonFiniteLossError(NoahError, FloatingPointError):
    """The training loss became NaN or infinite; the run stopped before the weights were touched."""


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``noah train`` flags: how to run, then one flag per :class:`TrainConfig` option."""
    recipes = "; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items())
    g = parser.add_argument_group("run")
    g.add_argument("--recipe", choices=list(RECIPES), default=None, help=f"preset (default demo). {recipes}")
    g.add_argument("--config", metavar="YAML", default=None, help="YAML file of config keys overriding the recipe")
    g.add_argument("--output", metavar="DIR", default=None,
                   help="run folder (default runs/<model>-<head>-<time>); must not hold another run")
    g.add_argument("--resume", metavar="auto|PATH", default=None,
                   help="'auto': continue the run in --output from its last.pt (start it if there is none); "
                   "PATH: continue from that checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run that --output already holds")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.recipe, args.config, given_options(args))
    keep_freed_memory()  # a step's activations are reused, not faulted in afresh (noah.allocator)
    train(config, output=args.output, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    return 0


# --------------------------------------------------------------------------------------------
# pieces of the loop


@dataclass
class EpochProgress:
    """How far the current epoch got: batches done and the running loss / sample / time totals
    (saved in a mid-epoch checkpoint, so a resumed epoch reports the whole epoch)."""

    step: int = 0
    loss_sum: float = 0.0
    seen: int = 0
    time: float = 0.0


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (no gradients, BN statistics kept) or release the backbone; the head always trains."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    model.backbone.train(not frozen)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    num_updates: int,
    env: DistEnv,
    autocast: Callable[[], ContextManager],
    progress: EpochProgress,
    scaler: torch.amp.GradScaler | None = None,
    mixup: Mixup | None = None,
    ema: ModelEmaV3 | None = None,
    ema_model: nn.Module | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
    stop: StopSignals | None = None,
    bar: tqdm | None = None,
) -> int:
    """Train on the batches of ``loader`` (the rest of an epoch that ``progress`` says how far
    got); returns ``num_updates`` after them. ``progress`` is updated in place.

    ``model`` is what runs forward (maybe DDP-wrapped / compiled), already in training mode;
    ``ema_model`` the plain model the EMA follows. Returns early, after a complete optimizer step,
    when ``stop`` has been requested on any rank. Raises :class:`NonFiniteLossError` *before* a
    non-finite loss reaches the weights, on every rank at once.
    """
    start = time.perf_counter() - progress.time
    for images, target in loader:
        images = images.to(env.device, non_blocking=True)
        target = target.to(env.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, target = mixup(images, target)
        with autocast():
            output = model(images)
            loss = criterion(output, target)
        # one all-reduce carries the loss check and any rank's stop request
        check = torch.stack([loss.detach().float(), torch.tensor(float(stop is not None and stop.requested),
                                                                 device=loss.device)])
        if env.distributed:
            dist.all_reduce(check)
        if not torch.isfinite(check[0]):
            raise NonFiniteLossError(
                f"training loss became {check[0].item()} at epoch {epoch + 1}, step {progress.step + 1} "
                f"(lr {optimizer.param_groups[0]['lr']:.3g}); stopped before updating the weights, "
                "the last checkpoint is untouched; try a lower --lr or --grad-clip"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        num_updates += 1
        if ema is not None:
            ema.update(ema_model, step=num_updates)
        scheduler.step_update(num_updates=num_updates)
        batch = images.shape[0]
        progress.step += 1
        progress.loss_sum += float(check[0]) / env.world_size * batch
        progress.seen += batch
        progress.time = time.perf_counter() - start
        if bar is not None:
            bar.update(1)
            rate = progress.seen * env.world_size / max(progress.time, 1e-9)
            bar.set_postfix(loss=f"{progress.loss_sum / progress.seen:.4f}", img_s=f"{rate:.1f}", refresh=False)
        if check[1] > 0 or (stop is not None and stop.requested and not env.distributed):
            break
    return num_updates


def epoch_stats(progress: EpochProgress, optimizer: torch.optim.Optimizer, env: DistEnv) -> dict[str, float]:
    """``{"loss", "lr", "images_per_s", "time"}`` of a finished epoch, over all ranks."""
    total_seen = all_reduce_sum(float(progress.seen), env.device)
    loss_total = all_reduce_sum(progress.loss_sum, env.device)
    return {
        "loss": loss_total / max(total_seen, 1.0),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": total_seen / progress.time if progress.time > 0 else 0.0,
        "time": progress.time,
    }


def _default_output(config: TrainConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{config.model.replace('/', '_')}-{config.head}-{stamp}")
    path, n = base, 1
    while os.path.exists(path):  # two runs started in the same second
        n += 1
        path = f"{base}-{n}"
    return path


def _resume_plan(resume: str | None, output: str | None, overwrite: bool) -> tuple[str | None, str | None]:
    """``(checkpoint to resume from or None, run folder)`` for the ``--resume`` / ``--output`` given."""
    if resume is not None and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run, or replace it")
    if resume is None:
        return None, output
    if resume == "auto":
        if output is None:
            raise ConfigError("--resume auto needs --output DIR (the run folder to continue)")
        last = RunDir(output).file(RunDir.LAST)
        if last.is_file():
            return str(last), output
        existing = [name for name in RunDir(output).run_files() if name in RunDir.RESULT_FILES]
        if existing:
            raise RunFolderError(f"{output} holds a run ({', '.join(existing)}) but no {RunDir.LAST} to continue "
                                 "from; pass --overwrite to start again there")
        return None, output
    if not os.path.isfile(resume):
        raise ConfigError(f"--resume: checkpoint not found: {resume}")
    return resume, output if output is not None else os.path.dirname(os.path.abspath(resume))


def _check_resumable(state: dict[str, Any], path: str, config: TrainConfig, task: str,
                     class_names: list[str]) -> TrainConfig:
    """The checkpoint's config; :class:`CheckpointError` naming every way the checkpoint's model
    differs from the one this run asks for."""
    saved = TrainConfig.from_dict(state["config"], path)
    differences = [f"checkpoint has {d.replace(' vs ', ', this run asks for ', 1)}" for d in saved.model_differences(config)]
    classes = state.get("classes") or {}
    if classes.get("task", task) != task:
        differences.append(f"checkpoint has task {classes['task']}, this run's data is {task}")
    saved_names = list(classes.get("class_names", class_names))
    if len(saved_names) != len(class_names):
        differences.append(f"checkpoint has {len(saved_names)} classes, this run's data has {len(class_names)}")
    elif saved_names != class_names:
        differences.append("checkpoint's class names differ from this run's data (same count, other names or order)")
    if differences:
        raise CheckpointError(f"cannot resume from {path}: " + "; ".join(differences))
    return saved


def _stop_agreed(stop: StopSignals, env: DistEnv) -> bool:
    """Whether any rank has been asked to stop (every rank gets the same answer)."""
    return all_reduce_sum(float(stop.requested), env.device) > 0


def _interrupted(stop: StopSignals, where: str, run_dir: RunDir) -> RunInterrupted:
    by = stop.name or "a stop request on another rank"
    return RunInterrupted(f"stopped by {by} {where}; {run_dir.file(RunDir.LAST)} holds that point: continue with "
                          f"--output {run_dir.root} --resume auto", stop.received or signal.SIGTERM)


def _count_unreadable(dataset: Any, env: DistEnv) -> int:
    """Distinct unreadable images of ``dataset`` seen by any rank (or its loader workers)."""
    flags = getattr(dataset, "unreadable", None)
    if flags is None:
        return 0
    return int(all_reduce_max(flags, env.device).sum())


# --------------------------------------------------------------------------------------------
# the run


def train(config: TrainConfig, output: str | None = None, resume: str | None = None, overwrite: bool = False,
          quiet: bool = False) -> dict[str, Any]:
    """Train with a resolved ``config`` (see :mod:`noah.engine.recipes`); returns the summary dict.

    ``output`` is the run folder (it must not hold another run unless ``overwrite``); ``resume``
    is ``None``, ``"auto"`` (continue ``output`` from its ``last.pt`` if it has one) or a
    checkpoint path. SIGTERM / SIGUSR1 stop the run after the current step with a resumable
    checkpoint (:class:`RunInterrupted`).
    """
    env = init_distributed(config.device)
    try:
        with StopSignals() as stop:
            return _train(config, env, output, resume, overwrite, quiet, stop)
    finally:
        cleanup_distributed()


def _train(config: TrainConfig, env: DistEnv, output: str | None, resume: str | None, overwrite: bool, quiet: bool,
           stop: StopSignals) -> dict[str, Any]:
    t0 = time.perf_counter()
    # `say` is the per-run chatter that --quiet silences; `note` what a user must see either way
    note = print if env.is_main else (lambda *a, **k: None)
    say = note if not quiet else (lambda *a, **k: None)
    resume_path, output = _resume_plan(resume, output, overwrite)
    run_dir = RunDir(output or _default_output(config))
    continuing = resume_path is not None and os.path.dirname(os.path.abspath(resume_path)) == str(run_dir.root.absolute())
    for line in on_main_rank(lambda: run_dir.claim(continuing=continuing, overwrite=overwrite), env) or []:
        note(line)
    try:
        return _train_in(run_dir, config, env, resume_path, quiet, stop, say, note, t0)
    finally:
        run_dir.release()


def _train_in(run_dir: RunDir, config: TrainConfig, env: DistEnv, resume_path: str | None, quiet: bool,
              stop: StopSignals, say: Callable[..., None], note: Callable[..., None], t0: float) -> dict[str, Any]:
    set_deterministic(config.deterministic)
    seed_everything(epoch_seed(config.seed, -1, env.rank))

    # ---- data
    info = resolve_data(config, env)
    task = info.task
    state = load_checkpoint(resume_path) if resume_path else None
    saved_config = _check_resumable(state, resume_path, config, task, list(info.class_names)) if state else None

    # ---- model
    model = build_model(config, info.num_classes)
    if config.pretrained and state is None:
        say(load_pretrained(model, config.pretrained))
    data_cfg = resolve_data_cfg(config, model)
    train_set = build_dataset(config, info, "train", build_transform(config, data_cfg, True))
    validation = Validation(config, info, data_cfg, env)

    problem = head_impl_problem(model, env.device)
    if problem is not None:
        raise ConfigError(f"--head-impl {config.head_impl}: {problem}")
    model.to(env.device)
    if config.sync_bn and env.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)

    train_loader = TrainLoader(train_set, config.batch_size, config.workers, config.seed, env,
                               balanced=config.balanced_sampling)

    # ---- optimisation
    mixup_active = config.mixup > 0 or config.cutmix > 0
    mixup = None
    if mixup_active and info.format == "voc" and config.difficult == "ignore":
        raise ConfigError("Mixup/CutMix cannot mix the ignored targets of Pascal VOC's difficult objects: pass "
                          "--difficult positive, or --mixup 0 --cutmix 0")
    if mixup_active:
        mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
                      switch_prob=config.mixup_switch_prob, label_smoothing=config.smoothing,
                      num_classes=info.num_classes, multi_label=task == "multilabel")
    criterion = build_criterion(config, task, mixup_active)
    updates_per_epoch = len(train_loader)
    optimizer, scheduler = build_optimizer_and_scheduler(config, model, updates_per_epoch)
    autocast, amp_dtype = autocast_factory(config.amp, env.device)
    scaler = torch.amp.GradScaler(env.device.type) if amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema else None

    # ---- resume
    start_epoch, best_metric, best_epoch = 0, None, None
    progress = EpochProgress()
    if state is not None:
        problem = state_dict_mismatch(model, state["model"])
        if problem:
            raise CheckpointError(f"cannot resume from {resume_path}: its weights do not fit this model ({problem})")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
            raise CheckpointError(f"cannot resume from {resume_path}: {detail}") from exc
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        start_epoch, best_metric, best_epoch = int(state["epoch"]), state.get("best_metric"), state.get("best_epoch")
        if state["step"]:
            progress = EpochProgress(**state["progress"])
        scheduler.step_update(num_updates=start_epoch * updates_per_epoch + progress.step)
        run_dir.intact = (start_epoch, progress.step)
        where = f"after epoch {start_epoch}" if not progress.step else \
            f"in epoch {start_epoch + 1} after batch {progress.step}/{updates_per_epoch}"
        note(f"resumed from {resume_path} {where}")
        changed = [f"{f.name} {getattr(saved_config, f.name)!r} -> {getattr(config, f.name)!r}"
                   for f in fields(config) if getattr(saved_config, f.name) != getattr(config, f.name)]
        if changed:
            note(f"settings changed since the checkpoint: {', '.join(changed)}")

    classes = {"task": task, "class_names": list(info.class_names)}
    if env.is_main:
        run_dir.write_config(config)
        run_dir.write_classes(task, info.class_names)
        run_dir.trim_metrics(start_epoch)
    say(f"training {config.model} ({config.head} head, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        f"params) on {info.name}: {task}, {info.num_classes} classes, {len(train_set)} train / {validation.num_images} val "
        f"images, {config.epochs} epochs, recipe {config.recipe}, device {env.device}"
        + (f" x{env.world_size}" if env.distributed else "") + f" -> {run_dir.root}")

    def run_eval(m: nn.Module) -> dict[str, float]:
        return validation(m, autocast)

    def checkpoint_state(epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "epoch": epoch, "step": progress.step, "progress": asdict(progress), "config": config.to_dict(),
            "classes": classes, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
            "metrics": metrics, "best_metric": best_metric, "best_epoch": best_epoch,
        }

    # ---- epochs
    key = primary_metric(task)
    val_metrics: dict[str, float] = {}
    ema_metrics: dict[str, float] | None = None
    num_updates = start_epoch * updates_per_epoch + progress.step
    train_model: nn.Module = model
    frozen_state: bool | None = None
    if state is not None:
        set_rng_state(state["rng"])  # where the checkpointed run stood; epochs that start afresh re-seed
    for epoch in range(start_epoch, config.epochs):
        if progress.step == 0:  # a resumed mid-epoch checkpoint brought its RNG states along
            seed_everything(epoch_seed(config.seed, epoch, env.rank))
        frozen = epoch < config.freeze_backbone_epochs
        if frozen != frozen_state:  # (re)wrap: DDP only reduces parameters that need gradients
            set_backbone_frozen(model, frozen)
            train_model = DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None) \
                if env.distributed else model
            if config.compile:
                train_model = torch.compile(train_model)
            frozen_state = frozen
        model.train()
        if frozen:
            model.backbone.eval()
        show = env.is_main and not quiet and sys.stderr.isatty()
        bar = tqdm(total=updates_per_epoch, initial=progress.step, desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", leave=False, dynamic_ncols=True) if show else None
        try:
            num_updates = train_one_epoch(
                train_model, train_loader.epoch(epoch, progress.step), criterion, optimizer, scheduler, epoch,
                num_updates, env, autocast, progress, scaler=scaler, mixup=mixup, ema=ema, ema_model=model,
                grad_clip=config.grad_clip, channels_last=config.channels_last, stop=stop, bar=bar,
            )
        finally:
            if bar is not None:
                bar.close()
        if progress.step < updates_per_epoch:  # asked to stop part-way through the epoch
            if env.is_main:
                run_dir.save_checkpoint(checkpoint_state(epoch, val_metrics))
            raise _interrupted(stop, f"in epoch {epoch + 1} after batch {progress.step}/{updates_per_epoch}", run_dir)
        train_stats = epoch_stats(progress, optimizer, env)
        progress = EpochProgress()
        if env.distributed and not config.sync_bn:
            # each rank updated its own BN statistics; average them so that every rank evaluates
            # (and rank 0 saves) the same model
            distribute_bn(model, env.world_size, reduce=True)
            if ema is not None:
                distribute_bn(ema.module, env.world_size, reduce=True)
        val_metrics = run_eval(model)
        ema_metrics = run_eval(ema.module) if ema is not None else None
        scheduler.step(epoch + 1)
        improved = best_metric is None or val_metrics[key] > best_metric
        if improved:
            best_metric, best_epoch = val_metrics[key], epoch + 1
        if env.is_main:
            # the log line first: a run killed before the checkpoint redoes this epoch and trims it
            record = {"epoch": epoch + 1, "train": train_stats, "val": val_metrics}
            if ema_metrics is not None:
                record["val_ema"] = ema_metrics
            run_dir.append_metrics(record)
            run_dir.save_checkpoint(checkpoint_state(epoch + 1, val_metrics), best=improved)
        say(f"epoch {epoch + 1}/{config.epochs}  loss {train_stats['loss']:.4f}  lr {train_stats['lr']:.3g}  "
            f"{train_stats['images_per_s']:.1f} img/s  val {format_metrics(val_metrics)}"
            + (f"  ema {format_metrics(ema_metrics)}" if ema_metrics else ""))
        if epoch + 1 < config.epochs and _stop_agreed(stop, env):
            raise _interrupted(stop, f"after epoch {epoch + 1}", run_dir)

    if start_epoch >= config.epochs:  # nothing left to train: report the finished run again
        model.eval()
        val_metrics = run_eval(model)

    summary = {
        "task": task, "model": config.model, "head": config.head, "recipe": config.recipe,
        "data": info.name, "num_classes": info.num_classes, "epochs": config.epochs,
        "metrics": val_metrics, "best": {"epoch": best_epoch, key: best_metric},
        "train_images": len(train_set), "val_images": validation.num_images,
        "skipped_images": sum(_count_unreadable(d, env) for d in (train_set, *validation.datasets)),
        "world_size": env.world_size, "wall_time_s": round(time.perf_counter() - t0, 1), "output": str(run_dir.root),
    }
    if ema_metrics is not None:
        summary["metrics_ema"] = ema_metrics
    if env.is_main:
        run_dir.save_weights(model, metadata={"model": config.model, "head": config.head,
                                              "num_classes": str(info.num_classes)})
        if ema is not None:
            run_dir.save_weights(ema.module, ema=True)
        run_dir.write_summary(summary)
        _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    lines = [
        "",
        f"NOAH run finished: {summary['model']} with a {summary['head']} head, recipe {summary['recipe']}",
        f"  data     {summary['data']} ({summary['task']}, {summary['num_classes']} classes, "
        f"{summary['train_images']} train / {summary['val_images']} val images"
        + (f", {summary['skipped_images']} unreadable skipped" if summary["skipped_images"] else "") + ")",
        f"  epochs   {summary['epochs']} in {summary['wall_time_s']:.0f} s",
        f"  val      {format_metrics(summary['metrics'])}",
    ]
    if "metrics_ema" in summary:
        lines.append(f"  val EMA  {format_metrics(summary['metrics_ema'])}")
    best = summary["best"]
    if best.get("epoch"):
        name = next(k for k in best if k != "epoch")
        lines.append(f"  best     {name} {best[name]:.2f} at epoch {best['epoch']}")
    files = ", ".join((RunDir.WEIGHTS, RunDir.BEST, RunDir.LAST, RunDir.METRICS, RunDir.SUMMARY))
    lines.append(f"  run      {summary['output']}  ({files})")
    print("\n".join(lines), flush=True)
