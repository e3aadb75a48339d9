"""Reward shaping for one group of k responses to the same problem (Kimi k1.5 §2.3.2–2.3.3).

Everything here is pure numpy over one *group* (the k samples of one problem) or over a
flat batch with integer group ids. Importable without Ray or torch.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

__all__ = [
    "Baseline",
    "group_baseline",
    "grouped_baselines",
    "grouped_length_rewards",
    "length_penalty_weight",
    "length_reward",
]


class Baseline(str, Enum):
    """How τ·log Z is estimated from the k sampled rewards of one problem."""

    MEAN = "mean"  # r̄ = mean_j r_j  (the report's practical default; τ log Z → E[r] as τ → ∞)
    LOGSUMEXP = "logsumexp"  # τ · log( (1/k) Σ_j exp(r_j / τ) )


def group_baseline(rewards: np.ndarray, tau: float, kind: Baseline | str = Baseline.MEAN) -> float:
    """Estimate τ·log Z for one problem from its k rewards.

    mean:       b = (1/k) Σ_j r_j
    logsumexp:  b = τ · log( (1/k) Σ_j exp(r_j / τ) ), computed stably as
                τ · (logsumexp(r/τ) − log k).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.size == 0:
        raise ValueError("group_baseline needs at least one reward")
    kind = Baseline(kind)
    if kind is Baseline.MEAN:
        return float(rewards.mean())
    if tau <= 0:
        raise ValueError(f"tau must be > 0 for the logsumexp baseline, got {tau}")
    scaled = rewards / tau
    peak = scaled.max()
    return float(tau * (peak + np.log(np.exp(scaled - peak).mean())))


def length_reward(lengths: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Kimi k1.5 length reward for the k responses of one problem (§2.3.3).

    λ_i = 0.5 − (len_i − min_len) / (max_len − min_len)
    len_reward_i = λ_i if r_i = 1 else min(0, λ_i)
    and 0 for every response when max_len = min_len.
    Correct short answers earn up to +0.5; long answers (right or wrong) lose up to −0.5;
    a wrong answer is never rewarded for being short.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if lengths.shape != correct.shape:
        raise ValueError(f"lengths {lengths.shape} and correct {correct.shape} differ in shape")
    if lengths.size == 0:
        return np.zeros(0)
    min_len, max_len = lengths.min(), lengths.max()
    if max_len == min_len:
        return np.zeros_like(lengths)
    lam = 0.5 - (lengths - min_len) / (max_len - min_len)
    return np.where(correct, lam, np.minimum(0.0, lam))


def length_penalty_weight(iteration: int, warmup_iters: int, weight: float) -> float:
    """Weight of the length reward at a (0-based) training iteration.

    0 for the first ``warmup_iters`` iterations (the report warms up without the penalty so
    it does not slow down early learning), then the constant ``weight``.
    """
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    return float(weight) if iteration >= warmup_iters else 0.0


def _groups(group_ids: np.ndarray) -> list[np.ndarray]:
    group_ids = np.asarray(group_ids)
    return [np.flatnonzero(group_ids == g) for g in np.unique(group_ids)]


def grouped_length_rewards(
    lengths: np.ndarray, correct: np.ndarray, group_ids: np.ndarray
) -> np.ndarray:
    """:func:`length_reward` applied within each group of a flat batch."""
    out = np.zeros(len(lengths), dtype=np.float64)
    lengths, correct = np.asarray(lengths), np.asarray(correct)
    for idx in _groups(group_ids):
        out[idx] = length_reward(lengths[idx], correct[idx])
    return out


def grouped_baselines(
    rewards: np.ndarray, group_ids: np.ndarray, tau: float, kind: Baseline | str = Baseline.MEAN
) -> np.ndarray:
    """:func:`group_baseline` of each row's group, broadcast back to the rows."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros(len(rewards), dtype=np.float64)
    for idx in _groups(group_ids):
        out[idx] = group_baseline(rewards[idx], tau, kind)
    return out
