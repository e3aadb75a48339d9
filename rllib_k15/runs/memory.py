"""Give freed heap memory back to the OS between iterations (glibc ``malloc_trim``).

A training iteration allocates and frees gigabytes in tensors of changing shapes (responses
of every length, the optimizer state rebuilt after each reset). glibc's malloc keeps what
is freed in its arenas' free lists for reuse, and with many threads (torch, vLLM, Ray) and
shapes that never repeat exactly, the process's resident memory creeps up although no
Python object is kept alive. ``malloc_trim(0)`` hands every free page of every arena back
(``madvise(MADV_DONTNEED)``); it costs milliseconds once per iteration and nothing per
allocation. Where the C library is not glibc (musl, macOS), this is a no-op.

Measure it with ``python -m bench.soak`` (private memory per process per iteration).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import psutil

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> float | None:
    """Return the free heap pages of this process to the OS; the resident memory it gave
    back, in MB (None where there is no ``malloc_trim``)."""
    trim = _malloc_trim()
    if trim is None:
        return None
    process = psutil.Process()
    before = process.memory_info().rss
    trim(0)
    return (before - process.memory_info().rss) / 2**20
