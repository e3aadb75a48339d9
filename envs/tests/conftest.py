"""Shared fixtures for the k15_envs tests (pytest collects ``envs/tests``).

Pools are expensive to start (a worker imports sympy or reasoning-gym), so verifiers are
module-scoped and use one worker where parallelism is not what is being tested.
"""

from __future__ import annotations

import os
import sys

import k15_envs  # noqa: F401  (registers the envs)
import pytest

POSIX_LINUX = sys.platform.startswith("linux")


def _harness_processes() -> list[int]:
    """Live processes started by the code sandbox (their command line names the harness or
    the solution process's script)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if (b"_harness.py" in cmdline or b"_solution.py" in cmdline) and state != b"Z":
            found.append(int(entry))
    return found


@pytest.fixture(scope="session")
def harness_processes():
    """A function listing live code-sandbox processes (for leftover checks)."""
    return _harness_processes


@pytest.fixture(scope="session")
def linux_only():
    if not POSIX_LINUX:
        pytest.skip("the full sandbox is Linux-only")
