"""``noah.allocator``: glibc keeps the memory a step frees, so the next step does not fault it in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import noah.allocator
from noah.allocator import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the setting is glibc's; elsewhere keep_freed_memory is a no-op")

# A "step": 512 blocks of 64 KiB (below every mmap threshold, so all on the heap), written, then
# all freed; the minor page faults of five steps after a first one.
CHILD = """
import ctypes, importlib.util, resource, sys
# the module alone, from its file: importing the noah package would load torch, whose allocations
# muddle the count
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
kept = allocator.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def step():
    blocks = [libc.malloc(65536) for _ in range(512)]
    for b in blocks:
        libc.memset(b, 1, 65536)
    for b in blocks:
        libc.free(b)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, allocator.allocator_status(), sep="|")
"""


def _run(keep: str) -> tuple[bool, int, str]:
    env = {**os.environ, "NOAH_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", CHILD, noah.allocator.__file__], env=env, capture_output=True, text=True, check=True).stdout
    kept, faults, status = out.strip().split("|")
    return kept == "True", int(faults), status


def test_freed_memory_is_reused_without_page_faults():
    kept, faults, status = _run("")
    assert kept and status.startswith("keeps freed memory")
    # 32 MiB written five times: glibc's default trims the heap after each step (8,192 fresh pages
    # a step); kept, the pages are reused
    assert faults < 200


def test_the_environment_variable_leaves_glibcs_defaults():
    kept, faults, status = _run("0")
    assert not kept and status == "glibc's defaults (NOAH_KEEP_FREED_MEMORY=0)"
    assert faults > 5 * 4096  # the contrast the first test relies on: here every step faults its pages in
