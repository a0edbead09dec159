"""The training configuration: one typed schema for every option of ``noah train``.

:class:`TrainConfig` is the single source of the training options: their names, types,
defaults, allowed values and help text live in its fields. Everything else is derived from it:

* the ``noah train`` flags (:func:`add_config_arguments`; ``--lr`` for ``lr``, ``--no-ema`` for a
  boolean, ...), and the subset that ``noah eval`` accepts;
* validation of recipes and YAML files (:meth:`TrainConfig.from_dict`): an unknown key or a value
  of the wrong type or range is a :class:`~noah.errors.ConfigError` naming the key;
* ``config.yaml`` in a run folder and the ``config`` entry of a checkpoint
  (:meth:`TrainConfig.to_dict`).

How recipes, a YAML file and the flags are layered is :mod:`noah.engine.recipes`' business.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import yaml

from noah.data import BUILTIN_DATASETS, FORMATS, TASKS
from noah.errors import ConfigError
from noah.head import ATTENTIONS, MERGES, available_impls, head_options, variants
from noah.head.csra import TEMPERATURES
from noah.metrics import DISTANCES
from noah.models import EMBEDDING_POOLS, HEAD_TYPES

__all__ = [
    "TrainConfig", "add_config_arguments", "config_fields", "load_yaml_config", "MODEL_DEFINING_FIELDS",
    "HEAD_OPTION_FIELDS",
]

#: the options of the head types (noah.head.head_options()); None leaves the head's default
HEAD_OPTION_FIELDS = head_options()
#: what makes a checkpoint's weights belong to a model; a resumed run must match these
MODEL_DEFINING_FIELDS = ("model", "head", "num_heads", "key_ratio", "head_dropout", "output_stride", "embed_dim",
                         *HEAD_OPTION_FIELDS)

Check = Callable[[Any], "str | None"]  # returns what the value should be, or None if it is fine


def _at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"at least {low:g}"


def _between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    def check(v: float) -> str | None:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if ok:
            return None
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    return check


def _all(check: Check) -> Check:
    """Apply ``check`` to every element of a tuple value."""

    def check_all(values: tuple) -> str | None:
        for value in values:
            problem = check(value)
            if problem:
                return f"a list of values each {problem}"
        return None

    return check_all


def option(
    default: Any,
    help: str,
    *,
    group: str,
    choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None,
    check: Check | None = None,
    aliases: tuple[str, ...] = (),
    metavar: str | None = None,
    flag: bool = True,
) -> Any:
    """A :class:`TrainConfig` field with what the flag and the validation need to know.

    ``choices`` may be a callable, for lists that are only known once other modules have
    registered their entries; ``check`` tests the value's range; ``flag=False`` keeps the option
    out of the command line (YAML and recipes only).
    """
    metadata = dict(help=help, group=group, choices=choices, check=check, aliases=aliases, metavar=metavar, flag=flag)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run, with its default (the standard ImageNet ResNet set-up of
    SPEC §5). Build one with :func:`noah.engine.recipes.resolve_config` or :meth:`from_dict`;
    change one with :func:`dataclasses.replace` (which validates again)."""

    recipe: str | None = option(None, "the preset this configuration started from (None: none)", group="runtime",
                                flag=False)
    # ---- runtime
    seed: int = option(0, "random seed", group="runtime", check=_at_least(0))
    deterministic: bool = option(False, "deterministic algorithms (bit-exact resume on CPU)", group="runtime")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", group="runtime")
    amp: str = option("auto", "mixed precision (auto: bf16 on GPU, none on CPU)", group="runtime",
                      choices=("auto", "bf16", "fp16", "none"))
    channels_last: bool = option(False, "channels-last memory format", group="runtime")
    compile: bool = option(False, "torch.compile the model", group="runtime")
    sync_bn: bool = option(False, "SyncBatchNorm under DistributedDataParallel (GPU)", group="runtime")
    # ---- data
    data: str | None = option(None, "image folder (ImageNet layout), COCO-format folder, or a built-in dataset: "
                              + ", ".join(BUILTIN_DATASETS), group="data")
    task: str | None = option(None, "override the detected task", group="data", choices=TASKS)
    format: str | None = option(None, "data format (default: detected from the folder)", group="data",
                                choices=tuple(FORMATS))
    train_split: str | None = option(None, "the dataset's split to train on (e.g. VOC trainval; default: the "
                                     "format's)", group="data")
    val_split: str | None = option(None, "the dataset's split to validate on (e.g. VOC test; default: the format's)",
                                   group="data")
    difficult: str = option("ignore", "Pascal VOC objects marked difficult: left out of the loss and the AP for that "
                            "image and class (ignore, as the field does), or counted as positives", group="data",
                            choices=("ignore", "positive"))
    balanced_sampling: bool = option(False, "draw training images class-balanced (every class equally often; for "
                                     "long-tailed multi-class data)", group="data")
    data_size: tuple[int, int] | None = option(None, "built-in data: number of generated training and validation "
                                               "images", group="data", metavar=("TRAIN", "VAL"), check=_all(_at_least(1)))
    image_size: int | None = option(None, "input size (height) in pixels (default: the model's)", group="data",
                                    check=_at_least(1))
    image_width: int | None = option(None, "input width in pixels if not square (re-ID: 128 for 256-high "
                                     "persons; default: the image size)", group="data", check=_at_least(1))
    workers: int = option(2, "data-loader processes per rank", group="data", check=_at_least(0))
    skip_bad_images: bool = option(False, "skip (and count) unreadable images instead of failing", group="data")
    threshold: float = option(0.5, "multi-label score threshold for CP/CR/OP/OR and `noah predict`", group="data",
                              check=_between(0, 1, True, True))
    # ---- model
    model: str = option("resnet18", "a paper model (`noah models`) or any timm model name", group="model")
    head: str = option("noah", "NOAH head, the GAP+FC baseline, or a comparison head: sa (self-attention, the "
                       "paper's Table XI), csra (class-specific residual attention)", group="model", choices=HEAD_TYPES)
    num_heads: int | None = option(None, "NOAH's N (default: the paper's for the model)", group="model",
                                   check=_at_least(1))
    key_ratio: float | None = option(None, "NOAH's r (default: the paper's for the model)", group="model",
                                     check=_between(0, 1, True, True))
    head_dropout: float | None = option(None, "dropout in the head (default: the paper's for the model)",
                                        group="model", check=_between(0, 1, high_open=True))
    head_impl: str = option("fast", "NOAH head implementation (noah.head.available_impls()): fast, plain (the "
                            "reference formula), lean (memory-lean backward for many classes), ...", group="model",
                            choices=available_impls)
    # ---- head options (noah.head.head_options(); None: the head's default; a head refuses options it has no use for)
    head_split: bool | None = option(None, "NOAH's first-level split (--no-head-split: every block sees all key and "
                                     "value channels; Table VII)", group="head")
    kv_split: bool | None = option(None, "NOAH's second-level split (--no-kv-split: key and value embeddings both "
                                   "see all channels; Table VII)", group="head")
    attention: str | None = option(None, "NOAH's attention: softmax over positions (the standard), over classes "
                                   "(Table VIII) or a sigmoid (Table X (c))", group="head", choices=ATTENTIONS)
    merge: str | None = option(None, "how NOAH reduces each block's local POCA map over the positions: sum (the "
                               "standard), avg or max (Table IX)", group="head", choices=MERGES)
    variant: str | None = option(None, "POCA variant (a)-(f) of the paper's Table X (default: the standard block)",
                                 group="head", choices=variants)
    key_width: int | None = option(None, "M' of POCA variants a and b (default C, resp. C/N)", group="head",
                                   check=_at_least(1))
    sa_dim: int | None = option(None, "width d of the sa head's attention layer (default C/4)", group="head",
                                check=_at_least(1))
    csra_heads: int | None = option(None, "CSRA heads, each with CSRA's temperature (default 1)", group="head",
                                    choices=tuple(TEMPERATURES))
    csra_lambda: float | None = option(None, "CSRA's lambda, weight of its attention term (default 0.1)",
                                       group="head", check=_between(0, math.inf, low_open=True))
    drop_path: float | None = option(None, "stochastic depth rate of the backbone", group="model",
                                     check=_between(0, 1, high_open=True))
    output_stride: int | None = option(None, "dilate the backbone's last stages for a larger final feature map",
                                       group="model", choices=(8, 16))
    pretrained: str | None = option(None, "local weights: an official NOAH checkpoint or a backbone state dict",
                                    group="model", metavar="FILE")
    embed_dim: int | None = option(None, "a per-position linear embedding of this width before the head (re-ID: "
                                   "512, the paper's FC after pooling); its pooled output is the retrieval "
                                   "descriptor", group="model", check=_at_least(1))
    embedding_pool: str = option("attention", "re-ID descriptor of a NOAH model: the embedding map pooled where the "
                                 "head attends (attention) or uniformly (average, what GAP models always do)",
                                 group="model", choices=EMBEDDING_POOLS)
    reid_distance: str = option("cosine", "re-ID matching distance", group="data", choices=DISTANCES)
    # ---- optimisation (timm.optim.create_optimizer_v2 / timm.scheduler.create_scheduler_v2)
    epochs: int = option(100, "epochs to train", group="optimisation", check=_at_least(1))
    batch_size: int = option(256, "batch size per process", group="optimisation", check=_at_least(1))
    opt: str = option("sgd", "any timm optimizer name: sgd, adamw, ...", group="optimisation")
    amsgrad: bool = option(False, "the AMSGrad variant of Adam / AdamW", group="optimisation")
    lr: float = option(0.1, "peak learning rate", group="optimisation", check=_between(0, math.inf, low_open=True))
    momentum: float = option(0.9, "SGD momentum", group="optimisation", check=_between(0, 1))
    weight_decay: float = option(1e-4, "weight decay", group="optimisation", check=_at_least(0))
    bn_wd: bool = option(True, "weight decay on biases and normalisation layers too (--no-bn-wd: not)",
                         group="optimisation")
    sched: str = option("step", "learning-rate schedule (poly with decay rate 1 is linear)", group="optimisation",
                        choices=("cosine", "step", "poly", "constant", "multistep"))
    decay_epochs: float = option(30, "epochs between step decays", group="optimisation", check=_at_least(0))
    decay_rate: float = option(0.1, "factor of a step decay, power of the poly schedule", group="optimisation")
    decay_milestones: tuple[int, ...] = option((30, 60, 90), "epochs of the multistep decays", group="optimisation",
                                               check=_all(_at_least(0)))
    min_lr: float = option(0.0, "learning rate at the end of the schedule", group="optimisation", check=_at_least(0))
    warmup_epochs: int = option(0, "linear warm-up epochs before the schedule", group="optimisation",
                                check=_at_least(0))
    warmup_lr: float = option(1e-6, "learning rate at the start of the warm-up", group="optimisation",
                              check=_at_least(0))
    grad_clip: float | None = option(None, "clip the gradient norm to this value", group="optimisation",
                                     check=_between(0, math.inf, low_open=True))
    ema: bool = option(False, "keep an exponential moving average of the weights", group="optimisation")
    ema_decay: float = option(0.9998, "decay of the weight average", group="optimisation", check=_between(0, 1))
    freeze_backbone_epochs: int = option(0, "train only the head for this many epochs first", group="optimisation",
                                         check=_at_least(0))
    # ---- augmentation (timm.data.create_transform / Mixup)
    train_crop: str = option("rrc", "rrc: random resized crop; squash: resize the whole image to the square input",
                             group="augmentation", choices=("rrc", "squash"))
    scale: tuple[float, float] = option((0.08, 1.0), "random-resized-crop area range", group="augmentation",
                                        check=_all(_between(0, 1, low_open=True)))
    crop_pct: float = option(0.875, "evaluation: resize to image_size / crop_pct, then center-crop",
                             group="augmentation", check=_between(0, 1, low_open=True))
    hflip: float = option(0.5, "horizontal flip probability", group="augmentation", check=_between(0, 1))
    color_jitter: float = option(0.0, "colour jitter strength", group="augmentation", check=_at_least(0))
    auto_augment: str | None = option(None, "timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1",
                                      group="augmentation", aliases=("--aa",))
    reprob: float = option(0.0, "random erasing probability", group="augmentation", check=_between(0, 1))
    mixup: float = option(0.0, "Mixup alpha", group="augmentation", check=_at_least(0))
    cutmix: float = option(0.0, "CutMix alpha", group="augmentation", check=_at_least(0))
    mixup_prob: float = option(1.0, "probability of Mixup or CutMix per batch", group="augmentation",
                               check=_between(0, 1))
    mixup_switch_prob: float = option(0.5, "probability of CutMix instead of Mixup when both are on",
                                      group="augmentation", check=_between(0, 1))
    smoothing: float = option(0.0, "label smoothing", group="augmentation", check=_between(0, 1, high_open=True))

    def __post_init__(self) -> None:
        hints = _type_hints()
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
            _check_value(f, value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "the configuration") -> "TrainConfig":
        """A config from a mapping of keys (``-`` or ``_`` spelling) to values; missing keys take
        their defaults. Unknown keys and bad values raise :class:`ConfigError` naming the key and
        ``origin`` (e.g. the YAML file)."""
        values = normalise_keys(values, origin)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready values (tuples as lists), in field order."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def model_differences(self, other: "TrainConfig") -> list[str]:
        """``"model resnet18 vs mobilenetv2_035"`` per :data:`MODEL_DEFINING_FIELDS` entry that differs."""
        return [f"{k} {getattr(self, k)} vs {getattr(other, k)}" for k in MODEL_DEFINING_FIELDS
                if getattr(self, k) != getattr(other, k)]


def config_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(TrainConfig)


def normalise_keys(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """``values`` with ``-`` spelled ``_``; :class:`ConfigError` for keys that are not options."""
    names = {f.name for f in config_fields()}
    out = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(out) - names)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) in {origin}: {', '.join(unknown)} "
                          "(see `noah train --help` for the options)")
    return out


_HINTS: dict[str, Any] = {}


def _type_hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(TrainConfig))
    return _HINTS


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}s"
        return f"a list of {len(args)} {_describe(args[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (ints for floats, lists for tuples, numeric strings for numbers,
    as YAML writes ``1e-4``), or :class:`ConfigError` naming ``name``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{name} must be {_describe(tp)}, got {value!r}")
    if origin is not None and type(None) in args:  # X | None
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        element = args[0]
        if not (len(args) == 2 and args[1] is Ellipsis) and len(value) != len(args):
            raise bad
        try:
            return tuple(_coerce(name, v, element) for v in value)
        except ConfigError:
            raise bad from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"TrainConfig field {name} has an unsupported type {tp}")  # a bug in the schema


def _choices(f: dataclasses.Field) -> tuple | None:
    choices = f.metadata["choices"]
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _check_value(f: dataclasses.Field, value: Any) -> None:
    if value is None:
        return
    choices = _choices(f)
    if choices is not None and value not in choices:
        raise ConfigError(f"{f.name} must be one of {', '.join(str(c) for c in choices)}, got {value!r}")
    check = f.metadata["check"]
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(f"{f.name} must be {problem}, got {value!r}")


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of configuration keys from ``path`` (keys checked, values not yet)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path} must hold a mapping of configuration keys, got {type(loaded).__name__}")
    recipe = loaded.get("recipe")
    values = normalise_keys({k: v for k, v in loaded.items() if k != "recipe"}, str(path))
    return values if recipe is None else {"recipe": recipe, **values}


def _flag_type(tp: Any) -> tuple[Any, Any]:
    """``(argparse type, nargs)`` for a field type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is not None and type(None) in args:
        return _flag_type(next(a for a in args if a is not type(None)))
    if origin is tuple:
        nargs = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        return args[0], nargs
    return tp, None


def add_config_arguments(
    parser: argparse.ArgumentParser, only: Iterable[str] | None = None, default_text: str | None = None
) -> None:
    """Add a flag per :class:`TrainConfig` option (or per option in ``only``) to ``parser``.

    Flags default to "not given" (``argparse.SUPPRESS``), so that only what the user typed
    overrides the recipe and the YAML file (:func:`given_options` collects them); booleans get
    ``--x`` / ``--no-x``. The help shows each option's default, or ``default_text`` instead.
    """
    wanted = set(only) if only is not None else None
    hints = _type_hints()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in config_fields():
        if not f.metadata["flag"] or (wanted is not None and f.name not in wanted):
            continue
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        flags = [f"--{f.name.replace('_', '-')}", *f.metadata["aliases"]]
        shown = default_text or (list(f.default) if isinstance(f.default, tuple) else f.default)
        help_text = f.metadata["help"]
        if "default" not in help_text:  # options whose help already says what None means
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        tp, nargs = _flag_type(hints[f.name])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            if nargs is not None:
                kwargs["nargs"] = nargs
            choices = _choices(f)
            if choices is not None:
                kwargs["choices"] = [c for c in choices if c is not None]
            if f.metadata["metavar"] is not None:
                kwargs["metavar"] = f.metadata["metavar"]
        groups[group_name].add_argument(*flags, **kwargs)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options the user gave on the command line (flags added by
    :func:`add_config_arguments`), by field name."""
    names = {f.name for f in config_fields() if f.metadata["flag"]}
    return {k: v for k, v in vars(args).items() if k in names}
