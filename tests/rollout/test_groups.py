"""Partial rollouts as groups: the driver-side store, one segment's bookkeeping, the
driver's iteration, and the loss masks of continued responses (pure, no engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.rollout.driver import (
    CONTINUED_FRAC,
    NEW_PROBLEMS,
    STORE_FULL,
    TOKENS_CARRIED,
    TOKENS_REUSED,
    draw_new_problems,
    run_partial_iteration,
)
from rllib_k15.rollout.groups import GroupStore, segment_stats
from rllib_k15.rollout.partial import PartialRollout, SegmentStatus, extend
from rllib_k15.rollout.records import Rollout
from rllib_k15.rollout.segments import apply_segment, segment_prompt
from rllib_k15.sampling.problem_buffer import ProblemBuffer

K = 3


def unfinished(problem: int, slot: int, n: int = 4, iteration: int = 0) -> PartialRollout:
    return extend(PartialRollout(problem, slot, (1, 2)), [7] * n, [-0.5] * n, iteration)


def finished(problem: int, slot: int, iters: list[int], correct: bool = True) -> Rollout:
    return Rollout(
        problem_index=problem, problem_id=f"p{problem}", prompt_ids=[1, 2],
        response_ids=[9] * len(iters), sample_logp=[-0.5] * len(iters), finish_reason="stop",
        reward=float(correct), correct=correct, reason="correct" if correct else "wrong",
        token_iterations=iters, slot=slot, num_segments=len(set(iters)),
    )  # fmt: skip


# ------------------------------------------------------------------ the store


def test_a_group_is_trained_only_when_all_k_members_finished() -> None:
    store = GroupStore(max_groups=2, group_size=K)
    # iteration 0: slot 0 finishes at once, slots 1 and 2 run out of budget
    done = store.update([finished(5, 0, [0, 0])], [unfinished(5, 1), unfinished(5, 2)])
    assert done == [] and len(store) == 1 and store.room == 1
    assert [p.slot for p in store.continuations()[5]] == [1, 2]
    counts = (store.num_unfinished(), store.num_waiting_finished(), store.tokens_carried())
    assert counts == (2, 1, 8)
    # iteration 1: slot 1 finishes, slot 2 still unfinished -> the group keeps waiting
    still = extend(unfinished(5, 2), [8], [-1.0], 1)
    done = store.update([finished(5, 1, [0] * 4 + [1])], [still])
    assert done == [] and [p.slot for p in store.continuations()[5]] == [2]
    # iteration 2: the last member finishes -> the whole group, in slot order
    done = store.update([finished(5, 2, [0] * 4 + [1, 2])], [])
    assert [[r.slot for r in g] for g in done] == [[0, 1, 2]]
    assert len(store) == 0 and store.room == 2


def test_a_group_that_finishes_at_once_never_waits() -> None:
    store = GroupStore(max_groups=1, group_size=K)
    store.update([], [unfinished(1, s) for s in range(K)])  # fills the store
    done = store.update([finished(2, s, [0]) for s in range(K)], [])  # full, but done at once
    assert [g[0].problem_index for g in done] == [2] and store.pending_problems() == [1]


def test_the_bound_is_never_exceeded_and_nothing_is_evicted() -> None:
    store = GroupStore(max_groups=2, group_size=K)
    store.update([], [unfinished(p, s) for p in (1, 2) for s in range(K)])
    assert store.room == 0
    with pytest.raises(ValueError, match=r"1 new unfinished groups but the store has room for 0"):
        store.update([], [unfinished(3, s) for s in range(K)])
    assert store.pending_problems() == [1, 2]  # unchanged by the rejected update


@pytest.mark.parametrize(
    "results,message",
    [
        ([unfinished(4, 0), unfinished(4, 1)], r"new group of problem 4 reported slots \[0, 1\]"),
        ([unfinished(4, s) for s in (0, 1, 2, 2)], r"two results for \(problem, slot\) \(4, 2\)"),
    ],
)
def test_update_rejects_inconsistent_results(results, message) -> None:
    with pytest.raises(ValueError, match=message):
        GroupStore(max_groups=4, group_size=K).update([], results)


def test_results_for_an_already_finished_slot_are_rejected() -> None:
    store = GroupStore(max_groups=4, group_size=K)
    store.update([finished(4, 0, [0])], [unfinished(4, 1), unfinished(4, 2)])
    with pytest.raises(ValueError, match=r"problem 4: results for slots \[0\]"):
        store.update([finished(4, 0, [0, 1])], [])


def test_state_round_trips_through_json_and_checks_the_config() -> None:
    store = GroupStore(max_groups=3, group_size=K)
    store.update([finished(4, 0, [0])], [unfinished(4, 1), unfinished(4, 2, n=6)])
    store.update([], [unfinished(9, s, n=s + 1) for s in range(K)])
    state = json.loads(json.dumps(store.get_state()))
    restored = GroupStore(max_groups=3, group_size=K)
    restored.set_state(state)
    assert restored.get_state() == store.get_state()
    assert restored.continuations() == store.continuations()
    # the restored store completes the same group the same way
    finish = [finished(4, 1, [0] * 4 + [1]), finished(4, 2, [0] * 6 + [1])]
    assert restored.update(finish, []) == store.update(finish, [])
    with pytest.raises(ValueError, match="groups of 3 responses but `samples_per_problem` is 4"):
        GroupStore(3, 4).set_state(state)
    with pytest.raises(ValueError, match="holds 2 waiting groups but `max_groups` is 1"):
        GroupStore(1, K).set_state(state)


def test_segment_stats() -> None:
    trained = [finished(1, 0, [3, 3, 4, 5]), finished(1, 1, [5, 5]), finished(1, 2, [4, 5])]
    stats = segment_stats(trained, iteration=5)
    assert stats.continued_frac == pytest.approx(2 / 3)
    assert stats.segments_mean == pytest.approx((3 + 1 + 2) / 3)
    assert stats.tokens_reused == 4  # 3, 3, 4 of the first and 4 of the third
    assert stats.old_tokens_frac == pytest.approx(4 / 8)


# ------------------------------------------------------------------ one segment

BUDGET, MAX = 4, 10


@pytest.mark.parametrize(
    "generated,new,stopped,expected_ids,expected",
    [
        (0, [5, 6], True, [5, 6], SegmentStatus.FINISHED),  # EOS inside the budget
        (0, [5, 6, 7, 8], False, [5, 6, 7, 8], SegmentStatus.UNFINISHED),  # used the budget
        (4, [5, 6, 7, 8], True, [5, 6, 7, 8], SegmentStatus.FINISHED),  # EOS on the last one
        (8, [5, 6, 7, 8], False, [5, 6], SegmentStatus.TRUNCATED),  # cut at max_response
        (8, [5, 6, 7], True, [5, 6], SegmentStatus.TRUNCATED),  # EOS lay past the max
    ],
)
def test_apply_segment(generated, new, stopped, expected_ids, expected) -> None:
    partial = unfinished(2, 1, n=generated) if generated else PartialRollout(2, 1, (1, 2))
    out, status = apply_segment(
        partial, new, [-0.25] * len(new), stopped,
        iteration=3, max_response_tokens=MAX, per_iteration_budget=BUDGET,
    )  # fmt: skip
    assert status is expected
    assert list(out.response_ids) == [7] * generated + expected_ids
    assert out.token_iterations == (0,) * generated + (3,) * len(expected_ids)
    assert segment_prompt(out) == [1, 2, *out.response_ids]


def test_apply_segment_refuses_a_response_already_at_the_max() -> None:
    with pytest.raises(ValueError, match="should have been truncated"):
        apply_segment(
            unfinished(0, 0, n=MAX), [1], [0.0], False,
            iteration=1, max_response_tokens=MAX, per_iteration_budget=BUDGET,
        )  # fmt: skip


# ------------------------------------------------------------------ loss masks


def test_old_segments_of_a_continued_response_are_masked_unless_switched_on() -> None:
    rows = [finished(0, 0, [3, 3, 4, 5, 5]), finished(0, 1, [5, 5]), finished(0, 2, [2, 2])]
    kwargs = dict(pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=5)
    masked, _ = build_train_batch(rows, train_on_old_segments=False, **kwargs)
    full, _ = build_train_batch(rows, train_on_old_segments=True, **kwargs)
    prompt = 2  # the loss mask starts after the 2 prompt tokens
    assert masked["loss_mask"][:, prompt:].tolist() == [
        [0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0],  # a member that finished iterations ago: baseline only, no tokens
    ]
    assert full["loss_mask"][:, prompt:].tolist() == [[1] * 5, [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    # the reference log-probs are computed over the whole response either way
    np.testing.assert_array_equal(masked["response_mask"], full["response_mask"])
    np.testing.assert_array_equal(masked["baselines"], full["baselines"])


# ------------------------------------------------------------------ the driver


class FakeRunners:
    """Sampler stand-in: problem p's slot s needs (s + 1) segments; records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], dict]] = []
        self.iteration = 0

    def __call__(self, indices, continuations):
        self.calls.append((list(indices), {p: len(v) for p, v in continuations.items()}))
        items: list = []
        for p in indices:
            work = continuations.get(p) or [PartialRollout(p, s, (1,)) for s in range(K)]
            for w in work:
                w = extend(w, [7, 7], [-1.0, -1.0], self.iteration)
                if w.num_segments == w.slot + 1:
                    items.append(finished(p, w.slot, list(w.token_iterations)))
                else:
                    items.append(w)
        return items, None


def test_driver_continues_waiting_groups_and_respects_the_bound() -> None:
    buffer = ProblemBuffer(np.zeros(20), seed=0)
    store = GroupStore(max_groups=3, group_size=K)
    runners = FakeRunners()
    results = []
    for it in range(4):
        runners.iteration = it
        results.append(
            run_partial_iteration(store, buffer, runners, problems_per_iteration=2, iteration=it)
        )
    new = [r.new_problems for r in results]
    # it 0: 2 new groups wait; it 1: room 1 -> 1 new; it 2: full -> only continuations
    # (2 groups finish); it 3: room 2 -> 2 new
    assert [len(n) for n in new] == [2, 1, 0, 2]
    assert [r.metrics[STORE_FULL] for r in results] == [0.0, 1.0, 1.0, 0.0]
    assert [r.metrics[NEW_PROBLEMS] for r in results] == [2.0, 1.0, 0.0, 2.0]
    flat = [p for n in new for p in n]
    assert len(set(flat)) == len(flat)  # a waiting problem is never drawn again
    # waiting problems are sent first, with their unfinished members only
    assert runners.calls[1][1] == {new[0][0]: 2, new[0][1]: 2}
    assert runners.calls[2][1] == {new[0][0]: 1, new[0][1]: 1, new[1][0]: 2}
    # groups of iteration 0 finish in iteration 2 (slot 2 needs 3 segments)
    assert [sorted({r.problem_index for r in res.trained}) for res in results] == [
        [],
        [],
        sorted(new[0]),
        new[1],
    ]
    third = results[2]
    assert len(third.trained) == 2 * K
    assert third.metrics[CONTINUED_FRAC] == pytest.approx(2 / 3)
    # every token of iterations 0 and 1: slot 0 (2), slot 1 (4), slot 2 (4 of 6), 2 groups
    assert third.metrics[TOKENS_REUSED] == 2 * (2 + 4 + 4)
    assert third.metrics[TOKENS_CARRIED] == 4  # the third group's slot 2, 2 segments of 2


def test_draw_new_problems_skips_waiting_ones() -> None:
    buffer = ProblemBuffer(np.zeros(6), seed=1)
    drawn = draw_new_problems(buffer, 3, iteration=0, exclude={0, 1, 2})
    assert sorted(drawn) == [3, 4, 5]
    assert draw_new_problems(buffer, 0, iteration=1, exclude=set()) == []
