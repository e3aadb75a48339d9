"""release_free_heap (rllib_k15.runs.memory): freed heap pages go back to the OS.

The scenario glibc keeps: many heap-sized blocks freed while one block allocated after them
stays live, so the heap's top cannot shrink and the freed interior stays resident until
``malloc_trim`` returns its pages.
"""

import ctypes
import ctypes.util

import pytest

from rllib_k15.runs.memory import _malloc_trim, release_free_heap

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="not glibc: no malloc_trim")


def test_freed_interior_of_the_heap_is_given_back():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    release_free_heap()  # start from a trimmed heap
    blocks = []
    for _ in range(40_000):  # 40k x 8 KiB = 312 MiB, below the mmap threshold: heap
        block = libc.malloc(8192)
        ctypes.memset(block, 1, 8192)  # touch it: resident
        blocks.append(block)
    pin = libc.malloc(8192)  # after them: the top of the heap stays in use
    ctypes.memset(pin, 1, 8192)
    for block in blocks:
        libc.free(block)
    try:
        released = release_free_heap()
        assert released is not None and released > 200  # MB of the 312 freed
        assert release_free_heap() < 50  # nothing much left to give back
    finally:
        libc.free(pin)


_SHAPES_PROBE = """
import ctypes, os, sys
import psutil, torch
from rllib_k15.runs.memory import bound_onednn_primitive_cache
if sys.argv[1] == "bounded":
    bound_onednn_primitive_cache()
torch.set_num_threads(1)
linear = torch.nn.Linear(576, 1536)
def resident():
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20
with torch.autocast("cpu", dtype=torch.bfloat16):
    linear(torch.randn(8, 576))
    start = resident()
    for rows in range(20, 420):  # 400 matmul shapes, as 400 micro-batches of new lengths
        linear(torch.randn(rows, 576))
print(resident() - start)
"""


def _native_bf16() -> bool:
    from rllib_k15.hardware import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


@pytest.mark.skipif(not _native_bf16(), reason="bf16 matmuls go through oneDNN only where native")
def test_the_onednn_kernel_cache_is_bounded():
    """A new matmul shape per micro-batch grows oneDNN's default cache (1024 kernels) by
    hundreds of MB over 400 shapes; ``k15``'s bound keeps far less resident."""
    import os
    import subprocess
    import sys

    grown = {}
    for mode in ("default", "bounded"):
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        out = subprocess.run(
            [sys.executable, "-c", _SHAPES_PROBE, mode], env=env, capture_output=True,
            text=True, timeout=300, check=True,
        )  # fmt: skip
        grown[mode] = float(out.stdout.strip().splitlines()[-1])
    assert grown["default"] - grown["bounded"] > 60, grown
