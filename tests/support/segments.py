"""Drive partial-rollout segments over iterations until every response finished."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rllib_k15.rollout.partial import PartialRollout
from rllib_k15.rollout.records import Rollout

Step = Callable[[list[int], dict[int, list[PartialRollout]], int], Sequence]


def continue_until_finished(
    step: Step, problems: Sequence[int], budget: int, max_iterations: int = 10
) -> list:
    """``step(todo, continuations, iteration)`` (``sample_segments`` or a pure equivalent)
    until no response is unfinished; the finished Rollouts in the order they finished.
    Each unfinished response must have used its whole per-iteration ``budget``."""
    finished: list[Rollout] = []
    continuations: dict[int, list[PartialRollout]] = {}
    todo = list(problems)
    for iteration in range(max_iterations):
        items = step(todo, continuations, iteration)
        finished += [r for r in items if isinstance(r, Rollout)]
        continuations = {}
        for p in items:
            if isinstance(p, PartialRollout):
                assert p.num_generated == budget * (iteration + 1)  # the whole budget used
                continuations.setdefault(p.problem_index, []).append(p)
        todo = list(continuations)
        if not todo:
            break
    return finished
