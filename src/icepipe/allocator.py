"""Large buffers reused within a write task instead of mapped afresh (glibc's ``malloc``).

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the operating
system at once and the worker's memory figures stay true. Setting any of glibc's malloc
thresholds also switches off its dynamic mmap threshold: from then on every buffer over
128 KiB is a fresh mapping, returned on ``free``, and the kernel zeroes every page of the next
one as it is first touched. A native write task allocates several buffers the size of a chunk
(the encoded bytes, the compressor's output, the bytes handed to Icechunk): on a 24.9 MB chunk
with zstd, ~10% of the task's CPU (``benchmarks/native_buffers.py``).

:func:`reuse_large_buffers` lets a task's buffers of up to :data:`REUSE_UP_TO` come from the
heap, so that a freed one is reused by the next instead of mapped again, and hands back what
glibc lets it (``malloc_trim``: the main heap, free blocks inside every heap, and the top of the
calling thread's heap) when the task's write ends. The top of another thread's heap (zarr
encodes on its event-loop thread) stays mapped until that thread frees memory again, to be
reused by the next store: in ``benchmarks/native.py`` (24.9 MB chunks) the workers' peak RSS
was ~40 MiB higher than without, and memory-limited native runs completed as before.

It changes nothing where it is not needed or not possible: on glibc with its default (dynamic)
thresholds, which reuse large buffers already; on other C libraries and systems.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

__all__ = ["REUSE_UP_TO", "release_freed_memory", "reuse_large_buffers", "reuses_buffers"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's default for both thresholds (what a process that set only one of them has for the other).
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
# Buffers up to this size come from the heap inside a scope (glibc's own cap on 64-bit systems
# is 32 MiB: larger values are refused and the scope falls back to the cap).
REUSE_UP_TO = 64 * 1024 * 1024
_FALLBACK_UP_TO = 32 * 1024 * 1024
# How much free memory at the top of the heap may stay mapped inside a scope.
_KEEP_FREE = 256 * 1024 * 1024
# Freed into a thread's heap to make glibc trim it (over its 64 KiB consolidation threshold,
# under the 128 KiB mmap threshold).
_NUDGE = 96 * 1024
# Any of these makes glibc's thresholds static (mallopt(3)): every large buffer a new mapping.
_STATIC_THRESHOLD_VARIABLES = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)

_lock = threading.Lock()
_depth = 0


@cache
def _glibc() -> Any:
    """glibc, or ``None`` on another C library or system."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such symbol)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


def _static_thresholds() -> bool:
    """Whether this process runs with static malloc thresholds (Dask workers do)."""
    return any(name in os.environ for name in _STATIC_THRESHOLD_VARIABLES)


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return _GLIBC_DEFAULT_THRESHOLD


def reuses_buffers() -> bool:
    """Whether :func:`reuse_large_buffers` changes anything in this process."""
    return _static_thresholds() and _glibc() is not None


@contextmanager
def reuse_large_buffers() -> Iterator[None]:
    """Within the block, large freed buffers are reused; at its end they go back to the system.

    Thread-safe and re-entrant: the thresholds are raised when the first block of the process
    starts and put back (to the values of the environment) when the last one ends, which
    hands back what glibc lets it (see the module's docstring). On a worker with several
    threads writing at once, that is when the last of the overlapping writes ends.
    """
    global _depth
    libc = _glibc() if _static_thresholds() else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            if not libc.mallopt(_M_MMAP_THRESHOLD, REUSE_UP_TO):
                libc.mallopt(_M_MMAP_THRESHOLD, _FALLBACK_UP_TO)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _env_int("MALLOC_MMAP_THRESHOLD_"))
                libc.mallopt(_M_TRIM_THRESHOLD, _env_int("MALLOC_TRIM_THRESHOLD_"))
                libc.malloc_trim(0)  # the main heap, and free chunks inside every heap
                # A thread's own heap gives back its top only when something is freed into
                # it: free a small block there, now that the threshold is low again.
                libc.free(libc.malloc(_NUDGE))


def release_freed_memory() -> None:
    """Hand memory freed into the C heap back to the operating system (glibc's ``malloc_trim``;
    nothing on other C libraries), after a full garbage collection."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
