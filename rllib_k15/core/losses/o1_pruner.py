"""O1-Pruner (Luo et al. 2025): length-harmonizing reward with a sequence-level PPO-clip.

A comparison algorithm of the Kimi k1.5 report; select it with
``K15Config().training(loss="o1_pruner")``.

**O1-Pruner** (Luo et al. 2025, "O1-Pruner: Length-Harmonizing Fine-Tuning")::

    R_j = L̂_ref(x) / L(y_j) − 1 + λ (A(x, y_j) − Â_ref(x))    (rewards.length_harmonizing_reward)
    ρ_j = π_θ(y_j | x) / π_θi(y_j | x)
    L   = −(1/B) Σ_j min(ρ_j R_j, clip(ρ_j, 1 − ε, 1 + ε) R_j)

L̂_ref, Â_ref: mean length and accuracy of K samples of the reference (initial) model on x,
precomputed (:mod:`rllib_k15.algorithm.o1_reference`). The paper samples its training
data once from π_ref and takes ρ against π_ref; here rollouts are online, so ρ is against
the iteration's sampling policy π_θi, while the reward keeps the fixed reference statistics.
ρ is sequence-level with the configured ``logprob_reduction``: ``sum`` is the literal ratio
of sequence probabilities (can overflow for long responses once θ moves), ``token_mean``
the length-normalised one (exp of the mean token log-ratio; the stable choice).

Notation as in :mod:`rllib_k15.core.losses.registry`.
"""

from __future__ import annotations

import numpy as np
import torch

from rllib_k15.core.losses.registry import (
    GroupedRows,
    LossInputs,
    LossParams,
    LossType,
    Metrics,
    register_loss,
    require_fields,
)
from rllib_k15.core.rewards import length_harmonizing_reward

__all__ = ["o1_pruner_loss", "o1_pruner_prepare"]


def o1_pruner_prepare(rows: GroupedRows, params: LossParams) -> tuple[np.ndarray, dict[str, float]]:
    """R_j = L̂_ref(x)/L(y_j) − 1 + λ(A(x, y_j) − Â_ref(x)) with the reference statistics."""
    if rows.ref_mean_length is None or rows.ref_accuracy is None:
        raise ValueError(
            "loss 'o1_pruner' needs reference statistics per problem: set "
            "`o1_pruner_reference_stats` (see rllib_k15.algorithm.o1_reference)"
        )
    reward = length_harmonizing_reward(
        rows.lengths, rows.correct, rows.ref_mean_length, rows.ref_accuracy, params.o1_lambda
    )
    length_ratio = np.asarray(rows.ref_mean_length) / np.maximum(np.asarray(rows.lengths), 1)
    return reward, {
        "o1_reward_mean": float(reward.mean()),
        "o1_length_ratio_mean": float(length_ratio.mean()),
    }


@register_loss(LossType.O1_PRUNER, prepare=o1_pruner_prepare)
def o1_pruner_loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, Metrics]:
    """L = −(1/B) Σ_j min(ρ_j R_j, clip(ρ_j, 1 − ε, 1 + ε) R_j), ρ_j = π_θ(y_j)/π_θi(y_j)."""
    require_fields(inputs, "o1_pruner", "advantages")
    reward = inputs.advantages.detach().to(inputs.logp.dtype)  # (B,)
    ratio = torch.exp(inputs.logp - inputs.ref_logp.detach())  # (B,)
    clipped = torch.clamp(ratio, 1.0 - params.clip_eps, 1.0 + params.clip_eps)
    loss = -torch.min(ratio * reward, clipped * reward).mean()
    clip_hit = ((ratio > 1 + params.clip_eps) & (reward > 0)) | (
        (ratio < 1 - params.clip_eps) & (reward < 0)
    )
    return loss, {
        "pg_loss": loss.detach(),
        "clip_frac": clip_hit.float().mean().detach(),
        "ratio_max": ratio.detach().max(),
    }
