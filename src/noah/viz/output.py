"""Where the viz commands write: each file atomically, and never over an existing one unless told.

:class:`OutputFolder` is told every file name before anything is computed, so a command that
would replace earlier output stops at once with a one-line error, not after minutes of work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from noah.engine.rundir import atomic_write
from noah.errors import ConfigError, RunFolderError

__all__ = ["OutputFolder"]


class OutputFolder:
    """A folder to write ``names`` into.

    Raises :class:`ConfigError` if any of them exists already and ``overwrite`` is false (naming
    it and ``--overwrite``), or if ``root`` is a file.
    """

    def __init__(self, root: str | os.PathLike, names: Iterable[str], overwrite: bool = False) -> None:
        self.root = Path(root)
        self.names = list(names)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--output {self.root} is a file, not a folder")
        existing = [n for n in self.names if (self.root / n).exists()]
        if existing and not overwrite:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise ConfigError(f"{self.root} already holds {shown}; pass --overwrite to replace, or choose another --output")

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: bytes | str) -> Path:
        """Write one of the announced files atomically; returns its path."""
        if name not in self.names:
            raise ValueError(f"{name} was not announced to OutputFolder")  # a bug in the caller
        payload = data.encode("utf-8") if isinstance(data, str) else data
        path = self.path(name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(payload))
        except OSError as exc:
            raise RunFolderError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path
