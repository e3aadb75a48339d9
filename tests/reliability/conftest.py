"""Fixtures of the reliability group (its helpers: support.runs, support.faulty_env)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_address() -> str:
    """One Ray instance for the session; child `k15 train` processes join it through
    ``RAY_ADDRESS`` instead of each starting (and, when killed, leaking) their own."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, num_cpus=4, log_to_driver=False)
    return ray.get_runtime_context().gcs_address
