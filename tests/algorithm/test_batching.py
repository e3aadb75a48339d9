"""build_train_batch: rows, masks, shaped rewards and per-problem baselines."""

import numpy as np
import pytest

from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.rollout.records import Rollout


def _rollout(problem, response, correct, iters=None, reward=None):
    return Rollout(
        problem_index=problem,
        problem_id=f"p{problem}",
        prompt_ids=[1, 2],
        response_ids=response,
        sample_logp=[-0.5] * len(response),
        finish_reason="stop",
        reward=float(correct) if reward is None else reward,
        correct=correct,
        reason="",
        token_iterations=iters or [],
    )


def test_rows_masks_and_padding():
    cols, _ = build_train_batch(
        [_rollout(0, [5, 6, 7], True), _rollout(0, [8], False)],
        pad_token_id=0,
        tau=1.0,
        baseline="mean",
        length_weight=0.0,
        iteration=0,
    )
    np.testing.assert_array_equal(cols["input_ids"], [[1, 2, 5, 6, 7], [1, 2, 8, 0, 0]])
    np.testing.assert_array_equal(cols["attention_mask"], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(cols["response_mask"], [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(cols["sample_logp"][1], [0, 0, -0.5, 0, 0])


def test_rewards_length_shaping_and_baselines_per_group():
    rollouts = [
        _rollout(0, [1] * 10, True),
        _rollout(0, [1] * 30, True),  # group 0: λ = +0.5, −0.5
        _rollout(1, [1] * 5, False),
        _rollout(1, [1] * 5, False),  # group 1: equal lengths
    ]
    cols, stats = build_train_batch(
        rollouts, pad_token_id=0, tau=1.0, baseline="mean", length_weight=0.5, iteration=3
    )
    np.testing.assert_allclose(cols["rewards"], [1.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(cols["baselines"], [1.0, 1.0, 0.0, 0.0])
    assert stats["accuracy"] == 0.5
    assert stats["groups_with_signal_frac"] == 0.5  # group 1 has zero reward variance


def test_old_segments_masked_when_switch_off():
    r = _rollout(0, [4, 5, 6, 7], True, iters=[2, 2, 3, 3])
    on, _ = build_train_batch(
        [r],
        pad_token_id=0,
        tau=1.0,
        baseline="mean",
        length_weight=0.0,
        iteration=3,
        train_on_old_segments=True,
    )
    off, _ = build_train_batch(
        [r],
        pad_token_id=0,
        tau=1.0,
        baseline="mean",
        length_weight=0.0,
        iteration=3,
        train_on_old_segments=False,
    )
    np.testing.assert_array_equal(on["loss_mask"][0], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(off["loss_mask"][0], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(
        off["response_mask"][0], [0, 0, 1, 1, 1, 1]
    )  # ref still scores all


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="no rollouts"):
        build_train_batch(
            [], pad_token_id=0, tau=1.0, baseline="mean", length_weight=0.0, iteration=0
        )


def test_grading_errors_are_counted_apart_from_wrong_answers():
    import dataclasses

    wrong = _rollout(0, [5], False)
    broken = dataclasses.replace(_rollout(0, [6], False), reason="grading_error: KeyError: 'x'")
    _, stats = build_train_batch(
        [wrong, broken, _rollout(0, [7], True)],
        pad_token_id=0,
        tau=1.0,
        baseline="mean",
        length_weight=0.0,
        iteration=0,
    )
    assert stats["grading_errors"] == 1.0
    assert stats["accuracy"] == pytest.approx(1 / 3)
