"""Policy losses over sequence log-probabilities, one registry, no special cases.

Each loss is a pure function ``fn(inputs: LossInputs, params: LossParams) -> (loss, metrics)``
registered under a :class:`LossType` together with its *row preparation*
``prepare(rows: GroupedRows, params) -> (advantages, metrics)``: numpy over the WHOLE
iteration batch (groups intact, before RLlib splits it into minibatches) giving each row its
scalar learning signal (OPMD: r − b; GRPO: group-normalised advantage; ReST: fit weight;
O1-Pruner: the length-harmonizing reward). The learner calls :func:`prepare_advantages`
once per iteration and :func:`compute_policy_loss` per micro-batch and never branches on
the loss name. OPMD lives here; the baselines (GRPO, ReST, O1-Pruner) in
:mod:`rllib_k15.core.baseline_losses`, registered on import of this module.

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

import numpy as np
import torch

__all__ = [
    "GroupedRows",
    "LogprobReduction",
    "LossInputs",
    "LossParams",
    "LossType",
    "baseline_advantages",
    "compute_policy_loss",
    "needs_initial_reference",
    "prepare_advantages",
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
    OPMD = "opmd"  # Kimi k1.5 online policy mirror descent (eq. 3)
    GRPO = "grpo"  # DeepSeekMath group-relative PPO-clip + k3 KL to the initial model
    REST = "rest"  # ReST: fit the best correct response(s), no negative gradient
    O1_PRUNER = "o1_pruner"  # length-harmonizing reward + PPO-clip (O1-Pruner)


@dataclass(frozen=True)
class LossInputs:
    """Quantities of one (micro-)batch. Tensors are (B,) per sequence unless noted (B, T).

    The token-level fields are filled by the learner for every loss (the sequence losses
    ignore them); ``token_init_logp`` is None unless the loss needs the fixed initial model.
    """

    logp: torch.Tensor  # log π_θ(y|x), with gradient (reduced per `logprob_reduction`)
    ref_logp: torch.Tensor  # log π_θi(y|x) of the iteration's reference policy (no grad)
    rewards: torch.Tensor  # r_j including any shaped length reward
    baselines: torch.Tensor  # per-problem baseline b (≈ τ log Z), broadcast to rows
    advantages: torch.Tensor | None = None  # the loss's own per-row signal (see prepare)
    token_logp: torch.Tensor | None = None  # (B, T) log π_θ per token, with gradient
    token_ref_logp: torch.Tensor | None = None  # (B, T) log π_θi per token (no grad)
    token_init_logp: torch.Tensor | None = None  # (B, T) log π_init per token (no grad)
    token_mask: torch.Tensor | None = None  # (B, T) 1 where the token counts in the loss


@dataclass(frozen=True)
class LossParams:
    tau: float = 0.1  # OPMD: τ of the squared log-ratio regulariser
    clip_eps: float = 0.2  # GRPO / O1-Pruner: ratio clipped to [1 − ε, 1 + ε]
    kl_beta: float = 0.0  # GRPO: β of the k3 KL to the fixed initial model (0 = none)
    rest_top_k: int = 1  # ReST: correct responses fitted per problem (0 = all correct)
    o1_lambda: float = 2.0  # O1-Pruner: λ weighting accuracy against length


@dataclass(frozen=True)
class GroupedRows:
    """Numpy view of the whole iteration batch for the row preparation. All arrays (B,)."""

    rewards: np.ndarray  # shaped reward (task + weighted length reward + penalties)
    baselines: np.ndarray  # per-problem baseline b
    group_ids: np.ndarray  # problem index: rows with equal ids are the k samples of x
    lengths: np.ndarray  # response length L(y) in tokens
    correct: np.ndarray  # verifier verdict A(x, y) ∈ {0, 1}
    ref_mean_length: np.ndarray | None = None  # O1-Pruner: L̂_ref(x) of each row's problem
    ref_accuracy: np.ndarray | None = None  # O1-Pruner: Â_ref(x) of each row's problem


LossFn = Callable[[LossInputs, LossParams], tuple[torch.Tensor, dict[str, torch.Tensor]]]
PrepareFn = Callable[[GroupedRows, LossParams], tuple[np.ndarray, dict[str, float]]]


@dataclass(frozen=True)
class _LossSpec:
    fn: LossFn
    prepare: PrepareFn
    kl_to_initial: bool  # uses the fixed initial model when params.kl_beta > 0


_LOSSES: dict[LossType, _LossSpec] = {}


def baseline_advantages(rows: GroupedRows, params: LossParams) -> tuple[np.ndarray, dict]:
    """A_j = r_j − b_j: the per-problem-baseline advantage (OPMD's signal)."""
    return np.asarray(rows.rewards, np.float64) - np.asarray(rows.baselines, np.float64), {}


def register_loss(
    name: LossType | str,
    *,
    prepare: PrepareFn = baseline_advantages,
    kl_to_initial: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss (and its row preparation) to the registry, once per name."""
    key = LossType(name)

    def wrap(fn: LossFn) -> LossFn:
        if key in _LOSSES:
            raise ValueError(f"loss {key.value!r} is already registered ({_LOSSES[key].fn})")
        _LOSSES[key] = _LossSpec(fn, prepare, kl_to_initial)
        return fn

    return wrap


def _spec(name: LossType | str) -> _LossSpec:
    try:
        return _LOSSES[LossType(name)]
    except (KeyError, ValueError):
        known = ", ".join(t.value for t in _LOSSES)
        raise ValueError(f"unknown loss {name!r}; registered: {known}") from None


def compute_policy_loss(
    name: LossType | str, inputs: LossInputs, params: LossParams
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dispatch to a registered loss."""
    return _spec(name).fn(inputs, params)


def prepare_advantages(
    name: LossType | str, rows: GroupedRows, params: LossParams
) -> tuple[np.ndarray, dict[str, float]]:
    """The registered loss's per-row signal over the whole iteration batch, as float32 (B,)."""
    advantages, metrics = _spec(name).prepare(rows, params)
    return np.asarray(advantages, dtype=np.float32), metrics


def needs_initial_reference(name: LossType | str, params: LossParams) -> bool:
    """Whether the learner must score rows with a frozen copy of the initial model."""
    return _spec(name).kl_to_initial and params.kl_beta > 0


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


# The baselines register themselves on import; imported last, after the registry exists.
from rllib_k15.core import baseline_losses as _baseline_losses  # noqa: E402, F401
