"""ReST: fit the best correct sampled responses, no negative gradient.

A comparison algorithm of the Kimi k1.5 report; select it with
``K15Config().training(loss="rest")``.

**ReST** (Gulcehre et al. 2023, as the report's Figure 10 uses it): fit the best sampled
response(s) of each problem, never push any response down::

    w_j = n / s for the top-k correct responses of each problem (s selected of n rows), else 0
    L   = (1/B) Σ_j w_j · (−log π_θ(y_j | x))                     (rewards.rest_fit_weights)

i.e. supervised fine-tuning on the reward-filtered samples of the iteration — a policy
gradient whose advantage is ≥ 0 everywhere (no negative gradient).

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
from rllib_k15.core.rewards import rest_fit_weights

__all__ = ["rest_loss", "rest_prepare"]


def rest_prepare(rows: GroupedRows, params: LossParams) -> tuple[np.ndarray, dict[str, float]]:
    """w_j = n/s for the top-k correct responses per problem, else 0."""
    weights = rest_fit_weights(rows.rewards, rows.correct, rows.group_ids, params.rest_top_k)
    fitted = weights > 0
    groups = np.unique(rows.group_ids)
    return weights, {
        "rest_fitted_frac": float(fitted.mean()),
        "rest_problems_fitted_frac": float(
            np.mean([fitted[rows.group_ids == g].any() for g in groups])
        ),
    }


@register_loss(LossType.REST, prepare=rest_prepare)
def rest_loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, Metrics]:
    """L = (1/B) Σ_j w_j · (−log π_θ(y_j|x)): NLL of the selected responses only."""
    require_fields(inputs, "rest", "advantages")
    weights = inputs.advantages.detach().to(inputs.logp.dtype)  # (B,)
    nll = -inputs.logp  # (B,)
    loss = (weights * nll).mean()
    total = weights.sum()
    fitted_nll = (weights * nll).sum() / total if total > 0 else torch.zeros(())
    return loss, {"nll_fitted": fitted_nll.detach(), "fitted_frac": (weights > 0).float().mean()}
