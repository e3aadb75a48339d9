"""Long-run soak: resident memory stays flat after warm-up, the sandbox leaks no processes
or temp directories, and the partial-rollout store stays within its bound.

K15MirrorDescent on ``k15/Code-v0`` (every response runs in a sandboxed process) with the
tiny random model and the HF engine, in this process, for ``K15_SOAK_ITERATIONS``
iterations (default 14; set it higher for a real soak, e.g. 200). RSS is read after each
iteration, after ``gc.collect()`` and glibc's ``malloc_trim(0)`` (so it measures memory in
use, not free lists the allocator keeps — without the trim RSS wanders ±50 MB between
iterations), with partial rollouts on (responses span up to 3 iterations). Bounds: growth of
the median RSS from the first to the last third of the post-warm-up stretch, and the
least-squares slope over it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest
from support.toy_training import exact_toy_config

ITERATIONS = int(os.environ.get("K15_SOAK_ITERATIONS", "14"))
WARMUP = 4
MAX_GROWTH_MB = 48.0  # median of the last third minus median of the first third
MAX_SLOPE_MB = 1.0  # per iteration, least squares after warm-up


def rss_mb_slope(rss_mb: list[float]) -> float:
    """Least-squares slope b of rss_i = a + b·i (MB per iteration)."""
    x = np.arange(len(rss_mb), dtype=np.float64)
    return float(np.polyfit(x, np.asarray(rss_mb, dtype=np.float64), 1)[0])


def resident_mb() -> float:
    """RSS in MB after a full collection and returning free heap pages to the OS."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20


def _sandbox_processes() -> list[int]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("k15_envs" in part for part in proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


@pytest.fixture
def sandbox_tmp():
    # the sandboxed code runs as `nobody` when we are root: its temp root must be reachable
    root = Path(tempfile.mkdtemp(prefix="k15-soak-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_soak_memory_flat_no_leaked_processes_or_files(tiny_model_dir, ray_address, sandbox_tmp):
    sandbox = {"wall_time_s": 10.0, "cpu_time_s": 5.0, "tmp_root": str(sandbox_tmp)}
    config = exact_toy_config(
        tiny_model_dir,
        "k15/Code-v0",
        {"sandbox": sandbox, "num_workers": 2},
        problems_per_iteration=2,
        samples_per_problem=2,
        minibatch_size=4,
        max_response_tokens=8,
        partial_rollout_max_tokens=3,  # responses span up to 3 iterations
        repeat_detection=False,
    )
    before = set(_sandbox_processes())
    algo = config.build_algo()
    rss: list[float] = []
    trained = waiting = sampled = 0
    max_waiting = 0
    try:
        for _ in range(ITERATIONS):
            result = algo.train()
            trained += 2 * int(result["k15"]["partial_trained_groups"])
            sampled += 2 * int(result["k15"]["partial_new_problems"])
            rss.append(resident_mb())
            store = algo.partial_groups
            assert len(store) <= store.max_groups
            max_waiting = max(max_waiting, len(store))
        waiting = 2 * len(algo.partial_groups)
        assert set(_sandbox_processes()) <= before, "sandbox processes outlived their run"
    finally:
        algo.stop()
    assert set(_sandbox_processes()) <= before, "sandbox processes outlived the env"
    assert list(sandbox_tmp.iterdir()) == [], "sandbox temp directories were left behind"
    assert max_waiting > 0  # responses really were continued across iterations
    # nothing lost: every sampled response was trained or is still waiting for its group
    assert trained + waiting == sampled >= 2 * ITERATIONS

    steady = rss[WARMUP - 1 :]
    third = max(1, len(steady) // 3)
    growth = float(np.median(steady[-third:]) - np.median(steady[:third]))
    slope = rss_mb_slope(steady)
    print(f"soak RSS MB: {[round(x) for x in rss]} growth {growth:.1f} slope {slope:.2f}/it")
    assert growth < MAX_GROWTH_MB, rss
    assert slope < MAX_SLOPE_MB, rss
