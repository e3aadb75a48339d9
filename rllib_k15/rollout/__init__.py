"""Rollout helpers that are independent of the inference engine.

- :mod:`~rllib_k15.rollout.partial`: partial rollouts across iterations (token budgets,
  per-token iteration stamps, loss masks, the bounded store);
- :mod:`~rllib_k15.rollout.repetition`: detecting responses stuck in a loop.

Pure Python/numpy; importable without Ray, vLLM or torch.
"""

from rllib_k15.rollout.partial import (
    PartialRollout,
    PartialRolloutStore,
    SegmentStatus,
    extend,
    loss_mask,
    remaining_budget,
    segment_status,
)
from rllib_k15.rollout.repetition import (
    RepetitionConfig,
    RepetitionDetector,
    RepetitionResult,
    RepetitionRule,
    detect_repetition,
)

__all__ = [
    "PartialRollout",
    "PartialRolloutStore",
    "RepetitionConfig",
    "RepetitionDetector",
    "RepetitionResult",
    "RepetitionRule",
    "SegmentStatus",
    "detect_repetition",
    "extend",
    "loss_mask",
    "remaining_budget",
    "segment_status",
]
