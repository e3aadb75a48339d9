"""What the learner prepares for the registered losses, kept out of learner.py.

Once per iteration, over the whole batch (before RLlib splits it into minibatches, so every
problem's group is intact), the learner

* scores every row with a frozen copy of the INITIAL policy when the loss keeps a KL to a
  fixed reference (GRPO with β > 0) — :func:`build_initial_module`;
* computes the loss's per-row signal (``ADVANTAGES``) with its registered ``prepare``
  from :func:`grouped_rows` (O1-Pruner also needs the reference statistics file,
  :func:`load_reference_stats`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rllib_k15.algorithm.columns import BASELINES, CORRECT, GROUP_IDS, RESPONSE_MASK, REWARDS
from rllib_k15.core.losses import GroupedRows, LossParams

__all__ = ["build_initial_module", "grouped_rows", "load_reference_stats", "loss_params"]


def loss_params(config: Any) -> LossParams:
    """The loss hyper-parameters of a K15Config."""
    return LossParams(
        tau=config.tau,
        clip_eps=config.clip_eps,
        kl_beta=config.grpo_kl_beta,
        rest_top_k=config.rest_top_k,
        o1_lambda=config.o1_pruner_lambda,
        aggregation=config.loss_aggregation,
    )


def load_reference_stats(config: Any):
    """The O1-Pruner reference statistics named by the config, checked against its env."""
    if not config.o1_pruner_reference_stats:
        return None
    from rllib_k15.algorithm.o1_reference import ReferenceStats

    stats = ReferenceStats.load(config.o1_pruner_reference_stats)
    env_id = config.env if isinstance(config.env, str) else getattr(config.env, "__name__", "")
    stats.check_env(env_id, dict(config.env_config or {}))
    return stats


def grouped_rows(columns: Any, reference_stats=None) -> GroupedRows:
    """Numpy view of one module's whole iteration batch for ``losses.prepare_advantages``."""
    group_ids = np.asarray(columns[GROUP_IDS]).astype(np.int64)
    ref_len = ref_acc = None
    if reference_stats is not None:
        ref_len, ref_acc = reference_stats.lookup(group_ids)
    return GroupedRows(
        rewards=np.asarray(columns[REWARDS], dtype=np.float64),
        baselines=np.asarray(columns[BASELINES], dtype=np.float64),
        group_ids=group_ids,
        lengths=np.asarray(columns[RESPONSE_MASK]).sum(-1),
        correct=np.asarray(columns[CORRECT]).astype(bool),
        ref_mean_length=ref_len,
        ref_accuracy=ref_acc,
    )


def build_initial_module(module: Any) -> Any:
    """A frozen, eval-mode copy of ``module`` rebuilt from its model config.

    Rebuilding (not deep-copying) loads the weights from ``model_config["model_path"]``: the
    start checkpoint, also after the learner has been restored from a later checkpoint.
    """
    frozen = type(module)(
        observation_space=module.observation_space,
        action_space=module.action_space,
        model_config=module.model_config,
    )
    frozen.eval()
    for param in frozen.parameters():
        param.requires_grad_(False)
    return frozen
