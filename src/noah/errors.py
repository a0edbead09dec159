"""Exceptions that carry a message meant for the user.

The command line prints these as one line (``noah: error: ...``) and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NoahError(Exception):
    """Base class of every error whose message is written for the user."""


class ConfigError(NoahError, ValueError):
    """A configuration that cannot work (bad sizes, unknown names, bad flags)."""


class ShapeError(NoahError, ValueError):
    """A tensor of the wrong rank or size reached a module."""


class CheckpointError(NoahError, RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class DataError(NoahError, RuntimeError):
    """A dataset folder, annotation file or image that cannot be used."""
