"""What a checkpoint holds and how it is (de)serialised; where it is written is :mod:`~noah.engine.rundir`'s.

A training checkpoint (``last.pt`` / ``best.pt``) is a dict of tensors and plain Python values::

    {"format": "noah-train/1", "epoch": <epochs completed>, "step": <batches done in the next epoch>,
     "progress": {"loss_sum", "seen", "time"} (that partial epoch's running totals),
     "config": {...}, "classes": {"task", "class_names"}, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ... | None, "ema": ... | None,
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [...]},
     "metrics": {...}, "best_metric": float | None, "best_epoch": int | None}

``step`` is 0 at the end of an epoch; a checkpoint written when training was asked to stop
mid-epoch has ``step > 0`` and resumes at that batch. Everything in it is accepted by
``torch.load(weights_only=True)``: RNG states are stored as tensors, lists and ints, never as
pickled objects. Weights alone are written as safetensors.
"""

from __future__ import annotations

import os
import random
from typing import Any, BinaryIO, Mapping

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from noah.errors import CheckpointError

__all__ = [
    "FORMAT",
    "write_checkpoint",
    "load_checkpoint",
    "write_weights",
    "load_weights",
    "rng_state",
    "set_rng_state",
]

FORMAT = "noah-train/1"


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(state: Mapping[str, Any], file: BinaryIO) -> None:
    """Serialise a training checkpoint dict (see the module doc) into an open binary ``file``."""
    torch.save({"format": FORMAT, **state}, file)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; :class:`CheckpointError` if it is not one."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles, ... all come out differently
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a noah training checkpoint (no {FORMAT!r} format tag)")
    state.setdefault("step", 0)  # checkpoints written before mid-epoch stops existed
    return state


def write_weights(model: torch.nn.Module, file: BinaryIO, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state dict (tensors only) as safetensors into an open binary ``file``."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    file.write(safetensors_bytes(tensors, metadata=dict(metadata or {})))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file, or under ``"model"`` in a training checkpoint."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise CheckpointError(f"weights file not found: {path}")
        try:
            return load_file(path)
        except Exception as exc:
            raise CheckpointError(f"cannot read weights {path}: {str(exc).splitlines()[0]}") from exc
    return load_checkpoint(path)["model"]
