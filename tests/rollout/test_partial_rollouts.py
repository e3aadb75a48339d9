"""Partial rollouts: per-token iteration stamps, loss masks, budgets, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rllib_k15.rollout import (
    PartialRollout,
    SegmentStatus,
    extend,
    loss_mask,
    remaining_budget,
    segment_status,
)


def make(problem: int = 0, slot: int = 0) -> PartialRollout:
    return PartialRollout(problem, slot, prompt_ids=(101, 102))


# ------------------------------------------------------------------ extend


def test_extend_stamps_each_segment_with_its_iteration() -> None:
    first = extend(make(), [5, 6, 7], [-0.1, -0.2, -0.3], iteration=3)
    second = extend(first, [8, 9], [-0.4, -0.5], iteration=5)
    assert second.response_ids == (5, 6, 7, 8, 9)
    assert second.logprobs == (-0.1, -0.2, -0.3, -0.4, -0.5)
    assert second.token_iterations == (3, 3, 3, 5, 5)
    assert second.num_segments == 2 and second.num_generated == 5
    assert first.response_ids == (5, 6, 7) and first.num_segments == 1  # unchanged


@pytest.mark.parametrize(
    "ids,logprobs,iteration,message",
    [
        ([1, 2], [-0.1], 4, "2 new ids but 1 new log-probs"),
        ([1], [-0.1], 2, r"iteration \(2\) is older than the last segment's \(3\)"),
    ],
)
def test_extend_rejects_inconsistent_segments(ids, logprobs, iteration, message) -> None:
    partial = extend(make(), [5], [-0.1], iteration=3)
    with pytest.raises(ValueError, match=message):
        extend(partial, ids, logprobs, iteration)


def test_record_checks_parallel_fields() -> None:
    with pytest.raises(ValueError, match="2 response ids but 1 log-probs"):
        PartialRollout(0, 0, (1,), response_ids=(1, 2), logprobs=(0.0,), token_iterations=(0, 0))
    with pytest.raises(ValueError, match="non-decreasing"):
        PartialRollout(0, 0, (1,), (1, 2), (0.0, 0.0), token_iterations=(2, 1), num_segments=2)


def test_sequences_are_stored_as_plain_tuples() -> None:
    from_lists = PartialRollout(1, 0, [3, 4], np.array([5]), [np.float32(-0.5)], [np.int64(2)], 1)
    assert from_lists == PartialRollout(1, 0, (3, 4), (5,), (-0.5,), (2,), 1)
    assert type(from_lists.response_ids[0]) is int and type(from_lists.logprobs[0]) is float


def test_to_dict_round_trips_through_json() -> None:
    partial = extend(extend(make(4, 2), [5, 6], [-0.1, -1e-9], 0), [7], [-2.5], 1)
    assert PartialRollout.from_dict(json.loads(json.dumps(partial.to_dict()))) == partial


# ------------------------------------------------------------------ loss mask

MIXED = [3, 3, 4, 4, 4, 5, 5]  # three segments: iterations 3, 4 and the current 5


@pytest.mark.parametrize(
    "include_old,expected",
    [
        (False, [0, 0, 0, 0, 0, 1, 1]),  # only the current iteration's tokens
        (True, [1, 1, 1, 1, 1, 1, 1]),  # every segment enters the loss
    ],
)
def test_loss_mask_on_mixed_iterations(include_old: bool, expected: list[int]) -> None:
    assert loss_mask(MIXED, 5, include_old) == expected
    got_np = loss_mask(np.array(MIXED), 5, include_old)
    assert isinstance(got_np, np.ndarray) and got_np.tolist() == expected


def test_loss_mask_on_a_padded_torch_batch() -> None:
    its = torch.tensor([[3, 4, 5, 5], [5, 5, 5, 0]])  # (B, T); row 1 padded with 0
    response_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    mask = loss_mask(its, 5, include_old_segments=False)
    assert mask.dtype == torch.long and mask.shape == (2, 4)
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    old = loss_mask(its, 5, include_old_segments=True) * response_mask
    assert old.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_loss_mask_of_a_fresh_response_and_of_nothing() -> None:
    assert loss_mask([7, 7, 7], 7, include_old_segments=False) == [1, 1, 1]
    assert loss_mask([], 7, include_old_segments=False) == []


def test_loss_mask_rejects_tokens_from_the_future() -> None:
    with pytest.raises(ValueError, match="iteration 6 > current iteration 5"):
        loss_mask([5, 6], 5, True)
    with pytest.raises(ValueError, match="iteration 6 > current iteration 5"):
        loss_mask(torch.tensor([5, 6]), 5, True)


# ------------------------------------------------------------------ budget

PARTIAL_300 = extend(make(), list(range(300)), [0.0] * 300, 0)


@pytest.mark.parametrize(
    "partial,max_tokens,per_iteration,expected",
    [
        (None, 1000, 256, 256),  # fresh response: the per-iteration budget
        (None, 100, 256, 100),  # max below budget
        (PARTIAL_300, 1000, 256, 256),  # plenty left
        (PARTIAL_300, 400, 256, 100),  # only 100 left before max_response_tokens
        (PARTIAL_300, 300, 256, 0),  # at the max already
        (PARTIAL_300, 200, 256, 0),  # over (max lowered, e.g. long2short phase): never < 0
    ],
)
def test_remaining_budget(partial, max_tokens, per_iteration, expected) -> None:
    assert remaining_budget(partial, max_tokens, per_iteration) == expected


@pytest.mark.parametrize(
    "total,segment,stopped,expected",
    [
        (120, 120, True, SegmentStatus.FINISHED),  # EOS before any limit
        (256, 256, True, SegmentStatus.FINISHED),  # EOS exactly at the budget still counts
        (256, 256, False, SegmentStatus.UNFINISHED),  # hit the per-iteration budget
        (768, 256, False, SegmentStatus.UNFINISHED),  # third segment, still below the max
        (1000, 232, False, SegmentStatus.TRUNCATED),  # hit max_response_tokens
        (1000, 256, False, SegmentStatus.TRUNCATED),  # both limits at once: the max wins
    ],
)
def test_segment_status(total: int, segment: int, stopped: bool, expected) -> None:
    assert segment_status(total, segment, stopped, 1000, 256) is expected


def test_segment_status_rejects_an_unexplained_stop() -> None:
    with pytest.raises(ValueError, match="without a stop after 10 tokens"):
        segment_status(10, 10, False, 1000, 256)


def test_a_response_over_three_iterations() -> None:
    """1000-token response, 400-token budget: unfinished, unfinished, finished."""
    max_tokens, budget = 1000, 400
    partial = make(problem=3, slot=1)
    lengths, budgets = [400, 400, 150], [400, 400, 200]  # the last segment may use 200
    statuses = []
    for iteration, (n, expected_budget) in enumerate(zip(lengths, budgets, strict=True), start=10):
        allowed = remaining_budget(partial, max_tokens, budget)
        assert allowed == expected_budget
        partial = extend(partial, [iteration] * n, [-1.0] * n, iteration)
        statuses.append(segment_status(partial.num_generated, n, n < allowed, max_tokens, budget))
    assert statuses == [SegmentStatus.UNFINISHED, SegmentStatus.UNFINISHED, SegmentStatus.FINISHED]
    assert partial.num_segments == 3 and partial.num_generated == 950
    mask = loss_mask(partial.token_iterations, 12, include_old_segments=False)
    assert sum(mask) == 150 and mask[-150:] == [1] * 150


# ------------------------------------------------------------------ state


def test_partial_rollout_round_trips_through_json() -> None:
    """The driver's group store checkpoints partial rollouts as plain dicts."""
    partial = extend(extend(make(3, slot=1), [5, 6], [-0.25, -1 / 3], 2), [7], [-0.5], 3)
    restored = PartialRollout.from_dict(json.loads(json.dumps(partial.to_dict())))
    assert restored == partial
    assert restored.token_iterations == (2, 2, 3)
