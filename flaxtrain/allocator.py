"""The host allocator under XLA's CPU backend: keep freed buffers instead of handing them back each step.

XLA's CPU runtime allocates each step's outputs and temporaries with `malloc` from its worker threads.
glibc serves an allocation larger than a thread arena's heap (64 MiB), or than its mmap threshold (at
most 32 MiB), with a fresh `mmap`, and gives it back with `munmap` when freed: every step of a model with
a large embedding table then page-faults its buffers in anew. Measured on the 2-core machine through the
Learner (benchmarks/allocator.py): TextCNN with MiniLM's 30522 x 384 table, 39,782 faults and 96.5 ms of
kernel time per step, 159 ms a step; tuned, 193 faults, 3.8 ms and 106 ms (1.50x). MiniLM fine-tuning: 1.10x.

`tune_allocator()` sets glibc's options for this process: one arena (M_ARENA_MAX 1), no mmap for large
blocks (M_MMAP_MAX 0) and no trimming of the heap's top below 2 GiB (M_TRIM_THRESHOLD, the largest
`mallopt` takes; the environment variable takes more), so freed step buffers are reused. The process
keeps its peak heap until it exits, which a training process reaches every step anyway.
`import flaxtrain` never calls it (a library does not retune its host's allocator): the `flaxtrain`
command calls it for its own process, and a script may call it first thing. glibc fixes its
arena limit when a second thread first allocates, so the call only works while the process has one
thread; the same settings as environment variables (`ALLOCATOR_ENV`, read when a process starts) work
for any launcher (`make test` sets them for the test suite and its subprocesses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes (an int); the environment variable takes more
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
_tuned = False  # set once tune_allocator() took effect in this process


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def tune_allocator() -> bool:
    """Sets glibc's allocator options for XLA's CPU buffers (see the module docstring) in this process.
    True when they took effect; False, changing nothing, off glibc or once the process has other threads."""
    if not sys.platform.startswith("linux") or _threads() != 1:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _tuned
    _tuned = all(mallopt(option, value) == 1 for option, value in
                 ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _tuned


def allocator_tuned(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs with the tuned options: `tune_allocator()` took effect, or the process
    started with `ALLOCATOR_ENV`'s arena and mmap settings."""
    environ = os.environ if environ is None else environ
    return _tuned or all(environ.get(name) == ALLOCATOR_ENV[name] for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_"))
