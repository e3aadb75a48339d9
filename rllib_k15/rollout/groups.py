"""The driver-side store of partial rollouts, kept as whole groups (report §2.6).

With partial rollouts on (``partial_rollout_max_tokens``), every response gets at most that
many new tokens per iteration. A response that used up its budget without finishing is an
*unfinished* :class:`~rllib_k15.rollout.partial.PartialRollout`; it is continued in a later
iteration from exactly where it stopped (prompt + tokens so far as the new prompt), under
the newer weights.

**Group-baseline design.** The k samples of one problem form a *group*: the OPMD baseline
τ·log Z ≈ mean reward is a mean over the group (docs/design.md §3). A group is trained only
when **all k** of its members have finished; members that finish early are scored at once and
wait here (as :class:`~rllib_k15.rollout.records.Rollout` records) for the others. So
the per-problem baseline is always over k finished samples, exactly as without partial
rollouts, and a long response never gets a baseline computed from its short siblings
alone. The price: short siblings wait one or more iterations (their tokens are from an
older policy by the time they are trained — see ``partial_rollout_train_old_segments``),
and a group costs store space until its longest member finishes. The alternatives —
training finished members at once against a baseline over the finished subset (biased
towards short, often wrong, answers) or over a running mean — were rejected for that bias.

**Bound.** At most ``max_groups`` groups wait here. The driver samples only
``min(problems_per_iteration, room)`` new problems per iteration, so while the store is full
no new problem is sampled and the iteration only continues waiting groups; nothing is ever
evicted (an evicted trajectory would be a problem silently lost). A group finishes within
S = ⌈max_response_tokens / budget⌉ iterations, so with ``problems_per_iteration`` new
groups per iteration at most ``problems_per_iteration × (S − 1)`` wait after an iteration;
the default bound ``problems_per_iteration × S`` therefore never holds new problems back.
A smaller bound trades engine throughput for memory and fresher tokens: with
``max_groups = problems_per_iteration`` the quick benchmark spent whole iterations on
continuations alone.

The store is plain Python and its state (:meth:`GroupStore.get_state`) is plain types, so
it rides in the algorithm checkpoint; after a restore the same unfinished trajectories are
continued and none is replayed or lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rllib_k15.rollout.partial import PartialRollout
from rllib_k15.rollout.records import Rollout

__all__ = ["GroupStore", "PendingGroup", "SegmentStats", "segment_stats"]

_STATE_VERSION = 1


@dataclass
class PendingGroup:
    """The k members of one problem's group while at least one is unfinished."""

    problem_index: int
    size: int
    unfinished: dict[int, PartialRollout] = field(default_factory=dict)  # slot -> partial
    finished: dict[int, Rollout] = field(default_factory=dict)  # slot -> scored, waiting

    @property
    def complete(self) -> bool:
        return not self.unfinished and len(self.finished) == self.size

    def members(self) -> list[Rollout]:
        """The finished members in slot order (only meaningful once ``complete``)."""
        return [self.finished[s] for s in sorted(self.finished)]


class GroupStore:
    """Groups of k responses per problem that wait for their unfinished members.

    Args:
        max_groups: bound on waiting groups (see the module docstring).
        group_size: k, the responses per problem (``samples_per_problem``).
    """

    def __init__(self, max_groups: int, group_size: int) -> None:
        if max_groups < 1 or group_size < 1:
            raise ValueError(
                f"`max_groups` ({max_groups}) and `group_size` ({group_size}) must be >= 1"
            )
        self.max_groups = int(max_groups)
        self.group_size = int(group_size)
        self._groups: dict[int, PendingGroup] = {}  # insertion order = oldest first

    def __len__(self) -> int:
        return len(self._groups)

    def __contains__(self, problem_index: object) -> bool:
        return problem_index in self._groups

    @property
    def room(self) -> int:
        """How many new groups may still wait here."""
        return self.max_groups - len(self._groups)

    def pending_problems(self) -> list[int]:
        """Problem indices of the waiting groups, oldest first."""
        return list(self._groups)

    def continuations(self) -> dict[int, list[PartialRollout]]:
        """Unfinished members per waiting problem (oldest group first, slot order).

        They stay in the store until :meth:`update` replaces them, so a failed iteration
        loses nothing."""
        return {p: [g.unfinished[s] for s in sorted(g.unfinished)] for p, g in self._groups.items()}

    def groups(self) -> list[PendingGroup]:
        return list(self._groups.values())

    def update(
        self, finished: Iterable[Rollout], unfinished: Iterable[PartialRollout]
    ) -> list[list[Rollout]]:
        """Record one iteration's segment outcomes; return (and remove) the groups that are
        complete now, oldest first, each as its k finished members in slot order.

        A result for a problem not in the store opens a new group: all k slots must be
        reported together. A result for a waiting group must be for one of its unfinished
        slots. Everything is checked before anything changes; a new group that would stay
        waiting while the store is full raises (the caller respects :attr:`room`).
        """
        finished, unfinished = list(finished), list(unfinished)
        by_problem: dict[int, dict[int, Rollout | PartialRollout]] = {}
        for item in [*finished, *unfinished]:
            slots = by_problem.setdefault(item.problem_index, {})
            if item.slot in slots:
                raise ValueError(f"two results for (problem, slot) {item.problem_index, item.slot}")
            slots[item.slot] = item
        new_waiting = 0
        for problem, slots in by_problem.items():
            group = self._groups.get(problem)
            if group is None:
                if sorted(slots) != list(range(self.group_size)):
                    raise ValueError(
                        f"new group of problem {problem} reported slots {sorted(slots)}; "
                        f"expected all {self.group_size} slots 0..{self.group_size - 1}"
                    )
                new_waiting += any(isinstance(v, PartialRollout) for v in slots.values())
            elif extra := sorted(set(slots) - set(group.unfinished)):
                raise ValueError(
                    f"problem {problem}: results for slots {extra} that are not unfinished "
                    "members of its waiting group"
                )
        if new_waiting > self.room:
            raise ValueError(
                f"{new_waiting} new unfinished groups but the store has room for {self.room} "
                f"(`max_groups` {self.max_groups})"
            )
        for problem, slots in by_problem.items():
            group = self._groups.setdefault(problem, PendingGroup(problem, self.group_size))
            for slot, item in slots.items():
                if isinstance(item, PartialRollout):
                    group.unfinished[slot] = item
                else:
                    group.unfinished.pop(slot, None)
                    group.finished[slot] = item
        done = [p for p, g in self._groups.items() if g.complete]
        return [self._groups.pop(p).members() for p in done]

    # ------------------------------------------------------------------ metrics
    def num_unfinished(self) -> int:
        return sum(len(g.unfinished) for g in self._groups.values())

    def num_waiting_finished(self) -> int:
        return sum(len(g.finished) for g in self._groups.values())

    def tokens_carried(self) -> int:
        """Generated tokens held by unfinished members (carried into the next iteration)."""
        return sum(p.num_generated for g in self._groups.values() for p in g.unfinished.values())

    # ------------------------------------------------------------------ checkpointing
    def get_state(self) -> dict[str, Any]:
        """Plain-typed state (JSON/msgpack safe), groups oldest first."""
        return {
            "version": _STATE_VERSION,
            "group_size": self.group_size,
            "groups": [
                {
                    "problem_index": g.problem_index,
                    "unfinished": [g.unfinished[s].to_dict() for s in sorted(g.unfinished)],
                    "finished": [dataclasses.asdict(g.finished[s]) for s in sorted(g.finished)],
                }
                for g in self._groups.values()
            ],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the contents with :meth:`get_state` output. ``max_groups`` stays this
        store's own; a state with more groups than it allows, or another group size, raises
        instead of dropping trajectories."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported GroupStore state version {state.get('version')!r}")
        if state["group_size"] != self.group_size:
            raise ValueError(
                f"state has groups of {state['group_size']} responses but `samples_per_problem` "
                f"is {self.group_size}; restore with the same samples_per_problem"
            )
        if len(state["groups"]) > self.max_groups:
            raise ValueError(
                f"state holds {len(state['groups'])} waiting groups but `max_groups` is "
                f"{self.max_groups}; raise partial_rollout_max_groups to restore it"
            )
        groups: dict[int, PendingGroup] = {}
        for raw in state["groups"]:
            group = PendingGroup(int(raw["problem_index"]), self.group_size)
            for d in raw["unfinished"]:
                partial = PartialRollout.from_dict(d)
                group.unfinished[partial.slot] = partial
            for d in raw["finished"]:
                rollout = Rollout(**d)
                group.finished[rollout.slot] = rollout
            members = len(group.unfinished) + len(group.finished)
            if not group.unfinished or members != self.group_size:
                raise ValueError(f"state group of problem {group.problem_index} is inconsistent")
            groups[group.problem_index] = group
        self._groups = groups


@dataclass(frozen=True)
class SegmentStats:
    """Partial-rollout statistics of the responses trained in one iteration."""

    continued_frac: float  # responses that took more than one segment
    segments_mean: float  # generation segments per response
    tokens_reused: int  # tokens generated in earlier iterations (kept, not regenerated)
    old_tokens_frac: float  # share of trained responses' tokens from earlier iterations


def segment_stats(trained: Sequence[Rollout], iteration: int) -> SegmentStats:
    """Statistics over ``trained`` (empty → zeros).

    continued_frac = #{r : segments(r) > 1} / N;  segments_mean = Σ segments(r) / N;
    tokens_reused  = #{tokens t of any r with iteration(t) < ``iteration``}.
    """
    if not trained:
        return SegmentStats(0.0, 0.0, 0, 0.0)
    n = len(trained)
    old = sum(sum(1 for it in r.token_iterations if it < iteration) for r in trained)
    total = sum(len(r.response_ids) for r in trained)
    return SegmentStats(
        continued_frac=sum(r.num_segments > 1 for r in trained) / n,
        segments_mean=sum(r.num_segments for r in trained) / n,
        tokens_reused=old,
        old_tokens_frac=old / total if total else 0.0,
    )
