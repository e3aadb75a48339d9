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
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["EnvRunnerLost", "reseed_engine", "sample_shards", "shard_seed"]


class EnvRunnerLost(RuntimeError):
    """Remote EnvRunners kept dying; the named problems of the iteration were not sampled."""


def shard_seed(seed: int, iteration: int, shard: int) -> int:
    """Sampling seed of ``shard`` in ``iteration``: a 32-bit word of
    ``numpy.random.SeedSequence([seed, iteration, shard])`` (independent streams per key)."""
    words = np.random.SeedSequence([int(seed), int(iteration), int(shard)]).generate_state(1)
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
) -> tuple[list[Any], int]:
    """``call(runner, shard_index, shard)`` for every shard on the healthy remote runners of
    ``group`` (an ``EnvRunnerGroup``), one shard per runner per round.

    Shards whose runner died (no reply) are redone on a healthy runner; while none is
    healthy, ``restore()`` (e.g. ``algo.restore_env_runners(group)``) is called every
    ``poll_s`` seconds for up to ``restore_timeout_s`` (a restarted actor needs time to
    come back). More than ``max_failures`` rounds that lost a shard, or no runner back in
    time, raise :class:`EnvRunnerLost`. Returns the results in shard order and the number
    of shard runs that were redone.
    """
    from functools import partial

    results: dict[int, Any] = {}
    pending = list(range(len(shards)))
    redone = failures = 0
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
        replies = group.foreach_env_runner(
            funcs, local_env_runner=False, remote_worker_ids=healthy[: len(batch)]
        )
        for shard_index, ok, value in replies:
            if not ok:
                raise RuntimeError(
                    f"EnvRunner failed on problems {list(shards[shard_index])}:\n{value}"
                )
            results[shard_index] = value
        lost = [i for i in batch if i not in results]
        pending = lost + pending[len(batch) :]
        if lost:
            redone += len(lost)
            failures += 1
            if failures > max_failures:
                raise EnvRunnerLost(
                    _lost_message(shards, pending, f"runners died in {failures} rounds")
                )
    return [results[i] for i in range(len(shards))], redone


def _lost_message(shards: Sequence[list[int]], pending: list[int], why: str) -> str:
    missing = sorted(p for i in pending for p in shards[i])
    return (
        f"remote EnvRunners failed ({why}); problems {missing} of this iteration were not "
        "sampled. Check the runner logs; raise `max_num_env_runner_restarts` if restarts "
        "were exhausted."
    )
