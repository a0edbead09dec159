"""``noah train``: one training loop for NOAH and GAP heads, in the style of timm's train.py.

Reads as: parse flags -> resolve the config (recipe <- YAML <- flags) -> build data, model,
optimizer, scheduler, EMA, AMP -> maybe resume -> for each epoch: seed, train, evaluate, write
``last.pt`` / ``best.pt`` / ``metrics.jsonl`` -> write ``model.safetensors`` and ``summary.json``.

Per-epoch randomness (shuffling, augmentation, dropout, Mixup) is re-seeded from
``(seed, epoch, rank)`` at the start of every epoch, so a run resumed from an epoch's checkpoint
replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from noah.engine.builders import (
    autocast_factory,
    batches,
    build_model,
    build_transform,
    load_pretrained,
    resolve_data_cfg,
)
from noah.engine.checkpoint import atomic_save, load_checkpoint, rng_state, save_checkpoint, save_weights, set_rng_state
from noah.engine.distributed import (
    DistEnv, ShardSampler, all_reduce_max, all_reduce_sum, cleanup_distributed, init_distributed, main_rank_first,
)
from noah.engine.evaluate import evaluate, format_metrics
from noah.engine.recipes import RECIPE_HELP, RECIPES, resolve_config
from noah.errors import CheckpointError, ConfigError, DataError, NoahError
from noah.metrics import primary_metric

__all__ = ["add_arguments", "run", "train", "NonFiniteLossError", "epoch_seed"]


class NonFiniteLossError(NoahError, FloatingPointError):
    """The training loss became NaN or infinite; the run stopped before the weights were touched."""


# --------------------------------------------------------------------------------------------
# command line


def _bool_flag(parser: argparse._ActionsContainer, name: str, help_text: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``noah train`` flags. Config flags default to "not given", so that the recipe and a
    YAML file fill in what the command line leaves out."""
    S = argparse.SUPPRESS
    recipes = "; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items())
    g = parser.add_argument_group("run")
    g.add_argument("--recipe", choices=list(RECIPES), default=None, help=f"preset (default demo). {recipes}")
    g.add_argument("--config", metavar="YAML", default=None, help="YAML file of config keys overriding the recipe")
    g.add_argument("--output", metavar="DIR", default=None, help="run folder (default runs/<model>-<head>-<time>)")
    g.add_argument("--resume", metavar="auto|PATH", default=None,
                   help="'auto': continue from OUTPUT/last.pt if it exists; PATH: from that checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    g.add_argument("--seed", type=int, default=S, help="random seed (default 0)")
    _bool_flag(g, "--deterministic", "deterministic algorithms (bit-exact resume on CPU)")
    g.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1, ...")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default=S,
                   help="mixed precision (auto: bf16 on GPU, none on CPU)")
    _bool_flag(g, "--channels-last", "channels-last memory format")
    _bool_flag(g, "--compile", "torch.compile the model")
    _bool_flag(g, "--sync-bn", "SyncBatchNorm under DistributedDataParallel (GPU)")

    g = parser.add_argument_group("data")
    g.add_argument("--data", default=S, help="image folder (ImageNet layout), COCO-format folder, or a built-in "
                   "dataset name: digits (default), digits-multilabel")
    g.add_argument("--task", choices=["multiclass", "multilabel"], default=S, help="override the detected task")
    g.add_argument("--data-size", type=int, nargs=2, metavar=("TRAIN", "VAL"), default=S,
                   help="built-in data: number of generated training and validation images")
    g.add_argument("--image-size", type=int, default=S, help="input size in pixels (default: the model's)")
    g.add_argument("--workers", type=int, default=S, help="data-loader processes per rank (default 2)")
    _bool_flag(g, "--skip-bad-images", "skip (and count) unreadable images instead of failing")
    g.add_argument("--threshold", type=float, default=S, help="multi-label score threshold (default 0.5)")

    g = parser.add_argument_group("model")
    g.add_argument("--model", default=S, help="a paper model (`noah models`) or any timm model name")
    g.add_argument("--head", choices=["noah", "gap"], default=S, help="NOAH head or the GAP+FC baseline")
    g.add_argument("--num-heads", type=int, default=S, help="NOAH's N (default: the paper's for the model)")
    g.add_argument("--key-ratio", type=float, default=S, help="NOAH's r")
    g.add_argument("--head-dropout", type=float, default=S, help="dropout in the head")
    g.add_argument("--head-impl", choices=("fast", "plain", "lean"), default=S,
                   help="NOAH head implementation: fast (default), plain (reference), lean (memory-lean "
                   "backward for many classes)")
    g.add_argument("--drop-path", type=float, default=S, help="stochastic depth rate of the backbone")
    g.add_argument("--output-stride", type=int, choices=[8, 16], default=S,
                   help="dilate the backbone's last stages for a larger final feature map")
    g.add_argument("--pretrained", metavar="FILE", default=S,
                   help="local weights: an official NOAH checkpoint or a backbone state dict")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S)
    g.add_argument("--batch-size", type=int, default=S, help="per process")
    g.add_argument("--lr", type=float, default=S)
    g.add_argument("--opt", default=S, help="any timm optimizer name: sgd, adamw, ...")
    g.add_argument("--momentum", type=float, default=S)
    g.add_argument("--weight-decay", type=float, default=S)
    _bool_flag(g, "--bn-wd", "weight decay on biases and normalisation layers too (--no-bn-wd: not)")
    g.add_argument("--sched", choices=["cosine", "step", "poly", "constant", "multistep"], default=S)
    g.add_argument("--decay-epochs", type=float, default=S)
    g.add_argument("--decay-rate", type=float, default=S)
    g.add_argument("--decay-milestones", type=int, nargs="+", default=S, help="epochs of the multistep decays")
    g.add_argument("--min-lr", type=float, default=S)
    g.add_argument("--warmup-epochs", type=int, default=S)
    g.add_argument("--warmup-lr", type=float, default=S)
    g.add_argument("--grad-clip", type=float, default=S, help="clip the gradient norm to this value")
    _bool_flag(g, "--ema", "keep an exponential moving average of the weights")
    g.add_argument("--ema-decay", type=float, default=S)
    g.add_argument("--freeze-backbone-epochs", type=int, default=S, help="train only the head at first")

    g = parser.add_argument_group("augmentation")
    g.add_argument("--train-crop", choices=["rrc", "squash"], default=S)
    g.add_argument("--scale", type=float, nargs=2, default=S, help="random-resized-crop area range")
    g.add_argument("--crop-pct", type=float, default=S, help="evaluation center-crop share")
    g.add_argument("--hflip", type=float, default=S)
    g.add_argument("--color-jitter", type=float, default=S)
    g.add_argument("--auto-augment", "--aa", dest="auto_augment", default=S, help="e.g. rand-m9-mstd0.5-inc1")
    g.add_argument("--reprob", type=float, default=S, help="random erasing probability")
    g.add_argument("--mixup", type=float, default=S, help="Mixup alpha")
    g.add_argument("--cutmix", type=float, default=S, help="CutMix alpha")
    g.add_argument("--mixup-prob", type=float, default=S)
    g.add_argument("--smoothing", type=float, default=S, help="label smoothing")


_RUN_KEYS = ("recipe", "config", "output", "resume", "quiet", "command", "_run")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the recipe, the ``--config`` YAML and the flags that were given into one config."""
    overrides = {k: v for k, v in vars(args).items() if k not in _RUN_KEYS}
    for key in ("data_size", "scale", "decay_milestones"):
        if key in overrides:
            overrides[key] = list(overrides[key])
    return resolve_config(args.recipe, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    train(config, output=args.output, resume=args.resume, quiet=args.quiet)
    return 0


# --------------------------------------------------------------------------------------------
# pieces of the loop


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch, rank)`` (epoch -1: set-up); same triple, same seed."""
    state = np.random.SeedSequence([seed, epoch + 1, rank]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (needed for bit-exact reruns; GPUs also need CUBLAS_WORKSPACE_CONFIG)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.cuda.is_available()


def build_criterion(config: dict[str, Any], task: str, mixup_active: bool) -> nn.Module:
    """Training loss: BCE-with-logits (multi-label), soft-target CE (Mixup/CutMix), label-smoothing
    CE, or plain CE."""
    if task == "multilabel":
        return nn.BCEWithLogitsLoss()
    if mixup_active:
        return SoftTargetCrossEntropy()
    if config["smoothing"] > 0:
        return LabelSmoothingCrossEntropy(smoothing=config["smoothing"])
    return nn.CrossEntropyLoss()


def build_optimizer_and_scheduler(config: dict[str, Any], model: nn.Module, updates_per_epoch: int) -> tuple[Any, Any]:
    """timm optimizer and a per-update timm scheduler for the config's recipe.

    Call before freezing anything: timm leaves parameters without ``requires_grad`` out of the
    optimizer's groups. The scheduler is stepped with ``step_update(num_updates)`` after every
    optimizer step, so warm-up and decay are smooth within epochs.
    """
    optimizer = create_optimizer_v2(model, opt=config["opt"], lr=config["lr"], weight_decay=config["weight_decay"],
                                    momentum=config["momentum"], filter_bias_and_bn=not config["bn_wd"])
    # linear warm-up first, then the schedule over the remaining epochs (ends at min_lr on time)
    warmup = config["warmup_epochs"]
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=config["sched"], num_epochs=max(config["epochs"] - warmup, 1), warmup_prefix=True,
        decay_epochs=config["decay_epochs"],
        decay_rate=config["decay_rate"], decay_milestones=list(config["decay_milestones"]),
        min_lr=config["min_lr"], warmup_lr=config["warmup_lr"],
        warmup_epochs=warmup, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (no gradients, BN statistics kept) or release the backbone; the head always trains."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    model.backbone.train(not frozen)


def _show_progress(quiet: bool, env: DistEnv) -> bool:
    return env.is_main and not quiet and sys.stderr.isatty()


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
    scaler: torch.amp.GradScaler | None = None,
    mixup: Mixup | None = None,
    ema: ModelEmaV3 | None = None,
    ema_model: nn.Module | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress: tqdm | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; returns ``({"loss", "lr", "images_per_s", "time"}, num_updates)``.

    ``model`` is what runs forward (maybe DDP-wrapped / compiled), already in training mode;
    ``ema_model`` the plain model the EMA follows. Raises :class:`NonFiniteLossError` *before* a non-finite loss reaches the
    weights, on every rank at once (the loss is all-reduced first).
    """
    start = time.perf_counter()
    loss_sum, seen = 0.0, 0
    for step, (images, target) in enumerate(batches(loader)):
        images = images.to(env.device, non_blocking=True)
        target = target.to(env.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, target = mixup(images, target)
        with autocast():
            output = model(images)
            loss = criterion(output, target)
        check = loss.detach().float().clone()
        if env.distributed:
            dist.all_reduce(check)
        if not torch.isfinite(check):
            raise NonFiniteLossError(
                f"training loss became {check.item()} at epoch {epoch + 1}, step {step + 1} "
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
        loss_sum += float(check) / env.world_size * batch
        seen += batch
        if progress is not None:
            progress.update(1)
            rate = seen * env.world_size / (time.perf_counter() - start)
            progress.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{rate:.1f}", refresh=False)
    elapsed = time.perf_counter() - start
    total_seen = all_reduce_sum(float(seen), env.device)
    loss_total = all_reduce_sum(loss_sum, env.device)
    return {
        "loss": loss_total / max(total_seen, 1.0),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": total_seen / elapsed if elapsed > 0 else 0.0,
        "time": elapsed,
    }, num_updates


def builtin_data_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Sizes for built-in datasets: ``data_size`` images, canvases drawn at the input size (the
    scenes scale with the canvas, so this equals drawing at 224 px and resizing, only cheaper)."""
    kwargs: dict[str, Any] = {}
    if config.get("data_size"):
        kwargs["num_train"], kwargs["num_val"] = config["data_size"]
    if config.get("image_size"):
        kwargs["image_size"] = config["image_size"]
    return kwargs


def build_loaders(
    config: dict[str, Any], train_set: Any, val_set: Any, env: DistEnv
) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Training loader (shuffled: DistributedSampler under DDP, else by the returned generator,
    which the loop re-seeds every epoch) and validation loader (each rank a disjoint shard)."""
    generator = torch.Generator()
    sampler = None
    if env.distributed:
        sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=config["seed"])
    common = dict(batch_size=config["batch_size"], num_workers=config["workers"],
                  pin_memory=env.device.type == "cuda", generator=generator)
    # full batches only (BatchNorm and Mixup want them), unless a rank's share is smaller than one
    drop_last = len(train_set) // env.world_size >= config["batch_size"]
    train_loader = DataLoader(train_set, shuffle=sampler is None, sampler=sampler, drop_last=drop_last, **common)
    val_loader = DataLoader(val_set, sampler=ShardSampler(len(val_set), env.rank, env.world_size), **common)
    return train_loader, val_loader, generator


def _restore(state: dict[str, Any], path: str, model: nn.Module, optimizer: Any, scheduler: Any,
             scaler: Any, ema: ModelEmaV3 | None) -> tuple[int, float | None, int | None]:
    """Load a training checkpoint's states; returns ``(epochs done, best metric, its epoch)``."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit this model/config: {str(exc).splitlines()[0]}") from exc
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None and state.get("ema"):
        ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return int(state["epoch"]), state.get("best_metric"), state.get("best_epoch")


def _default_output(config: dict[str, Any]) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config['model'].replace('/', '_')}-{config['head']}-{stamp}")


def _trim_metrics_log(path: str, completed_epochs: int) -> None:
    """Keep only the lines of epochs a resumed run will not redo."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and json.loads(line).get("epoch", 0) <= completed_epochs]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)

    atomic_save(write, path)


def _write_json(path: str, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_save(write, path)


def _write_yaml(path: str, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(obj, f, sort_keys=False)

    atomic_save(write, path)


def _resume_path(resume: str | None, output: str) -> str | None:
    if resume is None:
        return None
    if resume == "auto":
        path = os.path.join(output, "last.pt")
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise ConfigError(f"--resume: checkpoint not found: {resume}")
    return resume


# --------------------------------------------------------------------------------------------
# the run


def train(config: dict[str, Any], output: str | None = None, resume: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train with a resolved ``config`` (see :mod:`noah.engine.recipes`); returns the summary dict.

    ``output`` is the run folder; ``resume`` is ``None``, ``"auto"`` (``output/last.pt`` if it
    exists) or a checkpoint path.
    """
    env = init_distributed(config["device"])
    try:
        return _train(config, env, output, resume, quiet)
    finally:
        cleanup_distributed()


def _count_unreadable(dataset: Any, env: DistEnv) -> int:
    """Distinct unreadable images of ``dataset`` seen by any rank (or its loader workers)."""
    flags = getattr(dataset, "unreadable", None)
    if flags is None:
        return 0
    return int(all_reduce_max(flags, env.device).sum())


def _train(config: dict[str, Any], env: DistEnv, output: str | None, resume: str | None, quiet: bool) -> dict[str, Any]:
    from noah.data import create_dataset, resolve_dataset

    t0 = time.perf_counter()
    say = print if env.is_main and not quiet else (lambda *a, **k: None)
    if resume == "auto" and output is None:
        raise ConfigError("--resume auto needs --output DIR (the run folder to continue)")
    output = output or _default_output(config)
    set_deterministic(bool(config["deterministic"]))
    seed_everything(epoch_seed(config["seed"], -1, env.rank))

    # ---- data
    # rank 0 generates built-in data first; if it cannot, every rank stops with its error
    data_kwargs = builtin_data_kwargs(config)
    info = main_rank_first(lambda: resolve_dataset(config["data"], task=config["task"], **data_kwargs), env)
    task = info.task

    # ---- model
    model = build_model(config, info.num_classes)
    if config.get("pretrained"):
        say(load_pretrained(model, config["pretrained"]))
    data_cfg = resolve_data_cfg(config, model)
    on_bad = "skip" if config["skip_bad_images"] else "error"
    train_set = create_dataset(info, "train", transform=build_transform(config, data_cfg, True), on_bad_image=on_bad)
    val_set = create_dataset(info, "val", transform=build_transform(config, data_cfg, False), on_bad_image=on_bad)
    if len(train_set) == 0 or len(val_set) == 0:
        raise DataError(f"{info.root}: the training or validation split holds no images")

    model.to(env.device)
    if config["sync_bn"] and env.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config["channels_last"]:
        model.to(memory_format=torch.channels_last)

    train_loader, val_loader, generator = build_loaders(config, train_set, val_set, env)

    # ---- optimisation
    mixup_active = config["mixup"] > 0 or config["cutmix"] > 0
    mixup = None
    if mixup_active:
        mixup = Mixup(mixup_alpha=config["mixup"], cutmix_alpha=config["cutmix"], prob=config["mixup_prob"],
                      switch_prob=config["mixup_switch_prob"], label_smoothing=config["smoothing"],
                      num_classes=info.num_classes, multi_label=task == "multilabel")
    criterion = build_criterion(config, task, mixup_active)
    val_criterion = nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()
    updates_per_epoch = len(train_loader)
    optimizer, scheduler = build_optimizer_and_scheduler(config, model, updates_per_epoch)
    autocast, amp_dtype = autocast_factory(config["amp"], env.device)
    scaler = torch.amp.GradScaler(env.device.type) if amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=config["ema_decay"]) if config["ema"] else None

    # ---- resume
    start_epoch, best_metric, best_epoch = 0, None, None
    resume_path = _resume_path(resume, output)
    if resume_path:
        start_epoch, best_metric, best_epoch = _restore(load_checkpoint(resume_path), resume_path, model, optimizer,
                                                         scheduler, scaler, ema)
        scheduler.step_update(num_updates=start_epoch * updates_per_epoch)
        say(f"resumed from {resume_path} after epoch {start_epoch}")

    metrics_log = os.path.join(output, "metrics.jsonl")
    classes = {"task": task, "class_names": list(info.class_names)}
    if env.is_main:
        os.makedirs(output, exist_ok=True)
        _write_yaml(os.path.join(output, "config.yaml"), config)
        _write_json(os.path.join(output, "classes.json"), classes)
        if start_epoch == 0 and os.path.exists(metrics_log):
            os.unlink(metrics_log)
        _trim_metrics_log(metrics_log, start_epoch)
    say(f"training {config['model']} ({config['head']} head, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        f"params) on {info.name}: {task}, {info.num_classes} classes, {len(train_set)} train / {len(val_set)} val "
        f"images, {config['epochs']} epochs, recipe {config['recipe']}, device {env.device}"
        + (f" x{env.world_size}" if env.distributed else ""))

    def run_eval(m: nn.Module) -> dict[str, float]:
        return evaluate(m, val_loader, task, info.num_classes, env.device, autocast, criterion=val_criterion,
                        threshold=config["threshold"], channels_last=config["channels_last"])

    # ---- epochs
    key = primary_metric(task)
    val_metrics: dict[str, float] = {}
    ema_metrics: dict[str, float] | None = None
    num_updates = start_epoch * updates_per_epoch
    train_model: nn.Module = model
    frozen_state: bool | None = None
    for epoch in range(start_epoch, config["epochs"]):
        seed = epoch_seed(config["seed"], epoch, env.rank)
        seed_everything(seed)
        generator.manual_seed(seed)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        frozen = epoch < config["freeze_backbone_epochs"]
        if frozen != frozen_state:  # (re)wrap: DDP only reduces parameters that need gradients
            set_backbone_frozen(model, frozen)
            train_model = DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None) \
                if env.distributed else model
            if config["compile"]:
                train_model = torch.compile(train_model)
            frozen_state = frozen
        model.train()
        if frozen:
            model.backbone.eval()
        progress = tqdm(total=updates_per_epoch, desc=f"epoch {epoch + 1}/{config['epochs']}", unit="batch",
                        leave=False, dynamic_ncols=True) if _show_progress(quiet, env) else None
        try:
            train_stats, num_updates = train_one_epoch(
                train_model, train_loader, criterion, optimizer, scheduler, epoch, num_updates, env, autocast,
                scaler=scaler, mixup=mixup, ema=ema, ema_model=model, grad_clip=config["grad_clip"],
                channels_last=config["channels_last"], progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
        if env.distributed and not config["sync_bn"]:
            # each rank updated its own BN statistics; average them so that every rank evaluates
            # (and rank 0 saves) the same model
            distribute_bn(model, env.world_size, reduce=True)
            if ema is not None:
                distribute_bn(ema.module, env.world_size, reduce=True)
        val_metrics = run_eval(model)
        ema_metrics = None
        if ema is not None:
            ema_metrics = run_eval(ema.module)
        scheduler.step(epoch + 1)
        improved = best_metric is None or val_metrics[key] > best_metric
        if improved:
            best_metric, best_epoch = val_metrics[key], epoch + 1
        if env.is_main:
            state = {
                "epoch": epoch + 1, "config": config, "classes": classes, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
                "metrics": val_metrics, "best_metric": best_metric, "best_epoch": best_epoch,
            }
            # the log line first: a run killed before the checkpoint redoes this epoch and trims it
            record = {"epoch": epoch + 1, "train": train_stats, "val": val_metrics}
            if ema_metrics is not None:
                record["val_ema"] = ema_metrics
            with open(metrics_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(state, os.path.join(output, "last.pt"))
            if improved:
                save_checkpoint(state, os.path.join(output, "best.pt"))
        say(f"epoch {epoch + 1}/{config['epochs']}  loss {train_stats['loss']:.4f}  lr {train_stats['lr']:.3g}  "
            f"{train_stats['images_per_s']:.1f} img/s  val {format_metrics(val_metrics)}"
            + (f"  ema {format_metrics(ema_metrics)}" if ema_metrics else ""))

    if start_epoch >= config["epochs"]:  # nothing left to train: report the finished run again
        model.eval()
        val_metrics = run_eval(model)

    summary = {
        "task": task, "model": config["model"], "head": config["head"], "recipe": config["recipe"],
        "data": info.name, "num_classes": info.num_classes, "epochs": config["epochs"],
        "metrics": val_metrics, "best": {"epoch": best_epoch, key: best_metric},
        "train_images": len(train_set), "val_images": len(val_set),
        "skipped_images": _count_unreadable(train_set, env) + _count_unreadable(val_set, env),
        "world_size": env.world_size, "wall_time_s": round(time.perf_counter() - t0, 1), "output": output,
    }
    if ema_metrics is not None:
        summary["metrics_ema"] = ema_metrics
    if env.is_main:
        save_weights(model, os.path.join(output, "model.safetensors"),
                     metadata={"model": config["model"], "head": config["head"], "num_classes": str(info.num_classes)})
        if ema is not None:
            save_weights(ema.module, os.path.join(output, "model_ema.safetensors"))
        _write_json(os.path.join(output, "summary.json"), summary)
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
    lines.append(f"  run      {summary['output']}  (model.safetensors, best.pt, last.pt, metrics.jsonl, summary.json)")
    print("\n".join(lines), flush=True)
