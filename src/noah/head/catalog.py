"""Heads by name: the types ``create_model(head=...)`` and ``--head`` offer, and NOAH's POCA variants.

Two small tables, filled when :mod:`noah.head` imports the modules that define the heads:

* **head types** (:class:`HeadType`, :func:`register_head_type`): ``"noah"`` and ``"gap"``
  (registered here), ``"sa"`` (:mod:`~noah.head.self_attention`, the paper's Table XI) and
  ``"csra"`` (:mod:`~noah.head.csra`). :func:`build_head` builds one from the backbone's channel
  count, the class count, the shared settings ``num_heads``/``key_ratio``/``dropout`` (a type
  that has no use for one ignores it) and the type's own options; an option the type does not
  take is a one-line :class:`~noah.errors.ConfigError`.
* **POCA variants** (:class:`POCAVariant`, :func:`register_variant`): the designs (a)-(f) of the
  paper's Table X, chosen with the ``"noah"`` type's ``variant`` option. (c) and (d) are
  :class:`~noah.head.NOAHHead` switches and are registered here; (a)/(b)
  (:mod:`~noah.head.reduced`), (e) (:mod:`~noah.head.shared`) and (f)
  (:mod:`~noah.head.prelinear`) are modules of their own that register themselves.

Every option is ``None`` when not given (the head's own default); only given options are checked
and passed on, so one set of options can be offered to every head type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from timm.layers import ClassifierHead
from torch import nn

from noah.errors import ConfigError
from noah.head.module import NOAHHead

__all__ = [
    "HeadType", "register_head_type", "head_types", "head_type", "head_options", "build_head",
    "POCAVariant", "register_variant", "variants", "NOAH_SWITCHES", "SHARED_SETTINGS",
]

#: the :class:`NOAHHead` switches the ``"noah"`` type takes as options
NOAH_SWITCHES = ("head_split", "kv_split", "attention", "merge")
#: the settings every head type is built with (a type may ignore some: :attr:`HeadType.uses`)
SHARED_SETTINGS = ("num_heads", "key_ratio", "dropout")


@dataclass(frozen=True)
class HeadType:
    """A head selectable by ``name``.

    ``build(in_channels, num_classes, *, num_heads, key_ratio, dropout, **options)`` returns a
    module mapping ``(B, C, H, W)`` features to ``(B, M)`` logits; ``options`` names what it
    takes beyond the shared settings, ``uses`` which of the shared settings it reads (the others
    it ignores).
    """

    name: str
    description: str
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    uses: tuple[str, ...] = SHARED_SETTINGS


@dataclass(frozen=True)
class POCAVariant:
    """A POCA block design of Table X: ``build(in_channels, num_classes, *, num_heads, key_ratio,
    dropout, **options)`` with ``options`` among what the variant takes."""

    letter: str
    description: str
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()


_TYPES: dict[str, HeadType] = {}
_VARIANTS: dict[str, POCAVariant] = {}


def register_head_type(head: HeadType) -> HeadType:
    """Make ``head`` selectable by its name; returns it."""
    if not head.name or head.name in _TYPES:
        raise ConfigError(f"cannot register head type {head.name!r}: the name is empty or already taken")
    _TYPES[head.name] = head
    return head


def head_types() -> tuple[str, ...]:
    """Names of the registered head types, in registration order."""
    return tuple(_TYPES)


def head_type(name: str) -> HeadType:
    """The head type registered as ``name``, or a one-line :class:`ConfigError`."""
    try:
        return _TYPES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown head {name!r}; expected one of {', '.join(_TYPES)}") from None


def head_options() -> tuple[str, ...]:
    """Every option some head type takes, in registration order."""
    return tuple(dict.fromkeys(option for head in _TYPES.values() for option in head.options))


def _refuse_unknown(options: dict[str, Any], accepted: tuple[str, ...], what: str) -> None:
    extra = [name for name in options if name not in accepted]
    if extra:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise ConfigError(f"{what} has no option {extra[0]} ({takes})")


def build_head(
    name: str,
    in_channels: int,
    num_classes: int,
    num_heads: int = 4,
    key_ratio: float = 0.5,
    dropout: float = 0.0,
    **options: Any,
) -> nn.Module:
    """The ``name`` head for ``in_channels`` feature channels and ``num_classes`` classes.

    ``options`` set to ``None`` are left out (the head's default); one the type does not take is
    a :class:`ConfigError`. The module maps ``(B, in_channels, H, W)`` to ``(B, num_classes)``.
    """
    head = head_type(name)
    given = {k: v for k, v in options.items() if v is not None}
    _refuse_unknown(given, head.options, f"the {name} head")
    return head.build(in_channels, num_classes, num_heads=num_heads, key_ratio=key_ratio, dropout=dropout, **given)


def register_variant(variant: POCAVariant) -> POCAVariant:
    """Make ``variant`` selectable as ``variant=<letter>`` of the ``"noah"`` head; returns it."""
    if not variant.letter or variant.letter in _VARIANTS:
        raise ConfigError(f"cannot register POCA variant {variant.letter!r}: the letter is empty or already taken")
    _VARIANTS[variant.letter] = variant
    return variant


def variants() -> tuple[str, ...]:
    """Letters of the registered POCA variants, in alphabetical order."""
    return tuple(sorted(_VARIANTS))


def _build_noah(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
                variant: str | None = None, **options: Any) -> nn.Module:
    if variant is None:
        _refuse_unknown(options, NOAH_SWITCHES, "the standard NOAH head")
        return NOAHHead(in_channels, num_classes, num_heads, key_ratio, dropout, **options)
    if variant not in _VARIANTS:
        raise ConfigError(f"unknown POCA variant {variant!r}; expected one of {', '.join(variants())} (Table X)")
    chosen = _VARIANTS[variant]
    _refuse_unknown(options, chosen.options, f"POCA variant ({variant})")
    return chosen.build(in_channels, num_classes, num_heads=num_heads, key_ratio=key_ratio, dropout=dropout, **options)


def _noah_with(**fixed: Any) -> Callable[..., nn.Module]:
    """A builder of :class:`NOAHHead` with the switches ``fixed`` (a variant's definition; the
    variant's ``options`` leave them out, so they cannot be given twice)."""

    def build(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float,
              **options: Any) -> nn.Module:
        return NOAHHead(in_channels, num_classes, num_heads, key_ratio, dropout, **options, **fixed)

    return build


def _build_gap(in_channels: int, num_classes: int, *, num_heads: int, key_ratio: float, dropout: float) -> nn.Module:
    return ClassifierHead(in_channels, num_classes, pool_type="avg", drop_rate=dropout)


register_head_type(HeadType(
    "noah", "NOAH: pairwise object category attention (SPEC §2), with the ablation switches and POCA variants",
    _build_noah, (*NOAH_SWITCHES, "variant", "key_width")))
register_head_type(HeadType("gap", "global average pooling + linear layer (the usual baseline)", _build_gap,
                            uses=("dropout",)))
# (c): the paper names "another activation"; the extracted text lost which. A sigmoid is the usual
# non-normalising gate: each position is weighted on its own, nothing makes the weights sum to one.
register_variant(POCAVariant("c", "sigmoid in place of the softmax over positions",
                             _noah_with(attention="sigmoid"), ("head_split", "kv_split", "merge")))
register_variant(POCAVariant("d", "3x3 key and value projections instead of 1x1",
                             _noah_with(kernel_size=3), NOAH_SWITCHES))
