"""A run folder: the files of one training run, each written atomically, owned by one process.

Layout (the ``RunDir`` constants are the only place these names are spelled)::

    config.yaml             the resolved TrainConfig (what `noah eval` / `predict` rebuild the model from)
    classes.json            {"task": ..., "class_names": [...]}
    metrics.jsonl           one JSON object per finished epoch: {"epoch", "train", "val"[, "val_ema"]}
    last.pt                 training checkpoint: everything needed to resume (see engine.checkpoint)
    best.pt                 the checkpoint of the epoch with the best validation metric
    model.safetensors       final weights
    model_ema.safetensors   final EMA weights (with --ema)
    summary.json            the outcome: task, model, head, metrics, best epoch, times, sizes
    .lock                   held (flock) by the process training in the folder; names it

Rules that keep work from being lost:

* a new run never starts in a folder that already holds one, unless resuming it or told to
  overwrite it (:meth:`RunDir.claim`);
* one process at a time: a second one stops at once with a one-line error naming the holder;
  a lock left by a killed process is taken over (the kernel drops a dead process's ``flock``);
* every file is written to a temporary file, flushed to disk and renamed over the old one, so a
  reader (or a crash) sees the old or the new file, never half of one; a failed write (full disk,
  I/O error, no permission) removes its temporary file and becomes a one-line
  :class:`~noah.errors.RunFolderError` naming the file and the checkpoint that is still intact.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import torch
import yaml

from noah.engine.checkpoint import load_checkpoint, write_checkpoint, write_weights
from noah.engine.config import TrainConfig
from noah.errors import CheckpointError, RunFolderError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked there
    fcntl = None

__all__ = ["RunDir", "atomic_write"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual permissions
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(path: Path) -> None:
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


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it over ``path``.

    A reader sees either the old file or the complete new one, even if the process dies in
    between; on any error the temporary file is removed and the error propagates.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch.save wraps a failed write in a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# fds of locks held by this process; a forked child (a DataLoader worker) closes its copies, so
# that a worker outliving a killed trainer cannot keep the folder locked
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCK_FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class RunDir:
    """One run folder (see the module docstring for its layout and rules).

    Writing methods are for the process that :meth:`claim`-ed the folder (rank 0 of a run);
    reading methods work on any run folder.
    """

    CONFIG = "config.yaml"
    CLASSES = "classes.json"
    METRICS = "metrics.jsonl"
    LAST = "last.pt"
    BEST = "best.pt"
    WEIGHTS = "model.safetensors"
    EMA_WEIGHTS = "model_ema.safetensors"
    SUMMARY = "summary.json"
    LOCK = ".lock"
    #: every file a run writes (what `--overwrite` removes)
    RUN_FILES = (CONFIG, CLASSES, METRICS, LAST, BEST, WEIGHTS, EMA_WEIGHTS, SUMMARY)
    #: what a run has to show for its work; a folder with none of them (only the config and class
    #: list of a run that stopped before its first epoch ended) holds nothing to lose
    RESULT_FILES = (METRICS, LAST, BEST, WEIGHTS, EMA_WEIGHTS, SUMMARY)
    #: names of the weights a user can pick, in the order tried when none is picked
    WEIGHT_CHOICES = {"final": WEIGHTS, "best": BEST, "last": LAST}

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        #: (epoch, step) of the last checkpoint known to be complete on disk
        self.intact: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the run's files (a ``RunDir`` constant)."""
        return self.root / name

    def run_files(self) -> list[str]:
        """The run files present in the folder."""
        return [name for name in self.RUN_FILES if self.file(name).exists()]

    # ---- owning the folder ------------------------------------------------------------------

    def claim(self, continuing: bool, overwrite: bool) -> list[str]:
        """Make this process the folder's only writer, for a run that continues what is there
        (``continuing``) or starts afresh; returns notes worth printing (one line each).

        Raises :class:`RunFolderError` if another process holds the folder, or if it holds a run's
        results (:data:`RESULT_FILES`) and neither ``continuing`` nor ``overwrite`` is set. With
        ``overwrite``, the old run's files are removed. Temporary files left by a killed writer are removed either way.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder {self.root}: {exc.strerror or exc}") from exc
        if not self.root.is_dir():
            raise RunFolderError(f"--output {self.root} is a file, not a folder")
        notes = self._lock()
        try:
            existing = self.run_files()
            if any(name in self.RESULT_FILES for name in existing) and not continuing and not overwrite:
                raise RunFolderError(
                    f"{self.root} already holds a run ({', '.join(existing)}); pass --resume auto to continue it "
                    "or --overwrite to replace it"
                )
            if overwrite and existing:
                for name in existing:
                    self.file(name).unlink()
                notes.append(f"--overwrite: removed the previous run's {', '.join(existing)} from {self.root}")
            for leftover in self.root.glob(".*.tmp"):
                leftover.unlink()
        except BaseException:
            self.release()
            raise
        return notes

    def _lock(self) -> list[str]:
        if fcntl is None:  # pragma: no cover
            return [f"note: {self.root} is not locked (no fcntl on this platform); run one training in it at a time"]
        path = self.file(self.LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(f"cannot create the lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._describe_holder(os.read(fd, 4096))
            os.close(fd)
            raise RunFolderError(
                f"{self.root} is in use by {holder}; wait for it to finish or train into another --output"
            ) from None
        except OSError as exc:  # e.g. a file system without locks
            os.close(fd)
            return [f"note: cannot lock {self.root} ({exc.strerror or exc}); run one training in it at a time"]
        notes = []
        previous = os.read(fd, 4096)
        if previous.strip():
            notes.append(f"taking over the lock of {self._describe_holder(previous)}, which ended without releasing it")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._lock_fd = fd
        _HELD_LOCK_FDS.add(fd)
        return notes

    @staticmethod
    def _describe_holder(content: bytes) -> str:
        try:
            holder = json.loads(content)
            return f"process {holder['pid']} on {holder['host']} (since {holder['started']})"
        except (ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        """Give up the folder (the lock file stays, empty)."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        _HELD_LOCK_FDS.discard(fd)
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # drops the flock

    # ---- writing ----------------------------------------------------------------------------

    def _intact_text(self) -> str:
        if self.intact is None:
            return "no checkpoint had been written yet"
        epoch, step = self.intact
        where = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, batch {step}"
        return f"{self.file(self.LAST)} ({where}) is intact"

    def _write(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        path = self.file(name)
        try:
            atomic_write(path, write)
        except (OSError, RuntimeError) as exc:
            cause = _os_error_in(exc)
            if cause is None:
                raise
            reason = cause.strerror or str(cause)
            raise RunFolderError(f"cannot write {path}: {reason}; {self._intact_text()}") from exc

    def _write_text(self, name: str, text: str) -> None:
        self._write(name, lambda f: f.write(text.encode("utf-8")))

    def write_config(self, config: TrainConfig) -> None:
        self._write_text(self.CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def write_classes(self, task: str, class_names: Iterable[str]) -> None:
        self._write_text(self.CLASSES, json.dumps({"task": task, "class_names": list(class_names)}, indent=2) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_text(self.SUMMARY, json.dumps(summary, indent=2) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Add one epoch's line to ``metrics.jsonl`` (the whole small file is rewritten atomically,
        so a full disk cannot leave half a line)."""
        lines = [json.dumps(r) + "\n" for r in self.read_metrics()] + [json.dumps(record) + "\n"]
        self._write_text(self.METRICS, "".join(lines))

    def trim_metrics(self, completed_epochs: int) -> None:
        """Keep only the lines of epochs ``<= completed_epochs`` (a resumed run redoes the rest)."""
        records = self.read_metrics()
        kept = [r for r in records if r.get("epoch", 0) <= completed_epochs]
        if len(kept) != len(records):
            self._write_text(self.METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    def save_checkpoint(self, state: dict[str, Any], best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt`` too if ``best``) from a checkpoint dict."""
        self._write(self.LAST, lambda f: write_checkpoint(state, f))
        self.intact = (int(state["epoch"]), int(state.get("step", 0)))
        if best:
            self._write(self.BEST, lambda f: write_checkpoint(state, f))

    def save_weights(self, model: torch.nn.Module, ema: bool = False, metadata: dict[str, str] | None = None) -> None:
        self._write(self.EMA_WEIGHTS if ema else self.WEIGHTS, lambda f: write_weights(model, f, metadata))

    # ---- reading ----------------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (an empty list if there is none yet)."""
        path = self.file(self.METRICS)
        if not path.is_file():
            return []
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise CheckpointError(f"{path} line {number} is not JSON") from None
        return records

    def _require(self, name: str) -> Path:
        if not self.root.is_dir():
            raise CheckpointError(f"run folder not found: {self.root}")
        path = self.file(name)
        if not path.is_file():
            raise CheckpointError(f"{self.root} is not a noah run folder: {name} is missing")
        return path

    def read_config(self) -> TrainConfig:
        path = self._require(self.CONFIG)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(values, dict):
            raise CheckpointError(f"{path} does not hold a configuration mapping")
        return TrainConfig.from_dict(values, str(path))

    def read_classes(self) -> tuple[str, list[str]]:
        """``(task, class names)`` of the run."""
        path = self._require(self.CLASSES)
        try:
            classes = json.loads(path.read_text(encoding="utf-8"))
            return str(classes["task"]), [str(c) for c in classes["class_names"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} does not hold a task and class_names") from exc

    def weights_file(self, choice: str | None = None) -> Path:
        """The run's weights: ``choice`` of ``final``/``best``/``last`` (a file in this folder, never
        elsewhere), or the first of them that exists."""
        if not self.root.is_dir():
            raise CheckpointError(f"run folder not found: {self.root}")
        names = [self.WEIGHT_CHOICES[choice]] if choice is not None else list(self.WEIGHT_CHOICES.values())
        for name in names:
            if self.file(name).is_file():
                return self.file(name)
        raise CheckpointError(f"no weights in {self.root}: looked for {', '.join(names)}")

    def last_checkpoint(self) -> dict[str, Any] | None:
        """``last.pt`` loaded, or ``None`` if the folder has none."""
        path = self.file(self.LAST)
        return load_checkpoint(path) if path.is_file() else None
