"""Partial rollouts: responses generated across several iterations (report §2.6).

Each iteration gives every trajectory a token budget (``per_iteration_budget``). A
response that uses it up without finishing is not thrown away: it is kept as a
:class:`PartialRollout` in a :class:`PartialRolloutStore` and continued in a later
iteration, from where it stopped, under the newer weights. Every token records the
training iteration that generated it, so the learner can exclude the segments generated
by earlier policies from the loss (:func:`loss_mask`, config switch ``include_old_segments``).

Budget rule for one segment (:func:`remaining_budget`, :func:`segment_status`):
the segment may generate ``min(per_iteration_budget, max_response_tokens − generated)``
tokens. When it stops:

- it emitted a stop token / stop string → ``FINISHED`` (verify and train on it);
- the response reached ``max_response_tokens`` → ``TRUNCATED`` (a real length limit; the
  env reports ``truncated``);
- otherwise it used up this iteration's budget → ``UNFINISHED`` (store it, continue later).

Everything here is pure Python (no torch needed; :func:`loss_mask` also accepts tensors).
Loop detection inside partial rollouts lives in :mod:`rllib_k15.rollout.repetition`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from itertools import pairwise
from typing import Any

import numpy as np

__all__ = [
    "PartialRollout",
    "PartialRolloutStore",
    "SegmentStatus",
    "extend",
    "loss_mask",
    "remaining_budget",
    "segment_status",
]

_STATE_VERSION = 1


@dataclass(frozen=True)
class PartialRollout:
    """An unfinished response and where each of its tokens came from.

    Sequence fields are stored as tuples (lists, numpy arrays are converted on creation).

    ``response_ids``, ``logprobs`` and ``token_iterations`` are parallel: entry t is the
    t-th generated token, its sampling log-prob under the engine that produced it, and the
    training iteration whose weights produced it. ``num_segments`` counts the generation
    calls that contributed tokens (1 after the first segment).
    """

    problem_index: int
    slot: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    token_iterations: tuple[int, ...] = ()
    num_segments: int = 0

    def __post_init__(self) -> None:
        for name, kind in [
            ("prompt_ids", int),
            ("response_ids", int),
            ("logprobs", float),
            ("token_iterations", int),
        ]:
            object.__setattr__(self, name, tuple(kind(v) for v in getattr(self, name)))
        n = len(self.response_ids)
        if len(self.logprobs) != n or len(self.token_iterations) != n:
            raise ValueError(
                f"PartialRollout(problem {self.problem_index}, slot {self.slot}): "
                f"{n} response ids but {len(self.logprobs)} log-probs and "
                f"{len(self.token_iterations)} token iterations"
            )
        if self.problem_index < 0 or self.slot < 0 or self.num_segments < 0:
            raise ValueError(
                f"problem_index ({self.problem_index}), slot ({self.slot}) and "
                f"num_segments ({self.num_segments}) must be >= 0"
            )
        if any(b < a for a, b in pairwise(self.token_iterations)):
            raise ValueError(
                f"PartialRollout(problem {self.problem_index}, slot {self.slot}): "
                "token_iterations must be non-decreasing"
            )

    @property
    def key(self) -> tuple[int, int]:
        """(problem_index, slot): the store's key."""
        return (self.problem_index, self.slot)

    @property
    def num_generated(self) -> int:
        return len(self.response_ids)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/msgpack types (lists of int/float)."""
        return {
            "problem_index": self.problem_index,
            "slot": self.slot,
            "prompt_ids": list(self.prompt_ids),
            "response_ids": list(self.response_ids),
            "logprobs": list(self.logprobs),
            "token_iterations": list(self.token_iterations),
            "num_segments": self.num_segments,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartialRollout:
        return cls(
            problem_index=int(data["problem_index"]),
            slot=int(data["slot"]),
            prompt_ids=data["prompt_ids"],
            response_ids=data["response_ids"],
            logprobs=data["logprobs"],
            token_iterations=data["token_iterations"],
            num_segments=int(data["num_segments"]),
        )


def extend(
    partial: PartialRollout,
    new_ids: Sequence[int],
    new_logprobs: Sequence[float],
    iteration: int,
) -> PartialRollout:
    """A copy of ``partial`` with one more segment appended; ``partial`` is unchanged.

    Every new token is stamped with ``iteration``; ``num_segments`` grows by 1 (also for
    an empty segment, which is still a generation call). ``iteration`` may not be older
    than the last stamped token.
    """
    if len(new_ids) != len(new_logprobs):
        raise ValueError(f"{len(new_ids)} new ids but {len(new_logprobs)} new log-probs")
    if partial.token_iterations and iteration < partial.token_iterations[-1]:
        raise ValueError(
            f"iteration ({iteration}) is older than the last segment's "
            f"({partial.token_iterations[-1]})"
        )
    return replace(
        partial,
        response_ids=partial.response_ids + tuple(int(t) for t in new_ids),
        logprobs=partial.logprobs + tuple(float(x) for x in new_logprobs),
        token_iterations=partial.token_iterations + (int(iteration),) * len(new_ids),
        num_segments=partial.num_segments + 1,
    )


def loss_mask(token_iterations: Any, current_iteration: int, include_old_segments: bool) -> Any:
    """1 for tokens that enter the loss at ``current_iteration``, 0 for the others.

    Rule: a token generated at ``current_iteration`` always counts; a token from an earlier
    iteration counts only when ``include_old_segments`` is True (its log-prob came from an
    older policy than π_θi). A token stamped with a later iteration is a bug → ValueError.

    Accepts a sequence of ints (returns ``list[int]``), a numpy array or a torch tensor of
    any shape (returns the same kind and shape; a torch result is ``torch.long``). For
    padded (B, T) batches multiply the result by the response mask: padding positions
    are not recognised here.
    """
    if type(token_iterations).__module__.split(".")[0] == "torch":
        its = token_iterations
        if its.numel() and int(its.max()) > current_iteration:
            raise ValueError(
                f"token from iteration {int(its.max())} > current iteration {current_iteration}"
            )
        keep = its <= current_iteration if include_old_segments else its == current_iteration
        return keep.long()
    its = np.asarray(token_iterations, dtype=np.int64)
    if its.size and int(its.max()) > current_iteration:
        raise ValueError(
            f"token from iteration {int(its.max())} > current iteration {current_iteration}"
        )
    keep = its <= current_iteration if include_old_segments else its == current_iteration
    if isinstance(token_iterations, np.ndarray):
        return keep.astype(np.int64)
    return keep.astype(np.int64).tolist()


def remaining_budget(
    partial: PartialRollout | None, max_response_tokens: int, per_iteration_budget: int
) -> int:
    """Tokens the next segment may generate: ``min(per_iteration_budget,
    max_response_tokens − generated so far)``, never below 0. ``partial=None`` is a fresh
    response (nothing generated yet)."""
    if max_response_tokens < 1 or per_iteration_budget < 1:
        raise ValueError(
            f"max_response_tokens ({max_response_tokens}) and per_iteration_budget "
            f"({per_iteration_budget}) must be >= 1"
        )
    generated = 0 if partial is None else partial.num_generated
    return max(0, min(per_iteration_budget, max_response_tokens - generated))


class SegmentStatus(str, Enum):  # noqa: UP042 (StrEnum needs 3.11; we support 3.10)
    """How a generation segment ended."""

    FINISHED = "finished"
    """A stop token/string ended the response: verify it and train on it."""
    UNFINISHED = "unfinished"
    """It used up this iteration's budget below ``max_response_tokens``: store, continue."""
    TRUNCATED = "truncated"
    """The whole response reached ``max_response_tokens`` without stopping."""


def segment_status(
    num_generated_total: int,
    num_generated_segment: int,
    stopped: bool,
    max_response_tokens: int,
    per_iteration_budget: int,
) -> SegmentStatus:
    """Classify a segment that just ended.

    Rule, in this order: ``stopped`` → FINISHED (even exactly at a limit);
    ``num_generated_total >= max_response_tokens`` → TRUNCATED;
    ``num_generated_segment >= per_iteration_budget`` → UNFINISHED. A segment that
    neither stopped nor reached a limit is inconsistent → ValueError.
    """
    if stopped:
        return SegmentStatus.FINISHED
    if num_generated_total >= max_response_tokens:
        return SegmentStatus.TRUNCATED
    if num_generated_segment >= per_iteration_budget:
        return SegmentStatus.UNFINISHED
    raise ValueError(
        f"segment ended without a stop after {num_generated_segment} tokens "
        f"(total {num_generated_total}), below per_iteration_budget ({per_iteration_budget}) "
        f"and max_response_tokens ({max_response_tokens})"
    )


class PartialRolloutStore:
    """At most ``max_items`` unfinished responses, keyed by (problem_index, slot).

    Order and eviction: FIFO by insertion. :meth:`put` appends; when the store is full it
    evicts the item that has been waiting longest since it was (re)inserted and returns it,
    so the caller can count it as dropped. Continuing a response pops it and, if still
    unfinished, puts it back at the end, so the FIFO order is "least recently extended
    first". :meth:`pop_for_continuation` hands items out in the same order, so waiting
    items are continued before they can be evicted whenever the engine has room.
    """

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"`max_items` ({max_items}) must be >= 1")
        self.max_items = int(max_items)
        self._items: OrderedDict[tuple[int, int], PartialRollout] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[PartialRollout]:
        """Items oldest first, without removing them."""
        return iter(list(self._items.values()))

    def put(self, partial: PartialRollout) -> list[PartialRollout]:
        """Store ``partial``; return the items evicted to make room (oldest first).

        A key already in the store is an error: a (problem, slot) has one live response.
        """
        if partial.key in self._items:
            raise ValueError(f"partial rollout {partial.key} (problem, slot) is already stored")
        evicted = []
        while len(self._items) >= self.max_items:
            evicted.append(self._items.popitem(last=False)[1])
        self._items[partial.key] = partial
        return evicted

    def pop(self, problem_index: int, slot: int) -> PartialRollout:
        """Remove and return the item for (problem_index, slot); KeyError if absent."""
        return self._items.pop((problem_index, slot))

    def pop_for_continuation(self, max_items: int | None = None) -> list[PartialRollout]:
        """Remove and return up to ``max_items`` items (all when None), oldest first."""
        n = len(self._items) if max_items is None else min(max_items, len(self._items))
        return [self._items.popitem(last=False)[1] for _ in range(n)]

    def get_state(self) -> dict[str, Any]:
        """Plain-typed state: the items oldest first. Round-trips through JSON/msgpack."""
        return {
            "version": _STATE_VERSION,
            "items": [p.to_dict() for p in self._items.values()],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the contents with ``state`` (from :meth:`get_state`), keeping the order.

        ``max_items`` stays this store's own; restoring more items than it allows raises
        instead of silently dropping trajectories.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"unsupported PartialRolloutStore state version {state.get('version')!r}"
            )
        items = [PartialRollout.from_dict(d) for d in state["items"]]
        if len(items) > self.max_items:
            raise ValueError(
                f"state holds {len(items)} partial rollouts but `max_items` is {self.max_items}; "
                "raise max_items to restore this checkpoint"
            )
        restored: OrderedDict[tuple[int, int], PartialRollout] = OrderedDict()
        for item in items:
            if item.key in restored:
                raise ValueError(f"state holds partial rollout {item.key} twice")
            restored[item.key] = item
        self._items = restored
