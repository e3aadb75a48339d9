"""ProblemBuffer: per-problem statistics, problem sampling and unfinished rollouts.

The first box of the training iteration (docs/design.md §2): it picks the problems an iteration
trains on with a :mod:`strategy <rllib_k15.sampling.strategies>`, learns from the verified
outcomes (:meth:`ProblemBuffer.record`). Its whole
state — statistics and its random generator — goes into the RLlib
checkpoint through :meth:`get_state` / :meth:`set_state`, so a resumed run samples exactly
what the uninterrupted run would have sampled (no silently replayed data).

Problems are indices 0..N-1 into the env's problem list. Difficulty (larger = harder)
comes from dataset metadata or a difficulty file (:func:`load_difficulty_file`).

Usage::

    buf = ProblemBuffer(difficulty, SamplingConfig(strategy="prioritized"), seed=0)
    for it in range(num_iterations):
        problems = buf.sample(64, iteration=it)
        ...  # generate, verify
        buf.record(problem_index, [1.0, 0.0, 1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rllib_k15.sampling.difficulty import load_difficulty_file
from rllib_k15.sampling.strategies import (
    ProblemStats,
    SamplingConfig,
    SamplingStrategy,
    draw_without_replacement,
    sampling_weights,
)

__all__ = ["ProblemBuffer"]

_STATE_VERSION = 1
NEVER = -1
"""``last_seen_iteration`` of a problem never sampled."""


class ProblemBuffer:
    """Per-problem statistics over a problem set of size N, and the sampler built on them.

    Args:
        difficulty: (N,) finite floats, larger = harder.
        config: the sampling strategy and its parameters.
        seed: seeds the buffer's own ``numpy`` PCG64 generator (saved in the state).
    """

    def __init__(
        self,
        difficulty: Sequence[float] | np.ndarray,
        config: SamplingConfig | None = None,
        *,
        seed: int = 0,
    ) -> None:
        diff = np.array(difficulty, dtype=np.float64)
        if diff.ndim != 1 or diff.size == 0:
            raise ValueError(f"difficulty must be a non-empty 1-D sequence, got shape {diff.shape}")
        if not np.all(np.isfinite(diff)):
            bad = int(np.flatnonzero(~np.isfinite(diff))[0])
            raise ValueError(f"difficulty[{bad}] is {diff[bad]}; difficulties must be finite")
        self.config = config if config is not None else SamplingConfig()
        if self.config.strategy == SamplingStrategy.CURRICULUM and not np.any(
            diff >= self.config.hard_threshold
        ):
            raise ValueError(
                f"curriculum: no problem has difficulty >= `hard_threshold` "
                f"({self.config.hard_threshold}); the hardest is {diff.max()}"
            )
        self._difficulty = diff
        self._attempts = np.zeros(diff.size, dtype=np.int64)
        self._successes = np.zeros(diff.size, dtype=np.int64)
        self._last_seen = np.full(diff.size, NEVER, dtype=np.int64)
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_difficulty_file(
        cls,
        path: str | Path,
        num_problems: int,
        config: SamplingConfig | None = None,
        *,
        problem_ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ProblemBuffer:
        """Build a buffer whose difficulty is read from a ``k15 difficulty`` file."""
        difficulty = load_difficulty_file(path, num_problems, problem_ids=problem_ids)
        return cls(difficulty, config, **kwargs)

    # ------------------------------------------------------------------ statistics

    @property
    def num_problems(self) -> int:
        return int(self._difficulty.size)

    @property
    def difficulty(self) -> np.ndarray:
        return self._difficulty.copy()

    @property
    def attempts(self) -> np.ndarray:
        return self._attempts.copy()

    @property
    def successes(self) -> np.ndarray:
        return self._successes.copy()

    @property
    def last_seen_iteration(self) -> np.ndarray:
        """Iteration at which each problem was last sampled; -1 if never."""
        return self._last_seen.copy()

    def success_rate(self) -> np.ndarray:
        """successes / attempts per problem, NaN for problems with no recorded outcome."""
        return self.stats().success_rate()

    def stats(self) -> ProblemStats:
        """A snapshot of the statistics (copies, safe to keep)."""
        return ProblemStats(self.difficulty, self.attempts, self.successes)

    def _stats_view(self) -> ProblemStats:
        """Read-only views for the strategies (no copies; valid until the next record)."""
        views = []
        for arr in (self._difficulty, self._attempts, self._successes):
            view = arr.view()
            view.flags.writeable = False
            views.append(view)
        return ProblemStats(*views)

    # ------------------------------------------------------------------ sampling

    def sample(
        self, num_problems: int, iteration: int, rng: np.random.Generator | None = None
    ) -> list[int]:
        """Pick the problems of ``iteration`` with the configured strategy, in draw order.

        Rule: the strategy's weights (see :mod:`~rllib_k15.sampling.strategies`), with the
        problems already served at this same ``iteration`` (by an earlier call) set to 0,
        then :func:`~rllib_k15.sampling.strategies.draw_without_replacement`. So no
        problem appears twice in one iteration, even across calls.

        When fewer than ``num_problems`` problems are eligible, every eligible problem is
        returned once (the list is shorter than asked; nothing is repeated). After a
        curriculum transition on a small hard pool, expect fewer problems per iteration.

        ``rng``: a generator to use instead of the buffer's own (which is then untouched
        and only the buffer's own generator is part of the saved state).
        """
        if num_problems < 0:
            raise ValueError(f"`num_problems` ({num_problems}) must be >= 0")
        if iteration < 0:
            raise ValueError(f"`iteration` ({iteration}) must be >= 0")
        weights = sampling_weights(self._stats_view(), iteration, self.config)
        weights[self._last_seen == iteration] = 0.0
        chosen = draw_without_replacement(weights, num_problems, self._rng if rng is None else rng)
        self._last_seen[chosen] = iteration
        return chosen

    def record(self, problem_index: int, outcomes: Sequence[float | bool]) -> None:
        """Add the verified outcomes of finished responses to ``problem_index``'s stats.

        Each outcome is a task reward or a bool; it is an attempt, and a success when
        ``float(outcome) >= config.success_threshold``. Record responses when they finish
        (a partial rollout is recorded once, in the iteration it completes). An empty
        ``outcomes`` records nothing.
        """
        if not 0 <= problem_index < self.num_problems:
            raise IndexError(f"problem_index ({problem_index}) not in [0, {self.num_problems})")
        values = np.asarray([float(o) for o in outcomes], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"non-finite outcome for problem {problem_index}: {list(outcomes)}")
        self._attempts[problem_index] += values.size
        self._successes[problem_index] += int(np.sum(values >= self.config.success_threshold))

    # ------------------------------------------------------------------ checkpointing

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume: statistics and RNG state.

        Plain Python types only (lists, ints, floats, strs): round-trips exactly through
        JSON and msgpack (the PCG64 128-bit integers are stored as decimal strings).
        """
        return {
            "version": _STATE_VERSION,
            "num_problems": self.num_problems,
            "difficulty": self._difficulty.tolist(),
            "attempts": self._attempts.tolist(),
            "successes": self._successes.tolist(),
            "last_seen_iteration": self._last_seen.tolist(),
            "rng": _rng_state_to_plain(self._rng),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` output. The config is not part of the state: it comes
        from the (possibly edited) run config."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported ProblemBuffer state version {state.get('version')!r}")
        if state["num_problems"] != self.num_problems:
            raise ValueError(
                f"state is for {state['num_problems']} problems, this buffer has "
                f"{self.num_problems}; was the problem set changed?"
            )
        n = self.num_problems
        arrays = {
            "difficulty": np.asarray(state["difficulty"], dtype=np.float64),
            "attempts": np.asarray(state["attempts"], dtype=np.int64),
            "successes": np.asarray(state["successes"], dtype=np.int64),
            "last_seen_iteration": np.asarray(state["last_seen_iteration"], dtype=np.int64),
        }
        for name, arr in arrays.items():
            if arr.shape != (n,):
                raise ValueError(f"state[{name!r}] has shape {arr.shape}, expected ({n},)")
        rng = _rng_from_plain(state["rng"])
        # Everything parsed: now replace (a bad state leaves the buffer untouched).
        self._rng = rng
        self._difficulty = arrays["difficulty"]
        self._attempts = arrays["attempts"]
        self._successes = arrays["successes"]
        self._last_seen = arrays["last_seen_iteration"]


def _rng_state_to_plain(rng: np.random.Generator) -> dict[str, Any]:
    """PCG64 state with its 128-bit ints as decimal strings (msgpack caps ints at 64 bits)."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators are checkpointed, got {state['bit_generator']}")
    return {
        "bit_generator": "PCG64",
        "state": {k: str(v) for k, v in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _rng_from_plain(plain: dict[str, Any]) -> np.random.Generator:
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": plain["bit_generator"],
        "state": {k: int(v) for k, v in plain["state"].items()},
        "has_uint32": int(plain["has_uint32"]),
        "uinteger": int(plain["uinteger"]),
    }
    return np.random.Generator(bit_generator)
