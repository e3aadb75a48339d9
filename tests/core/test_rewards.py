"""Hand-computed values for the length reward, warm-up schedule and baselines."""

import math

import numpy as np
import pytest

from rllib_k15.core.rewards import (
    Baseline,
    group_baseline,
    grouped_baselines,
    grouped_length_rewards,
    length_penalty_weight,
    length_reward,
)


@pytest.mark.parametrize(
    "lengths,correct,expected",
    [
        # all equal lengths -> 0 for everyone, right or wrong
        ([10, 10, 10], [1, 0, 1], [0.0, 0.0, 0.0]),
        # mixed: λ = 0.5 - (len-10)/(30-10) = [0.5, 0, -0.5]; the wrong short one gets min(0, .5)=0
        ([10, 20, 30], [1, 1, 1], [0.5, 0.0, -0.5]),
        ([10, 20, 30], [0, 0, 0], [0.0, 0.0, -0.5]),  # all wrong: never positive
        ([10, 20, 30], [0, 1, 0], [0.0, 0.0, -0.5]),
        # λ for len 15 = 0.5 - 5/20 = 0.25 (correct) ; len 25 wrong -> min(0,-0.25)
        ([10, 15, 25, 30], [1, 1, 0, 1], [0.5, 0.25, -0.25, -0.5]),
        ([7], [1], [0.0]),  # a single response has max_len == min_len
    ],
)
def test_length_reward_table(lengths, correct, expected):
    np.testing.assert_allclose(length_reward(np.array(lengths), np.array(correct)), expected)


def test_length_reward_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        length_reward(np.array([1, 2]), np.array([1]))


def test_grouped_length_rewards_respects_groups():
    lengths = np.array([10, 30, 5, 5])
    correct = np.array([1, 1, 1, 0])
    groups = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(grouped_length_rewards(lengths, correct, groups), [0.5, -0.5, 0, 0])


@pytest.mark.parametrize(
    "iteration,warmup,expected",
    [(0, 3, 0.0), (2, 3, 0.0), (3, 3, 0.7), (10, 3, 0.7), (0, 0, 0.7)],
)
def test_length_penalty_warmup(iteration, warmup, expected):
    assert length_penalty_weight(iteration, warmup, 0.7) == expected


def test_mean_and_logsumexp_baselines_by_hand():
    rewards = np.array([1.0, 0.0, 0.0, 1.0])
    assert group_baseline(rewards, tau=0.5, kind="mean") == 0.5
    # τ log((e^{2} + 1 + 1 + e^{2}) / 4) with τ = 0.5
    expected = 0.5 * math.log((2 * math.exp(2.0) + 2.0) / 4.0)
    assert group_baseline(rewards, tau=0.5, kind=Baseline.LOGSUMEXP) == pytest.approx(expected)
    # τ → ∞: logsumexp baseline tends to the mean; τ → 0: to the max
    assert group_baseline(rewards, tau=1e4, kind="logsumexp") == pytest.approx(0.5, abs=1e-4)
    assert group_baseline(rewards, tau=1e-3, kind="logsumexp") == pytest.approx(1.0, abs=1e-2)


def test_logsumexp_baseline_is_stable_for_small_tau():
    assert math.isfinite(group_baseline(np.array([1.0, 0.0]), tau=1e-6, kind="logsumexp"))


def test_grouped_baselines_broadcast():
    out = grouped_baselines(np.array([1, 0, 1, 1]), np.array([3, 3, 7, 7]), tau=1.0)
    np.testing.assert_allclose(out, [0.5, 0.5, 1.0, 1.0])
