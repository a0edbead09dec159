"""Mixed precision: an autocast context factory for ``--amp``."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from noah.errors import ConfigError

__all__ = ["autocast_factory"]


def autocast_factory(amp: str, device: torch.device) -> tuple[Callable[[], ContextManager], torch.dtype | None]:
    """A context factory for mixed precision and its dtype (``None`` for full precision).

    ``"auto"`` is bf16 on GPUs that support it and full precision on the CPU (most CPUs run
    bf16 slower than fp32 unless they have AMX).
    """
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "none":
        return contextlib.nullcontext, None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ConfigError(f"unknown --amp {amp!r}; expected bf16, fp16, none or auto")
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), dtype
