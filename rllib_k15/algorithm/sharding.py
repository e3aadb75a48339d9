"""Sampling an iteration's problems on EnvRunners: per-shard seeds, and redo on runner death.

Seeds. Every iteration restarts each engine's sampling stream at
``shard_seed(seed, iteration, shard)``, so what an iteration samples depends only on the
config seed, the iteration number, the shard and the weights π_θi — not on how many
iterations this process has run, what the held-out evaluation drew, or whether the runner
was restarted. This is what makes a resumed run (and a redone shard) sample exactly what the
uninterrupted run would have (docs/operating_long_runs.md, "Determinism").

Runner death. RLlib's fault tolerance (``config.fault_tolerance(restart_failed_env_runners=
True, max_num_env_runner_restarts=N)``, the defaults) has Ray restart a dead EnvRunner actor
and ``Algorithm.restore_env_runners`` return it to the healthy set. What RLlib cannot know
is what the dead runner was doing: here, one shard of the iteration's problems.
:func:`sample_shards` tags every call with its shard index, so a shard whose runner died is
known; it brings runners back and redoes that shard on a healthy one, with the same shard
seed and weights, so the redone shard is the lost one. An exception *raised* by a runner
(a bug, a bad problem) is not retried: it is re-raised on the driver with the runner's
traceback. When runners keep dying (``max_failures`` rounds) or none comes back within the
restore timeout, :class:`EnvRunnerLost` names the problems that could not be sampled —
nothing is dropped silently.

Hung runners. A runner that is alive but stuck (a wedged engine, a verifier that never
returns) answers RLlib's health probe, so fault tolerance alone would wait for it forever.
With ``deadline_s`` every round of calls waits at most that long; a runner that misses it
is handed to ``kill`` (the algorithm kills the actor so Ray restarts it, and marks it
unhealthy), its shard is redone like a dead runner's, and the count comes back to be logged.
:func:`sample_deadline_s` derives the deadline from the iteration's token budget.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "EnvRunnerLost",
    "ShardRun",
    "reseed_engine",
    "sample_deadline_s",
    "sample_shards",
    "shard_seed",
]


class EnvRunnerLost(RuntimeError):
    """Remote EnvRunners kept dying; the named problems of the iteration were not sampled."""


class ShardRun(NamedTuple):
    """What :func:`sample_shards` returns: results in shard order and what went wrong."""

    results: list[Any]
    redone: int  # shard runs redone (their runner died or hung)
    hung: int  # runners killed for missing the deadline


def sample_deadline_s(tokens_per_shard: int, min_tokens_per_s: float, floor_s: float) -> float:
    """Deadline of one shard's sampling call, derived from its budget:

        deadline = floor + tokens_per_shard / min_tokens_per_s

    ``tokens_per_shard`` = problems × samples × max response tokens of the shard (the most it
    can generate), ``min_tokens_per_s`` the slowest generation the run still calls alive, and
    ``floor`` covers engine warm-up and scoring.
    """
    if min_tokens_per_s <= 0:
        raise ValueError(f"min_tokens_per_s must be > 0 (got {min_tokens_per_s!r})")
    return float(floor_s) + tokens_per_shard / float(min_tokens_per_s)


def shard_seed(seed: int, iteration: int, shard: int, round_: int = 0) -> int:
    """Sampling seed of ``shard`` in ``iteration``: a 32-bit word of
    ``numpy.random.SeedSequence([seed, iteration, shard])`` (independent streams per key);
    the ``round_``-th extra sampling round of an iteration (dynamic sampling) appends it to
    the key."""
    key = [int(seed), int(iteration), int(shard)] + ([int(round_)] if round_ else [])
    words = np.random.SeedSequence(key).generate_state(1)
    return int(words[0])


def reseed_engine(runner: Any, seed: int) -> None:
    """Restart the runner's engine sampling stream (engines without ``reseed`` are left)."""
    reseed = getattr(runner.engine, "reseed", None)
    if reseed is not None:
        reseed(seed)


def _tagged(call: Callable, shard_index: int, shard: list[int], runner: Any) -> tuple:
    """Runs in the actor: the result tagged with its shard; raised errors come back as text."""
    try:
        return shard_index, True, call(runner, shard_index, shard)
    except Exception:  # noqa: BLE001 - reported on the driver, not swallowed
        return shard_index, False, traceback.format_exc()


def sample_shards(
    group: Any,
    shards: Sequence[list[int]],
    call: Callable[[Any, int, list[int]], Any],
    restore: Callable[[], Any],
    *,
    max_failures: int = 3,
    restore_timeout_s: float = 600.0,
    poll_s: float = 2.0,
    deadline_s: float | None = None,
    kill: Callable[[list[int]], Any] | None = None,
) -> ShardRun:
    """``call(runner, shard_index, shard)`` for every shard on the healthy remote runners of
    ``group`` (an ``EnvRunnerGroup``), one shard per runner per round.

    Shards whose runner died (no reply) are redone on a healthy runner; while none is
    healthy, ``restore()`` (e.g. ``algo.restore_env_runners(group)``) is called every
    ``poll_s`` seconds for up to ``restore_timeout_s`` (a restarted actor needs time to
    come back). More than ``max_failures`` rounds that lost a shard, or no runner back in
    time, raise :class:`EnvRunnerLost`. With ``deadline_s``, a round waits at most that
    long; runners still healthy but without a reply hung: ``kill(runner_ids)`` is called and
    their shards are redone (a hung round counts as a failed round). Returns a
    :class:`ShardRun`.
    """
    if deadline_s is not None and kill is None:
        raise ValueError("sample_shards: a deadline needs `kill` for the runners that miss it")
    from functools import partial

    results: dict[int, Any] = {}
    pending = list(range(len(shards)))
    redone = failures = hung = 0
    waiting_since: float | None = None
    while pending:
        healthy = list(group.healthy_env_runner_ids())
        if not healthy:
            waiting_since = waiting_since or time.monotonic()
            if time.monotonic() - waiting_since > restore_timeout_s:
                raise EnvRunnerLost(
                    _lost_message(
                        shards, pending, f"no EnvRunner came back within {restore_timeout_s:g} s"
                    )
                )
            restore()
            if not group.healthy_env_runner_ids():
                time.sleep(poll_s)
            continue
        waiting_since = None
        batch = pending[: len(healthy)]
        funcs = [partial(_tagged, call, i, list(shards[i])) for i in batch]
        runner_ids = healthy[: len(batch)]
        replies = group.foreach_env_runner(
            funcs, local_env_runner=False, remote_worker_ids=runner_ids, timeout_seconds=deadline_s
        )
        for shard_index, ok, value in replies:
            if not ok:
                raise RuntimeError(
                    f"EnvRunner failed on problems {list(shards[shard_index])}:\n{value}"
                )
            results[shard_index] = value
        lost = [i for i in batch if i not in results]
        if lost and deadline_s is not None:
            alive = set(group.healthy_env_runner_ids())  # a dead runner is marked unhealthy
            stuck = [r for i, r in zip(batch, runner_ids) if i in lost and r in alive]
            if stuck:
                kill(stuck)
                hung += len(stuck)
        pending = lost + pending[len(batch) :]
        if lost:
            redone += len(lost)
            failures += 1
            if failures > max_failures:
                raise EnvRunnerLost(
                    _lost_message(shards, pending, f"runners died in {failures} rounds")
                )
    return ShardRun([results[i] for i in range(len(shards))], redone, hung)


def _lost_message(shards: Sequence[list[int]], pending: list[int], why: str) -> str:
    missing = sorted(p for i in pending for p in shards[i])
    return (
        f"remote EnvRunners failed ({why}); problems {missing} of this iteration were not "
        "sampled. Check the runner logs; raise `max_num_env_runner_restarts` if restarts "
        "were exhausted."
    )
