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
    "grpo_advantages",
    "length_harmonizing_reward",
    "length_penalty_weight",
    "length_reward",
    "reference_statistics",
    "rest_fit_weights",
    "soft_overlong_penalty",
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


def soft_overlong_penalty(lengths: np.ndarray, max_tokens: int, buffer_tokens: int) -> np.ndarray:
    """DAPO's soft overlong punishment of each response, in [−1, 0]:

        R(y) = 0                                  if |y| ≤ L_max − L_buf
        R(y) = ((L_max − L_buf) − |y|) / L_buf    if L_max − L_buf < |y| ≤ L_max
        R(y) = −1                                 if |y| > L_max

    with L_max = ``max_tokens`` and L_buf = ``buffer_tokens`` (0 < L_buf < L_max): no
    penalty below the buffer, a linear ramp across it, −1 at and beyond the cap. Unlike the
    Kimi length reward it does not depend on the group: it only pushes away from the cap.
    """
    if not 0 < buffer_tokens < max_tokens:
        raise ValueError(
            f"`overlong_buffer_tokens` ({buffer_tokens}) must be in (0, max_response_tokens "
            f"= {max_tokens})"
        )
    lengths = np.asarray(lengths, dtype=np.float64)
    start = max_tokens - buffer_tokens
    ramp = (start - lengths) / buffer_tokens
    return np.where(lengths <= start, 0.0, np.where(lengths <= max_tokens, ramp, -1.0))


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


def grpo_advantages(rewards: np.ndarray, group_ids: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """GRPO (DeepSeekMath) outcome advantage, the same for every token of response j:

        Â_j = (r_j − mean_g(r)) / (std_g(r) + eps)

    over the group g of j (the k responses of one problem). std is the sample standard
    deviation with Bessel's correction (÷ (k − 1)) and eps = 1e-4, as TRL 1.16 computes it;
    a group of one response has Â = 0. A group whose rewards are all equal gets Â = 0.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros(len(rewards), dtype=np.float64)
    for idx in _groups(group_ids):
        if idx.size < 2:
            continue
        group = rewards[idx]
        out[idx] = (group - group.mean()) / (group.std(ddof=1) + eps)
    return out


def rest_fit_weights(
    rewards: np.ndarray, correct: np.ndarray, group_ids: np.ndarray, top_k: int = 1
) -> np.ndarray:
    """ReST row weights: which responses are fitted, scaled so the loss is a mean over them.

    Per problem, the eligible responses are the correct ones; they are ranked by shaped
    reward (highest first, ties by position) and the first ``top_k`` are selected
    (``top_k = 0``: every correct response). With n rows and s selected in the batch,

        w_j = n / s if j is selected, else 0      (all 0 when s = 0)

    so the row mean (1/n) Σ_j w_j · NLL_j is the mean NLL over the selected responses.
    Wrong responses always get 0: ReST never pushes a response down.
    """
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"`rest_top_k` ({top_k!r}) must be an integer >= 0")
    rewards = np.asarray(rewards, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    selected = np.zeros(len(rewards), dtype=bool)
    for idx in _groups(group_ids):
        eligible = idx[correct[idx]]
        ranked = eligible[np.argsort(-rewards[eligible], kind="stable")]
        selected[ranked if top_k == 0 else ranked[:top_k]] = True
    n_selected = int(selected.sum())
    if n_selected == 0:
        return np.zeros(len(rewards), dtype=np.float64)
    return selected * (len(rewards) / n_selected)


def reference_statistics(lengths: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """O1-Pruner reference statistics of one problem from K samples y'_i of π_ref:

    L̂_ref(x) = (1/K) Σ_i L(y'_i),     Â_ref(x) = (1/K) Σ_i A(x, y'_i)
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if lengths.size == 0 or lengths.shape != correct.shape:
        raise ValueError(
            f"reference_statistics needs K >= 1 lengths and verdicts of the same shape, got "
            f"{lengths.shape} and {correct.shape}"
        )
    return float(lengths.mean()), float(correct.mean())


def length_harmonizing_reward(
    lengths: np.ndarray,
    correct: np.ndarray,
    ref_mean_length: np.ndarray,
    ref_accuracy: np.ndarray,
    lam: float,
) -> np.ndarray:
    """O1-Pruner's length-harmonizing reward of each response y to its problem x:

        R_LH(x, y) = L̂_ref(x) / L(y) − 1 + λ (A(x, y) − Â_ref(x))

    Positive when y is shorter than the reference model's mean on x, or right where the
    reference model is often wrong; λ ≥ 0 trades accuracy against length. L(y) is clamped
    to >= 1 token so an empty response cannot divide by zero.
    """
    if lam < 0:
        raise ValueError(f"`o1_pruner_lambda` ({lam!r}) must be >= 0")
    lengths = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    ref_mean_length = np.asarray(ref_mean_length, dtype=np.float64)
    ref_accuracy = np.asarray(ref_accuracy, dtype=np.float64)
    return ref_mean_length / lengths - 1.0 + lam * (correct - ref_accuracy)
