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
