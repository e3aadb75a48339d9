"""Policy losses, one file per algorithm, behind one registry.

- :mod:`~rllib_k15.core.losses.registry`: the loss types, inputs, parameters and the registry
  (imports no loss);
- :mod:`~rllib_k15.core.losses.opmd`: Kimi k1.5 online policy mirror descent (eq. 3);
- :mod:`~rllib_k15.core.losses.grpo`, :mod:`~rllib_k15.core.losses.rest`,
  :mod:`~rllib_k15.core.losses.o1_pruner`: the algorithms the report compares OPMD against;
- :mod:`~rllib_k15.core.losses.dpo`, :mod:`~rllib_k15.core.losses.sft`: the offline losses
  of the long2short toolbox (not in the RL registry: they train on pairs / fixed targets).

Importing this package registers every RL loss.
"""

from rllib_k15.core.losses.grpo import grpo_loss, grpo_prepare  # registers
from rllib_k15.core.losses.o1_pruner import o1_pruner_loss, o1_pruner_prepare  # registers
from rllib_k15.core.losses.opmd import opmd_loss, opmd_prepare, opmd_surrogate  # registers
from rllib_k15.core.losses.registry import (
    GroupedRows,
    LogprobReduction,
    LossAggregation,
    LossInputs,
    LossParams,
    LossType,
    aggregate_tokens,
    compute_policy_loss,
    masked_row_mean,
    micro_batch_share,
    needs_initial_reference,
    prepare_advantages,
    register_loss,
    registered_losses,
    sequence_logprob,
)
from rllib_k15.core.losses.rest import rest_loss, rest_prepare  # registers

__all__ = [
    "GroupedRows",
    "LogprobReduction",
    "LossAggregation",
    "LossInputs",
    "LossParams",
    "LossType",
    "aggregate_tokens",
    "compute_policy_loss",
    "grpo_loss",
    "grpo_prepare",
    "masked_row_mean",
    "micro_batch_share",
    "needs_initial_reference",
    "o1_pruner_loss",
    "o1_pruner_prepare",
    "opmd_loss",
    "opmd_prepare",
    "opmd_surrogate",
    "prepare_advantages",
    "register_loss",
    "registered_losses",
    "rest_loss",
    "rest_prepare",
    "sequence_logprob",
]
