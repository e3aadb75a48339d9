"""long2short: make a long-CoT model answer with shorter chains (Kimi k1.5 §2.4).

Four methods; three live here (the fourth, long2short RL, is a second RL phase with the
length penalty on and a smaller maximum rollout length, configured in the main trainer):

* model merging — :func:`merge_models` (θ_short + α(θ_long − θ_short); α = 0.5 averages);
* shortest rejection sampling — :func:`shortest_rejection_sampling` then :func:`train_sft`;
* DPO on shortest-vs-longer pairs — :func:`build_dpo_pairs`, :func:`dpo_loss`, :func:`train_dpo`.

CLI: ``k15 long2short {merge,shortest-rs,dpo-pairs}``, ``k15 sft``, ``k15 dpo``.
The pure parts (selection rules, losses, parquet I/O) import without Ray or vLLM; the
sampling commands need the rollout engine (:mod:`rllib_k15.engine`).
"""

from rllib_k15.core.losses.dpo import dpo_loss, sequence_logps
from rllib_k15.core.losses.sft import sft_loss
from rllib_k15.long2short.data import (
    read_pairs_parquet,
    read_parquet_info,
    read_sft_parquet,
    write_pairs_parquet,
    write_sft_parquet,
)
from rllib_k15.long2short.dpo_train import DPOTrainConfig, train_dpo
from rllib_k15.long2short.merge import MergeError, interpolate, merge_models
from rllib_k15.long2short.selection import (
    PairStats,
    PreferencePair,
    ProblemSamples,
    Sample,
    SelectionStats,
    SFTExample,
    build_dpo_pairs,
    dpo_pair_indices,
    select_shortest,
    shortest_correct_index,
    shortest_rejection_sampling,
)
from rllib_k15.long2short.sft import SFTConfig, train_sft

__all__ = [
    "DPOTrainConfig",
    "MergeError",
    "PairStats",
    "PreferencePair",
    "ProblemSamples",
    "SFTConfig",
    "SFTExample",
    "Sample",
    "SelectionStats",
    "build_dpo_pairs",
    "dpo_loss",
    "dpo_pair_indices",
    "interpolate",
    "merge_models",
    "read_pairs_parquet",
    "read_parquet_info",
    "read_sft_parquet",
    "select_shortest",
    "sequence_logps",
    "sft_loss",
    "shortest_correct_index",
    "shortest_rejection_sampling",
    "train_dpo",
    "train_sft",
    "write_pairs_parquet",
    "write_sft_parquet",
]
