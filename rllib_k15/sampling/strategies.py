"""Problem-sampling strategies: which problems an iteration trains on.

Kimi k1.5 (report §2.3.4 "Sampling Strategies", Figure 9) uses two strategies on top of
plain uniform sampling:

- **curriculum**: train on the whole mixed-difficulty set first, then only on hard
  problems from a transition iteration on;
- **prioritized**: sample problem i with probability ∝ (1 − s_i), s_i its success rate so
  far, so the model spends its samples where it still fails.

Each strategy is a pure function ``(stats, iteration, config) -> weights`` registered under
a :class:`SamplingStrategy` name; :func:`sampling_weights` dispatches through the registry
with no special cases. Weights are non-negative, one per problem, and need not sum to 1;
a weight of 0 means "not eligible this iteration". :func:`draw_without_replacement` turns
weights into problem indices. :class:`~rllib_k15.sampling.problem_buffer.ProblemBuffer`
glues the two together with the per-problem statistics.

Where this differs from the report: the prioritized weight has a floor,
``max(1 − s_i, priority_floor)``, so solved problems are still revisited occasionally
(the report's rule gives them probability 0 and never checks that they stay solved).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "ProblemStats",
    "SamplingConfig",
    "SamplingStrategy",
    "StrategyFn",
    "StrategyRegistry",
    "STRATEGIES",
    "register_strategy",
    "sampling_weights",
    "draw_without_replacement",
]


class SamplingStrategy(str, Enum):  # noqa: UP042 (StrEnum needs 3.11; we support 3.10)
    """Names of the registered sampling strategies (the values are the config strings)."""

    UNIFORM = "uniform"
    CURRICULUM = "curriculum"
    PRIORITIZED = "prioritized"


@dataclass(frozen=True)
class SamplingConfig:
    """Parameters of problem sampling. Every field is used by exactly one strategy except
    ``strategy`` and ``success_threshold``; the others are ignored by the rest."""

    strategy: SamplingStrategy = SamplingStrategy.UNIFORM
    """Which strategy picks the problems of an iteration. ``uniform`` is the report's
    baseline (Figure 9); ``curriculum`` and ``prioritized`` are its two proposals."""

    transition_iteration: int = 100
    """curriculum: first iteration (0-based) that samples only hard problems; iterations
    ``< transition_iteration`` sample the whole set. The report gives no number; switching
    too early starves the model of solvable problems (no reward variance, no gradient),
    switching too late wastes compute on problems it already solves. Tune it."""

    hard_threshold: float = 0.5
    """curriculum: a problem is hard when ``difficulty >= hard_threshold``. With difficulty
    = 1 − pass rate (see :mod:`rllib_k15.sampling.difficulty`) the default 0.5 keeps the
    problems the assessing model solves at most half of the time. Raising it focuses
    harder but shrinks the pool (the buffer refuses a pool with no hard problem)."""

    priority_floor: float = 0.05
    """prioritized: weight floor, ``weight_i = max(1 − s_i, priority_floor)``. With 0.05 a
    problem solved every time is drawn 1/20 as often as a never-solved one: often enough
    to notice a regression (forgetting), rarely enough not to waste samples. Must be in
    (0, 1]; 1 turns prioritized sampling into uniform sampling."""

    success_threshold: float = 1.0
    """A recorded outcome counts as a success when ``float(outcome) >= success_threshold``.
    The default fits 0/1 verifier rewards and bool correctness flags. Record the
    verifier's task reward, not the length-shaped reward: the length term can push a
    correct answer below 1 and make it count as a failure."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "strategy", SamplingStrategy(self.strategy))
        except ValueError:
            valid = ", ".join(s.value for s in SamplingStrategy)
            raise ValueError(f"`strategy` ({self.strategy!r}) must be one of: {valid}") from None
        if self.transition_iteration < 0:
            raise ValueError(f"`transition_iteration` ({self.transition_iteration}) must be >= 0")
        if not np.isfinite(self.hard_threshold):
            raise ValueError(f"`hard_threshold` ({self.hard_threshold}) must be finite")
        if not 0.0 < self.priority_floor <= 1.0:
            raise ValueError(f"`priority_floor` ({self.priority_floor}) must be in (0, 1]")
        if not np.isfinite(self.success_threshold):
            raise ValueError(f"`success_threshold` ({self.success_threshold}) must be finite")


@dataclass(frozen=True)
class ProblemStats:
    """Read-only per-problem statistics a strategy may look at. All arrays have shape (N,).

    difficulty:  float, larger = harder (dataset metadata or 1 − pass rate).
    attempts:    int, number of finished responses recorded for the problem.
    successes:   int, how many of those counted as correct.
    """

    difficulty: np.ndarray
    attempts: np.ndarray
    successes: np.ndarray

    @property
    def num_problems(self) -> int:
        return int(self.difficulty.shape[0])

    def success_rate(self, unseen: float = float("nan")) -> np.ndarray:
        """successes / attempts per problem; ``unseen`` where attempts == 0. Shape (N,)."""
        rate = np.full(self.num_problems, unseen, dtype=np.float64)
        seen = self.attempts > 0
        rate[seen] = self.successes[seen] / self.attempts[seen]
        return rate


StrategyFn = Callable[[ProblemStats, int, SamplingConfig], np.ndarray]
"""``fn(stats, iteration, config) -> weights``: (N,) float64, >= 0, zero = not eligible."""


class StrategyRegistry:
    """Maps :class:`SamplingStrategy` names to strategy functions; rejects duplicates."""

    def __init__(self) -> None:
        self._fns: dict[SamplingStrategy, StrategyFn] = {}

    def register(self, name: SamplingStrategy | str) -> Callable[[StrategyFn], StrategyFn]:
        """Decorator registering ``fn`` under ``name``. A name can be registered once."""
        key = SamplingStrategy(name)

        def decorator(fn: StrategyFn) -> StrategyFn:
            if key in self._fns:
                raise ValueError(
                    f"sampling strategy {key.value!r} is already registered "
                    f"(by {self._fns[key].__qualname__})"
                )
            self._fns[key] = fn
            return fn

        return decorator

    def get(self, name: SamplingStrategy | str) -> StrategyFn:
        key = SamplingStrategy(name)
        if key not in self._fns:
            raise KeyError(f"sampling strategy {key.value!r} has no registered function")
        return self._fns[key]

    def __contains__(self, name: object) -> bool:
        try:
            return SamplingStrategy(name) in self._fns
        except ValueError:
            return False

    def __iter__(self) -> Iterator[SamplingStrategy]:
        return iter(self._fns)


STRATEGIES = StrategyRegistry()
"""The package's strategy registry; every :class:`SamplingStrategy` member is registered."""

register_strategy = STRATEGIES.register


@register_strategy(SamplingStrategy.UNIFORM)
def uniform_weights(stats: ProblemStats, iteration: int, config: SamplingConfig) -> np.ndarray:
    """Every problem has weight 1: each is equally likely, whatever the iteration."""
    return np.ones(stats.num_problems, dtype=np.float64)


@register_strategy(SamplingStrategy.CURRICULUM)
def curriculum_weights(stats: ProblemStats, iteration: int, config: SamplingConfig) -> np.ndarray:
    """Uniform over all problems while ``iteration < transition_iteration``; from
    ``iteration == transition_iteration`` on, uniform over the problems with
    ``difficulty >= hard_threshold`` (weight 1) and weight 0 for the rest."""
    if iteration < config.transition_iteration:
        return np.ones(stats.num_problems, dtype=np.float64)
    return (stats.difficulty >= config.hard_threshold).astype(np.float64)


@register_strategy(SamplingStrategy.PRIORITIZED)
def prioritized_weights(stats: ProblemStats, iteration: int, config: SamplingConfig) -> np.ndarray:
    """weight_i = max(1 − s_i, priority_floor), s_i = successes_i / attempts_i.

    A problem never attempted counts as s_i = 0, i.e. it gets the largest weight 1: new
    problems are tried soon rather than starved behind half-solved ones.
    """
    rate = stats.success_rate(unseen=0.0)
    return np.maximum(1.0 - rate, config.priority_floor)


def sampling_weights(
    stats: ProblemStats,
    iteration: int,
    config: SamplingConfig,
    registry: StrategyRegistry = STRATEGIES,
) -> np.ndarray:
    """Weights of ``config.strategy`` at ``iteration``, checked: (N,) float64, finite, >= 0.

    ``registry``: where to look the strategy up (the package registry by default).
    """
    strategy_fn = registry.get(config.strategy)
    weights = np.asarray(strategy_fn(stats, iteration, config), dtype=np.float64)
    if weights.shape != (stats.num_problems,):
        raise ValueError(
            f"strategy {config.strategy.value!r} returned shape {weights.shape}, "
            f"expected ({stats.num_problems},)"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(
            f"strategy {config.strategy.value!r} returned a negative or non-finite weight"
        )
    return weights


def draw_without_replacement(weights: np.ndarray, num: int, rng: np.random.Generator) -> list[int]:
    """Draw ``min(num, #positive weights)`` distinct indices, in draw order.

    Rule: successive sampling (Plackett–Luce). The first index is drawn with probability
    ``w_i / Σ w``; each following one with probability proportional to ``w`` over the
    indices not drawn yet. Implemented exactly with the Gumbel-top-k trick: the ``num``
    largest keys ``log w_i + G_i``, ``G_i ~ Gumbel(0, 1)`` i.i.d. Zero weights are never
    drawn. When ``num`` is a large fraction of the eligible pool, inclusion probabilities
    are flatter than ``w`` (they cannot exceed 1). Consumes exactly ``len(weights)``
    Gumbel variates from ``rng`` whatever ``num`` is.
    """
    if num < 0:
        raise ValueError(f"`num` ({num}) must be >= 0")
    weights = np.asarray(weights, dtype=np.float64)
    gumbel = rng.gumbel(size=weights.shape[0])
    eligible = np.flatnonzero(weights > 0)
    take = min(num, eligible.size)
    if take == 0:
        return []
    keys = np.log(weights[eligible]) + gumbel[eligible]
    order = np.argsort(-keys, kind="stable")[:take]
    return [int(i) for i in eligible[order]]
