"""Sandbox for untrusted model output: one-shot code runs and confined grading workers.

- :func:`run_python` runs a :class:`SplitProgram` (untrusted solution in one process,
  trusted tests in another, exchanging plain data; see ``harness.py``) or a trusted
  program once under :class:`SandboxConfig` limits and returns a :class:`RunReport`.
- :class:`WorkerPool` keeps a bounded set of confined worker processes for graders that
  parse untrusted text (math-verify, reasoning-gym scorers), with a hard per-task deadline.
- :func:`sandbox_protections` says which OS protections are active on this machine.

See ``supervisor.py`` for the mechanics and ``_confine.py`` for each protection.
"""

from __future__ import annotations

import functools

from k15_envs.sandbox.config import CODE_DEFAULTS, WORKER_DEFAULTS, SandboxConfig, resolve_config
from k15_envs.sandbox.pool import TaskOutcome, WorkerPool, default_pool_size
from k15_envs.sandbox.runner import RunReport, SplitProgram, run_python
from k15_envs.sandbox.worker import WorkerTask

__all__ = [
    "SandboxConfig",
    "CODE_DEFAULTS",
    "WORKER_DEFAULTS",
    "resolve_config",
    "RunReport",
    "SplitProgram",
    "run_python",
    "WorkerPool",
    "WorkerTask",
    "TaskOutcome",
    "default_pool_size",
    "sandbox_protections",
]


@functools.lru_cache(maxsize=8)
def sandbox_protections(config: SandboxConfig = CODE_DEFAULTS) -> tuple[str, ...]:
    """The protections a sandboxed run actually gets here (runs a no-op program once)."""
    return run_python("pass\n", config).protections
