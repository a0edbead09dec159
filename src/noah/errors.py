"""Exceptions that carry a message meant for the user.

The command line prints these as one line (``noah: error: ...``) and exits with the error's
``exit_status`` (2 unless said otherwise); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NoahError(Exception):
    """Base class of every error whose message is written for the user."""

    #: the command line's exit status for this error
    exit_status: int = 2


class ConfigError(NoahError, ValueError):
    """A configuration that cannot work (bad sizes, unknown names, bad flags)."""


class ShapeError(NoahError, ValueError):
    """A tensor of the wrong rank or size reached a module."""


class CheckpointError(NoahError, RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class DataError(NoahError, RuntimeError):
    """A dataset folder, annotation file or image that cannot be used."""


class RunFolderError(NoahError, RuntimeError):
    """A run folder that cannot be used: it holds another run, another process is using it, or a
    file in it cannot be written (disk full, I/O error, no permission)."""


class RunInterrupted(NoahError):
    """Training stopped on request (SIGTERM / SIGUSR1) after writing a resumable checkpoint.

    Not a failure of the run, but it did not finish: the exit status is ``128 + signal number``,
    as for a process ended by that signal.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + int(signal_number)
