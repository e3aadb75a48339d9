"""Confidence intervals that match the evaluation design: problems are the unit.

An evaluation draws ``n`` problems and ``k`` samples per problem. The ``k`` samples of one
problem are not independent draws of the population (they share the problem), so the
interval comes from a bootstrap over problems, each problem carrying its own pass rate
(a cluster bootstrap):

    p̂ = (1/n) Σ_i c_i,   c_i = (1/k) Σ_j correct_ij,      CI = bootstrap over {c_i}

with scipy's BCa bootstrap (``scipy.stats.bootstrap``). A paired comparison of two policies
on the same problems resamples the per-problem differences d_i = c_i^A − c_i^B the same way.

Across training seeds (one value per seed's run, a handful of seeds) the interval is
Student's t: mean ± t_{n−1, 0.975} · s / √n (:func:`seed_interval`); arms trained with the
same seeds are compared by the per-seed differences (:func:`paired_seed_difference`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "paired_difference_interval",
    "paired_seed_difference",
    "pass_at_1_interval",
    "per_problem_rates",
    "seed_interval",
]

CONFIDENCE = 0.95
RESAMPLES = 4999


def per_problem_rates(correct: Sequence[Sequence[bool]]) -> np.ndarray:
    """c_i: the fraction of problem i's samples that are correct."""
    if not correct or any(len(row) == 0 for row in correct):
        raise ValueError("every problem needs at least one sample")
    return np.array([np.mean(np.asarray(row, dtype=np.float64)) for row in correct])


def _mean_interval(values: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values``; a degenerate sample (one value, or
    all equal) has no spread to resample and gets the point itself."""
    from scipy.stats import bootstrap

    if len(values) < 2 or np.ptp(values) == 0:
        point = float(np.mean(values))
        return point, point
    result = bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def pass_at_1_interval(
    correct: Sequence[Sequence[bool]], confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[float, float]:
    """The ``confidence`` interval of Pass@1 from a bootstrap over problems."""
    return _mean_interval(per_problem_rates(correct), confidence, seed)


def paired_difference_interval(
    correct_a: Sequence[Sequence[bool]],
    correct_b: Sequence[Sequence[bool]],
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Pass@1(A) − Pass@1(B) on the same problems, with its interval: (difference, low, high)."""
    rates_a, rates_b = per_problem_rates(correct_a), per_problem_rates(correct_b)
    if len(rates_a) != len(rates_b):
        raise ValueError(
            f"a paired comparison needs the same problems: {len(rates_a)} vs {len(rates_b)}"
        )
    diff = rates_a - rates_b
    low, high = _mean_interval(diff, confidence, seed)
    return float(np.mean(diff)), low, high


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean over seeds: x̄ ± t_{n−1} · s/√n (one seed: the point)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if len(x) < 2 or np.ptp(x) == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
    return float(low), float(high)


def paired_seed_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Mean of the per-seed differences a_s − b_s and its t-interval: (difference, low, high)."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same seeds: {len(a)} vs {len(b)} runs")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = seed_interval(diff, confidence)
    return float(diff.mean()), low, high
