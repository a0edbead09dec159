"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A training checkpoint (``last.pt`` / ``best.pt``) is a dict of tensors and plain Python values::

    {"format": "noah-train/1", "epoch": <epochs completed>, "config": {...}, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ... | None, "ema": ... | None,
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [...]},
     "metrics": {...}, "best_metric": float | None}

Everything in it is accepted by ``weights_only=True``: RNG states are stored as tensors, lists
and ints, never as pickled objects.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from noah.errors import CheckpointError

__all__ = [
    "FORMAT",
    "atomic_save",
    "save_checkpoint",
    "load_checkpoint",
    "save_weights",
    "load_weights",
    "rng_state",
    "set_rng_state",
]

FORMAT = "noah-train/1"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual permissions
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(write: Any, path: str | os.PathLike) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    A reader sees either the old file or the complete new one, never a partial write, even if
    the process is killed in between.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


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


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Atomically write a training checkpoint dict (see the module doc) to ``path``."""
    atomic_save(lambda tmp: torch.save({"format": FORMAT, **state}, tmp), path)


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
    return state


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write ``model``'s state dict (tensors only) as a safetensors file."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_save(lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {})), path)


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
