"""Stop requests: SIGTERM and SIGUSR1 ask a training run to stop cleanly instead of dying.

Cluster schedulers send SIGTERM (Kubernetes, SLURM's default) or a configurable signal such as
SIGUSR1 (``sbatch --signal=USR1@120``) some time before they kill a job. While a
:class:`StopSignals` block is active, such a signal only sets a flag; the training loop checks it
after every optimizer step, writes a resumable checkpoint and ends with
:class:`~noah.errors.RunInterrupted`. A second signal acts as it normally would (the process ends
at once). Blocks nest: a request received in an inner block (``noah train`` inside ``noah
compare``) is a request to the enclosing blocks too, even if the inner one finished its work.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopSignals"]

_SIGNAL_NAMES = ("SIGTERM", "SIGUSR1")


class StopSignals:
    """Context manager that turns SIGTERM / SIGUSR1 into a stop request (main thread only; in
    other threads, e.g. under a test runner's worker thread, it changes nothing)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now, the usual way
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.received = signum
        outer = getattr(self._previous.get(signum), "__self__", None)
        if isinstance(outer, StopSignals) and outer.received is None:
            outer.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNAL_NAMES:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
