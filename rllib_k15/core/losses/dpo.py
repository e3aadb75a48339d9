"""Direct Preference Optimization loss (Rafailov et al. 2023), the pure math.

Kimi k1.5 §2.4 uses DPO as one of its long2short methods: the shortest correct response
is preferred over wrong longer responses and over correct responses that are much longer
(pairs built by :func:`rllib_k15.long2short.selection.dpo_pairs`). This module holds only
tensors-in, ``(loss, metrics)``-out functions; the trainer is in
:mod:`rllib_k15.long2short.dpo_train`.

Sequence log-probabilities are *sums* over the response tokens (no length normalisation),
as in the DPO paper and TRL's default ``loss_type="sigmoid"``. This matters here: the
pairs differ mainly in length, and the sum is what lets the loss see that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rllib_k15.metric_names import (
    DPO_LOGPS_CHOSEN,
    DPO_LOGPS_REJECTED,
    DPO_LOSS,
    DPO_REWARD_ACCURACY,
    DPO_REWARD_CHOSEN,
    DPO_REWARD_MARGIN,
    DPO_REWARD_REJECTED,
)

__all__ = [
    "DPO_LOSS",
    "DPO_REWARD_ACCURACY",
    "DPO_REWARD_CHOSEN",
    "DPO_REWARD_MARGIN",
    "DPO_REWARD_REJECTED",
    "DPO_LOGPS_CHOSEN",
    "DPO_LOGPS_REJECTED",
    "dpo_loss",
    "sequence_logps",
]


def sequence_logps(token_logps: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ_t m_t · log π(y_t | x, y_<t), one value per row.

    token_logps:   (B, T) per-token log-probs (e.g. from ``core.sequences.token_logprobs``).
    response_mask: (B, T) 1 on response tokens, 0 on prompt and padding.
    Returns (B,) float32.
    """
    if token_logps.shape != response_mask.shape:
        raise ValueError(
            f"token_logps {tuple(token_logps.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape"
        )
    return (token_logps.float() * response_mask.to(torch.float32)).sum(dim=-1)  # (B,)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO sigmoid loss, averaged over the pairs of the batch.

        L = −mean_pairs log σ( β [ (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)) ] )

    y_w is the chosen (preferred) response, y_l the rejected one; every argument is a (B,)
    tensor of sequence log-probs (sums over response tokens). The implicit rewards
    r = β (log π − log π_ref) are reported as metrics, as in the DPO paper:
    ``rewards_accuracy`` is the fraction of pairs with r(y_w) > r(y_l).
    Computed with ``logsigmoid`` for numerical stability. Identical to TRL's
    ``DPOTrainer`` with ``loss_type="sigmoid"`` and no label smoothing.
    """
    if beta <= 0:
        raise ValueError(f"`beta` ({beta}) must be > 0")
    shapes = {
        "policy_chosen_logps": tuple(policy_chosen_logps.shape),
        "policy_rejected_logps": tuple(policy_rejected_logps.shape),
        "ref_chosen_logps": tuple(ref_chosen_logps.shape),
        "ref_rejected_logps": tuple(ref_rejected_logps.shape),
    }
    if len(set(shapes.values())) != 1 or policy_chosen_logps.dim() != 1:
        raise ValueError(f"DPO inputs must all be (B,) tensors of one shape, got {shapes}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    loss = -F.logsigmoid(logits).mean()

    with torch.no_grad():
        chosen_rewards = beta * chosen_logratios.detach()
        rejected_rewards = beta * rejected_logratios.detach()
        metrics = {
            DPO_LOSS: loss.item(),
            DPO_REWARD_CHOSEN: chosen_rewards.mean().item(),
            DPO_REWARD_REJECTED: rejected_rewards.mean().item(),
            DPO_REWARD_MARGIN: (chosen_rewards - rejected_rewards).mean().item(),
            DPO_REWARD_ACCURACY: (chosen_rewards > rejected_rewards).float().mean().item(),
            DPO_LOGPS_CHOSEN: policy_chosen_logps.detach().mean().item(),
            DPO_LOGPS_REJECTED: policy_rejected_logps.detach().mean().item(),
        }
    return loss, metrics
