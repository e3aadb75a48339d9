"""Keep a long run's resident memory flat: freed heap pages go back to the OS between
iterations (glibc ``malloc_trim``), and oneDNN's kernel cache is bounded.

A training iteration allocates and frees gigabytes in tensors of changing shapes (responses
of every length, the optimizer state rebuilt after each reset). glibc's malloc keeps what
is freed in its arenas' free lists for reuse, and with many threads (torch, vLLM, Ray) and
shapes that never repeat exactly, the process's resident memory creeps up although no
Python object is kept alive. ``malloc_trim(0)`` hands every free page of every arena back
(``madvise(MADV_DONTNEED)``); it costs milliseconds once per iteration and nothing per
allocation. Where the C library is not glibc (musl, macOS), this is a no-op.

oneDNN (torch's bf16 matmul kernels on CPUs with AVX512-BF16/AMX) compiles and caches one
primitive per matmul shape, up to 1024 of them by default, each holding its own buffers.
The learner's shapes change with every micro-batch (response lengths), so that cache
fills for hundreds of iterations: tens of MB per iteration here. ``k15`` bounds it to
:data:`ONEDNN_PRIMITIVES` unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is already set (8:
the bound the real-path soak measured flat; 64 still grew; recreating evicted primitives
cost no measurable time, docs/operating_long_runs.md);
oneDNN reads it once, at its first primitive, so it is set before any torch work, and
Ray processes started afterwards inherit it (on a cluster started with ``ray start``,
set it there or in the job's ``runtime_env``).

Measure it with ``python -m bench.soak`` (private memory per process per iteration).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import psutil

__all__ = ["ONEDNN_PRIMITIVES", "bound_onednn_primitive_cache", "release_free_heap"]

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_PRIMITIVES = 8  # oneDNN's default: 1024


def bound_onednn_primitive_cache(capacity: int = ONEDNN_PRIMITIVES) -> str:
    """Bound oneDNN's primitive cache (unless the user set it); returns the value in force.
    Effective only before this process's first oneDNN primitive."""
    return os.environ.setdefault(ONEDNN_CACHE_ENV, str(capacity))


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
