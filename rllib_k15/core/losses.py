"""Policy losses over sequence log-probabilities, one registry, no special cases.

Each loss is a pure function ``fn(inputs: LossInputs, params: LossParams) -> (loss, metrics)``
registered under a :class:`LossType`. The learner calls :func:`compute_policy_loss` and
never branches on the loss name.

OPMD (Kimi k1.5 eq. 3). For a problem x with k responses sampled from the iteration's
reference policy π_θi, rewards r_j and baseline b ≈ τ log Z (mean reward by default):

    g = (1/k) Σ_j [ ∇ log π_θ(y_j|x) · (r_j − b) − (τ/2) ∇ (log π_θ(y_j|x) − log π_θi(y_j|x))² ]

which is −1/(2τ) times the gradient of the surrogate
``mean_j (r_j − τ log Z − τ log π_θ/π_θi)²`` when τ log Z is replaced by b. We minimise

    L(θ) = mean_j [ −(r_j − b) · log π_θ(y_j|x) + (τ/2) (log π_θ(y_j|x) − log π_θi(y_j|x))² ]

whose gradient is exactly −g. There is no importance ratio: the data is off-policy by
design (sampled from π_θi) and the squared log-ratio keeps π_θ close to π_θi instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

__all__ = [
    "LogprobReduction",
    "LossInputs",
    "LossParams",
    "LossType",
    "compute_policy_loss",
    "opmd_loss",
    "opmd_surrogate",
    "register_loss",
    "sequence_logprob",
]


class LogprobReduction(str, Enum):
    """How token log-probs become the sequence log π(y|x) the losses use."""

    SUM = "sum"  # log π(y|x) = Σ_t log π(y_t|…): the report's sequence-level quantity
    TOKEN_MEAN = "token_mean"  # (1/|y|) Σ_t log π(y_t|…): length-normalised, smaller scale


def sequence_logprob(
    token_logp: torch.Tensor, mask: torch.Tensor, reduction: LogprobReduction | str
) -> torch.Tensor:
    """Reduce (B, T) token log-probs over the masked positions to (B,)."""
    mask = mask.to(token_logp.dtype)
    total = (token_logp * mask).sum(dim=-1)  # (B,)
    if LogprobReduction(reduction) is LogprobReduction.SUM:
        return total
    return total / mask.sum(dim=-1).clamp(min=1.0)


class LossType(str, Enum):
    OPMD = "opmd"


@dataclass(frozen=True)
class LossInputs:
    """Per-sequence quantities of one (micro-)batch. All tensors are (B,) unless noted."""

    logp: torch.Tensor  # log π_θ(y|x), with gradient
    ref_logp: torch.Tensor  # log π_θi(y|x) of the iteration's reference policy (no grad)
    rewards: torch.Tensor  # r_j including any shaped length reward
    baselines: torch.Tensor  # per-problem baseline b (≈ τ log Z), broadcast to rows


@dataclass(frozen=True)
class LossParams:
    tau: float = 0.1


LossFn = Callable[[LossInputs, LossParams], tuple[torch.Tensor, dict[str, torch.Tensor]]]
_LOSSES: dict[LossType, LossFn] = {}


def register_loss(name: LossType | str) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss to the registry; a name may be registered once."""
    key = LossType(name)

    def wrap(fn: LossFn) -> LossFn:
        if key in _LOSSES:
            raise ValueError(f"loss {key.value!r} is already registered ({_LOSSES[key]})")
        _LOSSES[key] = fn
        return fn

    return wrap


def compute_policy_loss(
    name: LossType | str, inputs: LossInputs, params: LossParams
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dispatch to a registered loss."""
    try:
        fn = _LOSSES[LossType(name)]
    except (KeyError, ValueError):
        known = ", ".join(t.value for t in _LOSSES)
        raise ValueError(f"unknown loss {name!r}; registered: {known}") from None
    return fn(inputs, params)


@register_loss(LossType.OPMD)
def opmd_loss(
    inputs: LossInputs, params: LossParams
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = mean_j [ −(r_j − b)·log π_θ(y_j) + (τ/2)(log π_θ(y_j) − log π_θi(y_j))² ] (eq. 3)."""
    advantages = (inputs.rewards - inputs.baselines).detach()
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
