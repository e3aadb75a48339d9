"""Online policy mirror descent, the Kimi k1.5 policy update.

OPMD (Kimi k1.5 eq. 3). For a problem x with k responses sampled from the iteration's
reference policy π_θi, rewards r_j and baseline b ≈ τ log Z (mean reward by default):

    g = (1/k) Σ_j [ ∇ log π_θ(y_j|x) · (r_j − b) − (τ/2) ∇ (log π_θ(y_j|x) − log π_θi(y_j|x))² ]

which is −1/(2τ) times the gradient of the surrogate
``mean_j (r_j − τ log Z − τ log π_θ/π_θi)²`` when τ log Z is replaced by b. We minimise

    L(θ) = mean_j [ −(r_j − b) · log π_θ(y_j|x) + (τ/2) (log π_θ(y_j|x) − log π_θi(y_j|x))² ]

whose gradient is exactly −g. There is no importance ratio: the data is off-policy by
design (sampled from π_θi) and the squared log-ratio keeps π_θ close to π_θi instead.

The per-row signal r_j − b is computed once per iteration by :func:`opmd_prepare` (numpy, the
whole batch, groups intact); :func:`opmd_loss` takes it from ``LossInputs.advantages``.
"""

from __future__ import annotations

import numpy as np
import torch

from rllib_k15.core.losses.registry import (
    GroupedRows,
    LossInputs,
    LossParams,
    LossType,
    register_loss,
)

__all__ = ["opmd_loss", "opmd_prepare", "opmd_surrogate"]


def opmd_prepare(rows: GroupedRows, params: LossParams) -> tuple[np.ndarray, dict[str, float]]:
    """A_j = r_j − b: the shaped reward minus its problem's baseline b (≈ τ log Z)."""
    return np.asarray(rows.rewards, np.float64) - np.asarray(rows.baselines, np.float64), {}


@register_loss(LossType.OPMD, prepare=opmd_prepare)
def opmd_loss(
    inputs: LossInputs, params: LossParams
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = mean_j [ −(r_j − b)·log π_θ(y_j) + (τ/2)(log π_θ(y_j) − log π_θi(y_j))² ] (eq. 3)."""
    advantages = inputs.advantages.detach().to(inputs.logp.dtype)  # r_j − b from opmd_prepare
    log_ratio = inputs.logp - inputs.ref_logp.detach()
    pg_loss = -(advantages * inputs.logp).mean()
    reg_loss = 0.5 * params.tau * log_ratio.pow(2).mean()
    loss = pg_loss + reg_loss
    metrics = {
        "pg_loss": pg_loss.detach(),
        "reg_loss": reg_loss.detach(),
        # KL(π_θi ‖ π_θ) estimated on samples from π_θi: E[log π_θi − log π_θ].
        "kl_ref": (-log_ratio).mean().detach(),
        "log_ratio_abs_max": log_ratio.abs().max().detach(),
    }
    return loss, metrics


def opmd_surrogate(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    tau_log_z: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """The report's surrogate mean_j (r_j − τ log Z − τ log π_θ(y_j)/π_θi(y_j))² (reference form).

    Its gradient is −2τ times the eq.-3 gradient; kept for tests and documentation.
    """
    return (rewards - tau_log_z - tau * (logp - ref_logp)).pow(2).mean()
