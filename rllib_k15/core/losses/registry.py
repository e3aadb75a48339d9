"""The loss registry: one table from :class:`LossType` to a loss and its row preparation.

Each loss is a pure function ``fn(inputs: LossInputs, params: LossParams) -> (loss, metrics)``
registered under a :class:`LossType` together with its *row preparation*
``prepare(rows: GroupedRows, params) -> (advantages, metrics)``: numpy over the WHOLE
iteration batch (groups intact, before RLlib splits it into minibatches) giving each row its
scalar learning signal (OPMD: r − b; GRPO: group-normalised advantage; ReST: fit weight;
O1-Pruner: the length-harmonizing reward). The learner calls :func:`prepare_advantages`
once per iteration and :func:`compute_policy_loss` per micro-batch and never branches on
the loss name.

This module imports no loss: each algorithm's file (``opmd.py``, ``grpo.py``, ``rest.py``,
``o1_pruner.py``) imports it and registers itself; :mod:`rllib_k15.core.losses` imports them
all, so ``from rllib_k15.core.losses import compute_policy_loss`` sees every loss.

Notation: problem x, its k responses y_j sampled by the engine from π_θi (the weights at the
start of iteration i), token t of y_j, mask m_{j,t} = 1 where the token counts in the loss, B
rows in the micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

__all__ = [
    "GroupedRows",
    "LossAggregation",
    "LogprobReduction",
    "LossInputs",
    "LossParams",
    "LossType",
    "Metrics",
    "compute_policy_loss",
    "aggregate_tokens",
    "masked_row_mean",
    "micro_batch_share",
    "needs_initial_reference",
    "prepare_advantages",
    "register_loss",
    "registered_losses",
    "require_fields",
    "sequence_logprob",
]

Metrics = dict[str, torch.Tensor]


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

    ``advantages`` is what the loss's registered ``prepare`` computed over the whole batch
    (the learner's ``ADVANTAGES`` column); the losses never recompute it from rewards.

    The token-level fields are filled by the learner for every loss (the sequence losses
    ignore them); ``token_init_logp`` is None unless the loss needs the fixed initial model.
    """

    logp: torch.Tensor  # log π_θ(y|x), with gradient (reduced per `logprob_reduction`)
    ref_logp: torch.Tensor  # log π_θi(y|x) of the iteration's reference policy (no grad)
    advantages: torch.Tensor  # the loss's per-row signal from its `prepare` (OPMD: r − b)
    token_logp: torch.Tensor | None = None  # (B, T) log π_θ per token, with gradient
    token_ref_logp: torch.Tensor | None = None  # (B, T) log π_θi per token (no grad)
    token_init_logp: torch.Tensor | None = None  # (B, T) log π_init per token (no grad)
    token_mask: torch.Tensor | None = None  # (B, T) 1 where the token counts in the loss


class LossAggregation(str, Enum):
    """How a token-level loss v_{j,t} becomes one number (``aggregate_tokens``)."""

    SEQ_MEAN_TOKEN_MEAN = "seq_mean_token_mean"  # (1/B) Σ_j (1/|y_j|) Σ_t m v  (GRPO paper)
    TOKEN_MEAN = "token_mean"  # Σ_{j,t} m v / Σ_{j,t} m  (DAPO: every token weighs the same)
    SEQ_MEAN_TOKEN_SUM = "seq_mean_token_sum"  # (1/B) Σ_j Σ_t m v  (sequence sum, no length norm)


@dataclass(frozen=True)
class LossParams:
    tau: float = 0.1  # OPMD: τ of the squared log-ratio regulariser
    clip_eps: float = 0.2  # GRPO / O1-Pruner: ratio clipped to [1 − ε, 1 + ε]
    kl_beta: float = 0.0  # GRPO: β of the k3 KL to the fixed initial model (0 = none)
    rest_top_k: int = 1  # ReST: correct responses fitted per problem (0 = all correct)
    o1_lambda: float = 2.0  # O1-Pruner: λ weighting accuracy against length
    aggregation: str = LossAggregation.SEQ_MEAN_TOKEN_MEAN.value  # GRPO: token -> batch


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


def register_loss(
    name: LossType | str,
    *,
    prepare: PrepareFn,
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


def registered_losses() -> list[str]:
    """The names of the registered losses, in registration order."""
    return [key.value for key in _LOSSES]


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


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_j (Σ_t m_{j,t} v_{j,t}) / max(1, Σ_t m_{j,t}) for (B, T) values and mask."""
    mask = mask.to(values.dtype)
    per_row = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
    return per_row.mean()


def aggregate_tokens(
    values: torch.Tensor, mask: torch.Tensor, mode: LossAggregation | str
) -> torch.Tensor:
    """One number from (B, T) per-token ``values`` over the ``mask``ed tokens:

        seq_mean_token_mean:  (1/B) Σ_j (Σ_t m_{j,t} v_{j,t}) / max(1, Σ_t m_{j,t})
        token_mean:           Σ_{j,t} m_{j,t} v_{j,t} / max(1, Σ_{j,t} m_{j,t})
        seq_mean_token_sum:   (1/B) Σ_j Σ_t m_{j,t} v_{j,t}

    Over a micro-batch; :func:`micro_batch_share` weighs micro-batches so that their sum is
    the same expression over the whole minibatch.
    """
    mode = LossAggregation(mode)
    if mode is LossAggregation.SEQ_MEAN_TOKEN_MEAN:
        return masked_row_mean(values, mask)
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    if mode is LossAggregation.TOKEN_MEAN:
        return total / mask.sum().clamp(min=1.0)
    return total / values.shape[0]


def micro_batch_share(
    mode: LossAggregation | str,
    micro_rows: int,
    minibatch_rows: int,
    micro_tokens: float,
    minibatch_tokens: float,
) -> float:
    """Weight of one micro-batch's aggregated loss in its minibatch's loss: its share of
    the rows for the row means, its share of the loss tokens for ``token_mean`` (then
    Σ_micro share · loss_micro = Σ_{j,t} m v / Σ_{j,t} m over the minibatch, exactly)."""
    if LossAggregation(mode) is LossAggregation.TOKEN_MEAN:
        return micro_tokens / max(minibatch_tokens, 1.0)
    return micro_rows / minibatch_rows


def require_fields(inputs: LossInputs, loss: str, *names: str) -> None:
    """Raise a clear error naming the optional ``LossInputs`` fields a loss needs but lacks."""
    missing = [n for n in names if getattr(inputs, n) is None]
    if missing:
        raise ValueError(f"loss {loss!r} needs LossInputs fields {missing}")
