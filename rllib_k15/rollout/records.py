"""What a rollout produces: one finished, graded response per record (pure data).

The EnvRunner returns :class:`Rollout` records; the driver's group store
(:mod:`rllib_k15.rollout.groups`) holds them until a group is complete, and
:func:`rllib_k15.algorithm.batching.build_train_batch` turns them into the learner's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Rollout"]


@dataclass
class Rollout:
    """One finished response to one problem, as the EnvRunner returns it."""

    problem_index: int
    problem_id: str
    prompt_ids: list[int]
    response_ids: list[int]
    sample_logp: list[float]  # engine log-prob per response token
    finish_reason: str  # "stop" | "length" | "repeat"
    reward: float  # verifier reward plus penalties (e.g. repetition), before length shaping
    correct: bool
    reason: str  # the verifier's reason ("correct", "wrong", "truncated", "timeout", …)
    difficulty: float = 0.0
    # training iteration that generated each response token (partial rollouts span several)
    token_iterations: list[int] = field(default_factory=list)
    text: str = ""
    slot: int = 0  # which of the problem's k samples (partial rollouts keep groups by slot)
    num_segments: int = 1  # generation calls (iterations) that produced the response
    # image problems: the VLM processor's image tensors by name (numpy), else None
    image_inputs: dict[str, Any] | None = None
