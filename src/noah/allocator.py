"""Keep freed memory in the process: glibc ``malloc`` settings for CPU training and benchmarks.

By default glibc gives memory back to the kernel as soon as it is freed: blocks above a size
threshold (128 KiB at first, raised as such blocks are freed, at most 32 MiB) get a mapping of
their own, unmapped when freed, and the top of the heap is trimmed once more than twice that
threshold is free there. A training step frees its activations and allocates them again in the
next step, so every step faults their pages in afresh, each one zero-filled by the kernel. On the
2-core development VM the kernel's share was 25-34 % of a MobileNetV2 x0.35 training step's CPU
time, and the step took about 1.5x as long as with the memory kept (BENCHMARKS.md §4,
``tools/step_faults.py``).

:func:`keep_freed_memory` turns both off (``mallopt``: no mappings of their own, so every block
comes from the heap, and the heap is never trimmed): the process keeps, and reuses, the memory its
steps have freed. It stays at its peak resident size instead of giving memory back between
steps. ``noah train``, ``noah compare`` and ``noah benchmark``'s timings call it (the library never
does on its own); ``NOAH_KEEP_FREED_MEMORY=0`` in the environment leaves glibc's defaults.
Elsewhere (macOS, Windows, musl) it does nothing. glibc still maps a block of its own where a
thread's arena cannot grow (a single block over 64 MiB outside the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "allocator_status"]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_status = "the C library's defaults"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); True if it now does.

    Process-wide and for the rest of the process; a no-op returning False where the C library is
    not glibc or ``NOAH_KEEP_FREED_MEMORY=0`` is set."""
    global _status
    if os.environ.get("NOAH_KEEP_FREED_MEMORY", "") == "0":
        _status = "glibc's defaults (NOAH_KEEP_FREED_MEMORY=0)"
        return False
    libc = _glibc()
    if libc is None:
        _status = "the platform's defaults (not glibc)"
        return False
    # at most 0 blocks with a mapping of their own; a trim threshold of -1 (SIZE_MAX) never trims
    done = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    _status = "keeps freed memory (all on the heap, never trimmed)" if done else "glibc's defaults (mallopt refused)"
    return done


def allocator_status() -> str:
    """How this process's ``malloc`` treats freed memory, for benchmark notes."""
    return _status
