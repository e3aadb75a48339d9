"""The driver's side of one partial-rollout iteration (called by ``K15MirrorDescent``).

    waiting groups' unfinished members ─┐
    min(problems_per_iteration, room)   ├─► EnvRunners: one segment per response ─► store.update
      new problems (not already waiting)┘                                       │
                                        groups whose k members all finished ◄───┘ → trained

The store (:class:`~rllib_k15.rollout.groups.GroupStore`) lives on the driver, next to the
problem buffer, so it is checkpointed with the algorithm and EnvRunners stay stateless
(any runner, local or remote, restarted or not, can continue any response). The cost is
shipping the unfinished token ids to the runners every iteration — a few bytes per token,
small next to generating them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rllib_k15 import metric_names
from rllib_k15.rollout.groups import GroupStore, segment_stats
from rllib_k15.rollout.partial import PartialRollout
from rllib_k15.rollout.records import Rollout

__all__ = ["PartialIteration", "draw_new_problems", "run_partial_iteration"]

# metric names (K15_RESULTS namespace), short aliases of rllib_k15.metric_names.PARTIAL_*
CONTINUED_FRAC = metric_names.PARTIAL_CONTINUED_FRAC
NEW_PROBLEMS = metric_names.PARTIAL_NEW_PROBLEMS
OLD_TOKENS_FRAC = metric_names.PARTIAL_OLD_TOKENS_FRAC
SEGMENTS_MEAN = metric_names.PARTIAL_SEGMENTS_MEAN
STORE_FULL = metric_names.PARTIAL_STORE_FULL
TOKENS_CARRIED = metric_names.PARTIAL_TOKENS_CARRIED
TOKENS_REUSED = metric_names.PARTIAL_TOKENS_REUSED
TRAINED_GROUPS = metric_names.PARTIAL_TRAINED_GROUPS
UNFINISHED_RESPONSES = metric_names.PARTIAL_UNFINISHED_RESPONSES
WAITING_FINISHED = metric_names.PARTIAL_WAITING_FINISHED
WAITING_GROUPS = metric_names.PARTIAL_WAITING_GROUPS


@dataclass
class PartialIteration:
    new_problems: list[int]  # in draw order
    trained: list[Rollout]  # members of the groups completed this iteration (k per group)
    runner_output: Any = None  # whatever ``sample`` returned beside the items
    metrics: dict[str, float] = field(default_factory=dict)


def draw_new_problems(buffer: Any, num: int, iteration: int, exclude: set[int]) -> list[int]:
    """Up to ``num`` problems from ``buffer.sample`` that are not in ``exclude`` (problems
    with a waiting group: one live group per problem keeps the group baseline well defined).

    Draws ``num + len(exclude)`` and drops the excluded ones, so the strategy's
    distribution is conditioned on "not waiting"; the dropped draws are marked as seen at
    ``iteration`` by the buffer (harmless: they are excluded in this iteration anyway).
    """
    if num <= 0:
        return []
    drawn = buffer.sample(num + len(exclude), iteration=iteration)
    return [p for p in drawn if p not in exclude][:num]


def run_partial_iteration(
    store: GroupStore,
    buffer: Any,
    sample: Callable[[list[int], dict[int, list[PartialRollout]]], tuple[list, Any]],
    *,
    problems_per_iteration: int,
    iteration: int,
) -> PartialIteration:
    """Sample one segment for every waiting and new response; return the completed groups.

    ``sample(problem_indices, continuations)`` runs the EnvRunners (``sample_segments``)
    and returns ``(items, runner_output)``, items being finished :class:`Rollout` and
    unfinished :class:`PartialRollout` records. ``buffer`` is the
    :class:`~rllib_k15.sampling.problem_buffer.ProblemBuffer`.
    """
    continuations = store.continuations()
    n_new = min(problems_per_iteration, store.room)
    new = draw_new_problems(buffer, n_new, iteration, set(continuations))
    items, runner_output = sample([*continuations, *new], continuations)
    finished = [r for r in items if isinstance(r, Rollout)]
    unfinished = [p for p in items if isinstance(p, PartialRollout)]
    if len(finished) + len(unfinished) != len(items):
        raise TypeError("EnvRunner returned items that are neither Rollout nor PartialRollout")
    completed = store.update(finished, unfinished)
    trained = [r for group in completed for r in group]
    seg = segment_stats(trained, iteration)
    metrics = {
        NEW_PROBLEMS: float(len(new)),
        STORE_FULL: float(n_new < problems_per_iteration),
        TRAINED_GROUPS: float(len(completed)),
        WAITING_GROUPS: float(len(store)),
        UNFINISHED_RESPONSES: float(store.num_unfinished()),
        WAITING_FINISHED: float(store.num_waiting_finished()),
        TOKENS_CARRIED: float(store.tokens_carried()),
        CONTINUED_FRAC: seg.continued_frac,
        SEGMENTS_MEAN: seg.segments_mean,
        TOKENS_REUSED: float(seg.tokens_reused),
        OLD_TOKENS_FRAC: seg.old_tokens_frac,
    }
    return PartialIteration(new, trained, runner_output, metrics)
