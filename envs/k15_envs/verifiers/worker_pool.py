"""Shared base of the verifiers that grade in a :class:`WorkerPool` (``math``, ``reasoning_gym``).

Both grade a batch the same way: in the parent, each response becomes either a verdict at
once (no answer found, a malformed problem) or a :class:`PoolJob` (the worker task's
arguments). The jobs go to one bounded pool of sandboxed workers (at most ``num_workers``
at a time, a hard ``timeout_s`` each), and each outcome becomes the verdict at its
response's place. A subclass supplies the worker side (``_worker_preload``, ``_worker_task``)
and the two ends: ``_prepare`` (response -> verdict or job) and ``_to_verdict`` (outcome ->
verdict).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from k15_envs.extract import ExtractMode
from k15_envs.sandbox import WORKER_DEFAULTS, SandboxConfig, WorkerPool, WorkerTask, resolve_config
from k15_envs.sandbox.pool import TaskOutcome
from k15_envs.types import Problem, Verdict
from k15_envs.verifiers.base import PooledVerifier

__all__ = ["WorkerPoolVerifier", "PoolJob"]


class PoolJob(NamedTuple):
    """One response's grading request.

    args: the arguments of the worker task (``_worker_task``) for this response.
    context: the extra arguments ``_to_verdict(outcome, *context)`` needs for it.
    """

    args: tuple
    context: tuple


class WorkerPoolVerifier(PooledVerifier):
    """A verifier whose grading runs in a lazily created, per-process :class:`WorkerPool`.

    extract: answer extraction mode (stored as an :class:`ExtractMode`).
    timeout_s: hard per-answer deadline (the worker is killed and replaced past it).
    num_workers: worker processes (default ``min(2, cpu_count)``).
    sandbox: overrides of the worker sandbox (``WORKER_DEFAULTS``), e.g. ``{"memory_bytes": ...}``.
    """

    _worker_preload: ClassVar[tuple[str, ...]] = ()  # modules a worker imports at start
    _worker_task: ClassVar[WorkerTask]  # the task each job runs

    def __init__(
        self,
        *,
        extract: ExtractMode | str,
        timeout_s: float,
        num_workers: int | None,
        sandbox: SandboxConfig | dict | None,
    ) -> None:
        super().__init__()
        self.extract = ExtractMode(extract)
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.sandbox = resolve_config(sandbox, WORKER_DEFAULTS)

    def _create_resource(self) -> WorkerPool:
        """The grading pool: ``num_workers`` workers, ``timeout_s`` per task."""
        return WorkerPool(
            preload=self._worker_preload,
            size=self.num_workers,
            task_timeout_s=self.timeout_s,
            sandbox=self.sandbox,
        )

    @abc.abstractmethod
    def _prepare(self, problem: Problem, response: str) -> Verdict | PoolJob:
        """In the parent: the verdict already known for ``response``, or its job."""

    @abc.abstractmethod
    def _to_verdict(self, outcome: TaskOutcome, *context: Any) -> Verdict:
        """The verdict for a job's ``outcome``, given that job's ``context``."""

    def _run_jobs(self, jobs: list[tuple]) -> list[TaskOutcome]:
        """One outcome per job (in order), run over the pool at most ``size`` at a time."""
        return self._get_resource().map(self._worker_task, jobs)

    def verify(self, problem: Problem, response: str) -> Verdict:
        return self.verify_many([problem], [response])[0]

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        """Prepare every response, grade all jobs in one pool batch, verdicts in order."""
        verdicts: list[Verdict | None] = []
        pending: list[tuple[int, PoolJob]] = []  # (place in ``verdicts``, job)
        for problem, response in zip(problems, responses, strict=True):
            prepared = self._prepare(problem, response)
            if isinstance(prepared, PoolJob):
                pending.append((len(verdicts), prepared))
                verdicts.append(None)
            else:
                verdicts.append(prepared)
        if pending:
            outcomes = self._run_jobs([job.args for _, job in pending])
            for (index, job), outcome in zip(pending, outcomes, strict=True):
                verdicts[index] = self._to_verdict(outcome, *job.context)
        return [v for v in verdicts if v is not None]
