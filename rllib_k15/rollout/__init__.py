"""Rollout helpers that are independent of the inference engine.

- :mod:`~rllib_k15.rollout.partial`: partial rollouts across iterations (token budgets,
  per-token iteration stamps, loss masks);
- :mod:`~rllib_k15.rollout.repetition`: detecting responses stuck in a loop;
- :mod:`~rllib_k15.rollout.records`: :class:`~rllib_k15.rollout.records.Rollout`, one graded
  response (what an EnvRunner returns);
- :mod:`~rllib_k15.rollout.segments`: one generation segment, from completion to state;
- :mod:`~rllib_k15.rollout.groups`: the driver's store of waiting groups (group baseline);
- :mod:`~rllib_k15.rollout.driver`: the driver's side of one partial-rollout iteration;
- :mod:`~rllib_k15.rollout.generate`: one rollout call (generate, cut loops, grade, build
  the records) as pure functions of an engine, an env and
  :class:`~rllib_k15.rollout.generate.RolloutSettings`; what the EnvRunner calls.

Nothing here imports ``rllib_k15.algorithm``: the algorithm layer builds on this package,
not the other way round. Pure Python/numpy; importable without Ray, vLLM or torch.
"""

from rllib_k15.rollout.partial import (
    PartialRollout,
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
