"""The registry of the head's implementations and of the kernels that compute its logits alone.

Two tables, both filled when :mod:`noah.head` imports its implementation modules:

* **implementations** (:class:`HeadImpl`, :func:`register_impl`), chosen by name with
  ``NOAHHead(impl=...)`` or :meth:`NOAHHead.set_impl`. An implementation computes the logits and
  the attention/value maps of one forward pass (:meth:`HeadImpl.logits_and_maps`).
* **logits kernels** (:class:`LogitsKernel`, :func:`register_kernel`): faster ways to compute the
  logits alone, each valid under some conditions (float32 CPU inference, training with the
  memory-lean backward, ...) and usable by the implementations it names.

A logits-only call (``head(x)``) goes through :meth:`HeadImpl.logits`: while traced
(``torch.compile``, ``torch.export``, ONNX) or for an empty batch it is the implementation's own
``logits_and_maps``; otherwise the first kernel registered for the implementation (lowest
``order`` first) whose ``applies(head, x, call)`` holds runs, and if it returns ``None`` (it could
not give exact numbers, e.g. an exponential overflowed) ``logits_and_maps`` recomputes. With no
applicable kernel, ``logits_and_maps`` computes.

A new implementation or kernel is one new module that registers it at import, plus one import
line in ``noah/head/__init__.py``. The built-in implementations all compute SPEC §2's numbers; a
variant of the formula (an ablation) registers as an implementation of its own name, and the
kernels written for the standard head stay out of it since they name the implementations they
serve. Implementations and kernels receive the head module and read its attributes; they never
import :mod:`noah.head.module`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import torch

from noah.errors import ConfigError
from noah.head.layout import dropout_rate, graph_mode

__all__ = [
    "HeadImpl", "Maps", "register_impl", "get_impl", "available_impls",
    "Call", "LogitsKernel", "register_kernel", "kernels_for",
]

Maps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Call(NamedTuple):
    """What a kernel's ``applies`` may need to know about one logits-only call beyond ``x``."""

    #: autograd will differentiate the logits (grad mode on, and the input or a weight needs grad)
    needs_grad: bool
    #: training with dropout > 0: the value maps get a random mask
    dropout_active: bool

    @property
    def inference(self) -> bool:
        """Neither autograd nor dropout: the logits are a deterministic function of ``x``."""
        return not (self.needs_grad or self.dropout_active)

    @classmethod
    def of(cls, head: Any, x: torch.Tensor) -> "Call":
        """The facts of a call of ``head`` on ``x`` under the current grad mode."""
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or head.query.weight.requires_grad or head.value.weight.requires_grad
        )
        return cls(needs_grad, dropout_rate(head) > 0.0)


@dataclass(frozen=True)
class LogitsKernel:
    """A way to compute the logits ``(B, M)`` alone, valid where ``applies`` says so.

    ``applies(head, x, call)`` must be cheap (it runs on every call); ``run(head, x)`` returns
    the logits, or ``None`` to have the implementation's exact path recompute them. ``impls``
    names the implementations that may use the kernel; lower ``order`` is tried first (the
    built-in kernels use 10, 20 and 30, see ``noah/head/__init__.py``).
    """

    name: str
    impls: tuple[str, ...]
    applies: Callable[[Any, torch.Tensor, Call], bool]
    run: Callable[[Any, torch.Tensor], torch.Tensor | None]
    order: int = 50


_IMPLS: dict[str, "HeadImpl"] = {}
_KERNELS: list[LogitsKernel] = []
_KERNELS_BY_IMPL: dict[str, tuple[LogitsKernel, ...]] = {}  # kernels_for's answers, until the next registration


class HeadImpl:
    """One way to compute the head's forward pass; subclasses set ``name`` and implement
    :meth:`logits_and_maps`, and may override :meth:`logits`."""

    name: ClassVar[str] = ""

    def logits_and_maps(self, head: Any, x: torch.Tensor) -> Maps:
        """Logits ``(B, M)`` and the attention and value maps ``(B, N, M, L)`` of one pass over
        features ``x`` ``(B, C, H, W)`` (already checked by the head); the maps after dropout."""
        raise NotImplementedError

    def logits(self, head: Any, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, M)`` alone: through the first applicable registered kernel, else (and
        whenever that kernel gives up) through :meth:`logits_and_maps`."""
        kernels = kernels_for(self.name)
        if kernels and not graph_mode() and x.shape[0] > 0:  # traced: one graph; empty: nothing to speed up
            call = Call.of(head, x)
            for kernel in kernels:
                if kernel.applies(head, x, call):
                    logits = kernel.run(head, x)
                    if logits is not None:
                        return logits
                    break
        return self.logits_and_maps(head, x)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def register_impl(impl: HeadImpl) -> HeadImpl:
    """Make ``impl`` selectable as ``NOAHHead(impl=impl.name)``; returns it."""
    if not impl.name or impl.name in _IMPLS:
        raise ConfigError(f"cannot register NOAH head impl {impl.name!r}: the name is empty or already taken")
    _IMPLS[impl.name] = impl
    return impl


def get_impl(name: str) -> HeadImpl:
    """The implementation registered as ``name``, or a one-line :class:`ConfigError`."""
    try:
        return _IMPLS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown NOAH head impl {name!r}; expected one of {', '.join(_IMPLS)}") from None


def available_impls() -> tuple[str, ...]:
    """Names of the registered implementations, in registration order."""
    return tuple(_IMPLS)


def register_kernel(kernel: LogitsKernel) -> LogitsKernel:
    """Let the implementations in ``kernel.impls`` compute logits with ``kernel``; returns it."""
    if any(k.name == kernel.name for k in _KERNELS):
        raise ConfigError(f"cannot register NOAH head kernel {kernel.name!r}: the name is already taken")
    _KERNELS.append(kernel)
    _KERNELS.sort(key=lambda k: k.order)  # stable: equal orders keep registration order
    _KERNELS_BY_IMPL.clear()
    return kernel


def kernels_for(impl: str) -> tuple[LogitsKernel, ...]:
    """The kernels that implementation ``impl`` may use, in the order they are tried."""
    found = _KERNELS_BY_IMPL.get(impl)
    if found is None:
        found = _KERNELS_BY_IMPL[impl] = tuple(k for k in _KERNELS if impl in k.impls)
    return found
