"""Overlapped generation and training (``async_rollouts``): iteration i+1 samples while i trains.

Synchronous k1.5 alternates the two phases: sample with π_θi, update to θ_{i+1}, sync, sample
again. With ``async_rollouts`` on, the driver starts iteration i+1's sampling on the remote
EnvRunners (a driver thread that waits on their Ray calls) right before the learner update of
iteration i, so the engines generate while the learner computes::

    iteration i:  take S_i ─► sync engines to θ_i ─► start sampling S_{i+1} with θ_i ─┐
                  update on S_i: θ_i → θ_{i+1} ──────────────────── (overlapped) ─────┘

Staleness is bounded at one policy version: S_{i+1} comes from θ_i and is trained at
θ_{i+1}. Iteration 0 (nothing in flight) is exactly the synchronous update; so is the first
iteration after a restore. The engines receive θ_{i+1} only when no sampling is in flight
(Ray actors run one call at a time, and a weight sync must not race a generation).

**Which policy is π_θi in the OPMD loss.** The regulariser's reference is the policy being
updated: ``reference_logprobs: learner`` (the default) takes log π_θ of the learner's current
weights θ_{i+1}, as the synchronous loop does. The squared loss (r − r̄ − τ log π/π_ref)² is a
regression whose per-response minimiser π* ∝ π_ref·exp(r/τ) does not depend on where the
responses were drawn, so one-version-old samples change only the weighting of the fit and the
mean baseline's estimate of τ log Z (made under θ_i instead of θ_{i+1}). With
``reference_logprobs: engine`` the reference is the sampling policy θ_i itself (the engine's
log-probs): the baseline is then consistent, and the step is anchored one version back — the
choice for runs whose learner cannot spare the reference pass. The ``async/staleness`` metric
records the version gap of every trained batch; ``logp_mismatch_*`` grows with it.

On one small CPU box the engine and the learner share the cores, so the overlap buys little
(measured in ``bench.async_rollouts``); the layout it is for is the GPU one, EnvRunners and
learners on different devices (docs/scaling.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rllib_k15.metric_names import (
    ASYNC_OVERLAP_FRACTION,
    ASYNC_SAMPLING_WALL_SECONDS,
    ASYNC_STALENESS,
    ASYNC_WAIT_SECONDS,
    K15_RESULTS,
    WEIGHT_SYNC_SECONDS,
)

__all__ = [
    "AsyncRolloutsMixin",
    "InFlightSampling",
    "SamplingJob",
    "async_rollout_errors",
    "overlap_seconds",
]


def overlap_seconds(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Length of the intersection of two time intervals [a₀, a₁] and [b₀, b₁]:

    overlap = max(0, min(a₁, b₁) − max(a₀, b₀))
    """
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


@dataclass
class SamplingJob:
    """One iteration's sampling: its problems, the policy version the engines held, and the
    future of ``(rollouts, runner_metrics, shards_redone, runners_hung)``."""

    iteration: int
    indices: list[int]
    policy_version: int
    future: Future
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None  # set by the thread when the sampling returns


class InFlightSampling:
    """At most one :class:`SamplingJob` running in a driver thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k15-rollouts")
        self.job: SamplingJob | None = None

    def start(
        self, iteration: int, indices: list[int], policy_version: int, sample: Callable[[], Any]
    ) -> SamplingJob:
        if self.job is not None:
            raise RuntimeError(
                f"sampling of iteration {self.job.iteration} is still in flight; take it first"
            )
        job = SamplingJob(iteration, list(indices), policy_version, Future())

        def run() -> Any:
            try:
                return sample()
            finally:
                job.finished = time.perf_counter()

        job.future = self._pool.submit(run)
        self.job = job
        return job

    def settle(self) -> None:
        """Wait until the job in flight (if any) has finished; it stays to be taken."""
        if self.job is not None:
            self.job.future.exception()  # waits; a raised error surfaces in take()

    def take(self) -> tuple[SamplingJob, Any, float]:
        """The job, its result (re-raising the sampling's error) and the seconds waited."""
        if self.job is None:
            raise RuntimeError("no sampling in flight")
        job, self.job = self.job, None
        start = time.perf_counter()
        result = job.future.result()
        return job, result, time.perf_counter() - start

    def close(self) -> None:
        self.settle()
        self.job = None
        self._pool.shutdown(wait=True)


def async_rollout_errors(c: Any) -> Iterator[str]:
    """``async_rollouts``: a bool; remote EnvRunners; not with partial rollouts or dynamic
    sampling (both decide the next draw from this iteration's finished groups)."""
    if not isinstance(c.async_rollouts, bool):
        yield f"`async_rollouts` ({c.async_rollouts!r}) must be true or false"
        return
    if not c.async_rollouts:
        return
    in_evaluation = getattr(c, "in_evaluation", False)  # RLlib's eval copy: no runners
    if isinstance(c.num_env_runners, int) and c.num_env_runners < 1 and not in_evaluation:
        yield (
            "`async_rollouts` needs remote EnvRunners (`num_env_runners` >= 1, got "
            f"{c.num_env_runners}): the engines sample in their own processes while the "
            "learner trains in the driver"
        )
    if c.partial_rollout_max_tokens:
        yield (
            "`async_rollouts` does not work with partial rollouts "
            f"(`partial_rollout_max_tokens` = {c.partial_rollout_max_tokens}): the next "
            "iteration's continuations are known only after this one's segments return"
        )
    if c.dynamic_sampling is True:
        yield (
            "`async_rollouts` does not work with `dynamic_sampling`: its extra rounds depend "
            "on this iteration's rewards; turn one of them off"
        )


class AsyncRolloutsMixin:
    """K15MirrorDescent's side of ``async_rollouts``: versions, the draw, syncs, metrics.

    Versions count learner updates: ``_policy_version`` is the learner's, ``_engine_version``
    the one the engines hold. ``_engine_weights`` keeps the state the engines were last sent
    (an object-store ref), so a runner restarted while sampling is in flight gets the weights
    its shard was sampled with, not the half-updated learner's.
    """

    def _async_setup(self) -> None:
        self._in_flight = InFlightSampling() if self.config.async_rollouts else None
        self._policy_version = self._engine_version = 0
        self._engine_weights: dict | None = None
        self._update_window = (0.0, 0.0)  # the last learner update's [start, end]
        self._resume_draw: tuple[int, list[int]] | None = None  # a checkpoint's next draw
        self._restore_lock = threading.Lock()  # the thread and the driver both restore

    def _draw(self, iteration: int) -> list[int]:
        if self._resume_draw is not None and self._resume_draw[0] == iteration:
            indices, self._resume_draw = self._resume_draw[1], None
            return indices
        return self.problem_buffer.sample(self.config.problems_per_iteration, iteration)

    def _start_async_rollouts(self, iteration: int) -> None:
        """Sync the engines to the learner if behind, then sample ``iteration`` in the thread."""
        self._sync_engines()
        indices = self._draw(iteration)
        self._in_flight.start(
            iteration, indices, self._engine_version,
            lambda: self._sample_on_runners(indices, iteration),
        )  # fmt: skip

    def _take_async_rollouts(self, iteration: int) -> tuple[list[int], list, list]:
        """This iteration's sampled problems, rollouts and runner metrics; samples now when
        nothing is in flight for it (iteration 0, after a restore)."""
        job = self._in_flight.job
        if job is not None and job.iteration != iteration:
            self._in_flight.take()  # a draw for another iteration (a restore): dropped
            job = None
        if job is None:
            self._start_async_rollouts(iteration)
        job, (rollouts, metrics, redone, hung), waited = self._in_flight.take()
        wall = max(job.finished - job.started, 1e-9)
        overlapped = overlap_seconds((job.started, job.finished), self._update_window)
        for name, value in (
            (ASYNC_STALENESS, self._policy_version - job.policy_version),
            (ASYNC_SAMPLING_WALL_SECONDS, wall),
            (ASYNC_OVERLAP_FRACTION, overlapped / wall),
            (ASYNC_WAIT_SECONDS, waited),
        ):
            self.metrics.log_value((K15_RESULTS, name), float(value), window=1)
        self._log_shard_faults(redone, hung)
        return job.indices, rollouts, metrics

    def _sync_engines(self) -> float:
        """Send the learner's weights to every remote engine when they are behind; seconds."""
        if self._engine_version == self._policy_version:
            return 0.0
        job = self._in_flight.job if self._in_flight is not None else None
        if job is not None and not job.future.done():
            raise RuntimeError("a weight sync must not run while sampling is in flight")
        import ray
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

        start = time.perf_counter()
        state = self.learner_group.get_state(
            components=COMPONENT_LEARNER + "/" + COMPONENT_RL_MODULE, inference_only=True
        )[COMPONENT_LEARNER]
        weights = {COMPONENT_RL_MODULE: ray.put(state[COMPONENT_RL_MODULE])}
        self.env_runner_group.foreach_env_runner(
            lambda er: er.set_state(weights), local_env_runner=False
        )
        self._engine_weights, self._engine_version = weights, self._policy_version
        seconds = time.perf_counter() - start
        self.metrics.log_value((K15_RESULTS, WEIGHT_SYNC_SECONDS), seconds, window=1)
        return seconds

    def _push_engine_weights(self, runner_ids: list[int]) -> bool:
        """Give restarted runners the weights the engines hold (False: none sent yet)."""
        if self._engine_weights is None:
            return False
        weights = self._engine_weights
        self.env_runner_group.foreach_env_runner(
            lambda er: er.set_state(weights), local_env_runner=False, remote_worker_ids=runner_ids
        )
        return True

    def _settle_async_rollouts(self) -> None:
        """Let the sampling in flight finish (before an evaluation or a checkpoint)."""
        if self._in_flight is not None:
            self._in_flight.settle()

    def _async_state(self) -> dict | None:
        """The in-flight draw, so a resumed run samples the same problems next."""
        if self._in_flight is None:
            return None
        self._settle_async_rollouts()
        job = self._in_flight.job
        return None if job is None else {"iteration": job.iteration, "indices": job.indices}

    def _set_async_state(self, saved: dict | None) -> None:
        self._engine_version = self._policy_version  # RLlib's set_state synced the runners
        self._engine_weights = None
        if saved:
            self._resume_draw = (int(saved["iteration"]), [int(i) for i in saved["indices"]])
