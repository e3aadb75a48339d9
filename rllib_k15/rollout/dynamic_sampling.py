"""DAPO's dynamic sampling: keep only the groups that carry a learning signal.

A problem whose k responses all get the same task reward (all right, or all wrong) has
r_j − mean_g r = 0 for every j: OPMD's and GRPO's per-row signal is zero, so the group adds
compute and no gradient (the OPMD regulariser alone only pulls π_θ back to π_θi). With
``dynamic_sampling`` the driver drops such groups and samples more problems, at most
``dynamic_sampling_max_rounds`` extra times, until the iteration has
``problems_per_iteration`` informative groups; if it still has fewer, it trains on those.

"Same reward" is judged on the verifier's reward (with its penalties, before the length
reward): the length reward of a group of wrong answers differs between lengths, but pushing
lengths apart is not the signal the filter is about. Pure; no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

from rllib_k15.rollout.records import Rollout

__all__ = ["split_informative"]


def split_informative(rollouts: Sequence[Rollout]) -> tuple[list[Rollout], list[int]]:
    """(rollouts of the groups whose rewards differ, problem indices of the others), both
    in first-seen order."""
    rewards: dict[int, list[float]] = {}
    for r in rollouts:
        rewards.setdefault(r.problem_index, []).append(r.reward)
    flat = [p for p, rs in rewards.items() if max(rs) == min(rs)]
    dropped = set(flat)
    return [r for r in rollouts if r.problem_index not in dropped], flat
