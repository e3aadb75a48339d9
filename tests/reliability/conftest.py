"""Fixtures of the reliability group: the toy env of tests/algorithm and run helpers."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "algorithm"))  # toy_env.py (the training-loop toy task)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_address() -> str:
    """One Ray instance for the session; child `k15 train` processes join it through
    ``RAY_ADDRESS`` instead of each starting (and, when killed, leaking) their own."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, num_cpus=4, log_to_driver=False)
    return ray.get_runtime_context().gcs_address
