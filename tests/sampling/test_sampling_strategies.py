"""Each sampling strategy's empirical distribution matches its definition.

Distribution tests draw one problem per call many times with a fixed seed and run a
chi-square goodness-of-fit test against the strategy's rule (p > 0.01), and check the test
has power: the same counts reject a plausible wrong rule (p < 1e-6).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

from rllib_k15.sampling import (
    STRATEGIES,
    ProblemBuffer,
    ProblemStats,
    SamplingConfig,
    SamplingStrategy,
    StrategyRegistry,
    draw_without_replacement,
    sampling_weights,
)


def single_draw_counts(buffer: ProblemBuffer, draws: int, first_iteration: int = 0) -> np.ndarray:
    """Counts of ``buffer.sample(1, it)`` over ``draws`` distinct iterations."""
    counts = np.zeros(buffer.num_problems, dtype=np.int64)
    for it in range(first_iteration, first_iteration + draws):
        (index,) = buffer.sample(1, iteration=it)
        counts[index] += 1
    return counts


def expected_counts(weights: np.ndarray, draws: int) -> np.ndarray:
    return draws * np.asarray(weights, dtype=np.float64) / np.sum(weights)


# ------------------------------------------------------------------------- registry


def test_every_strategy_name_is_registered() -> None:
    assert set(STRATEGIES) == set(SamplingStrategy)


def test_registry_rejects_duplicate_names() -> None:
    registry = StrategyRegistry()
    registry.register(SamplingStrategy.UNIFORM)(lambda stats, it, cfg: np.ones(1))
    with pytest.raises(ValueError, match="'uniform' is already registered"):
        registry.register("uniform")(lambda stats, it, cfg: np.ones(1))
    # The package registry rejects a second registration too (and stays unchanged).
    before = STRATEGIES.get(SamplingStrategy.PRIORITIZED)
    with pytest.raises(ValueError, match="already registered"):
        STRATEGIES.register(SamplingStrategy.PRIORITIZED)(lambda stats, it, cfg: np.ones(1))
    assert STRATEGIES.get(SamplingStrategy.PRIORITIZED) is before


def test_unknown_strategy_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'greedy'.*uniform, curriculum, prioritized"):
        SamplingConfig(strategy="greedy")
    with pytest.raises(ValueError):
        StrategyRegistry().register("greedy")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"transition_iteration": -1}, r"`transition_iteration` \(-1\)"),
        ({"priority_floor": 0.0}, r"`priority_floor` \(0.0\) must be in \(0, 1\]"),
        ({"priority_floor": 1.5}, r"`priority_floor` \(1.5\)"),
        ({"hard_threshold": float("nan")}, r"`hard_threshold` \(nan\)"),
    ],
)
def test_config_validation_quotes_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_config_accepts_strategy_strings() -> None:
    assert SamplingConfig(strategy="curriculum").strategy is SamplingStrategy.CURRICULUM


# ------------------------------------------------------------------------- uniform


def test_uniform_is_uniform() -> None:
    buffer = ProblemBuffer(np.linspace(0, 1, 8), SamplingConfig(strategy="uniform"), seed=1)
    counts = single_draw_counts(buffer, 4000)
    assert chisquare(counts).pvalue > 0.01


def test_uniform_inclusion_probability_is_k_over_n() -> None:
    # Drawing k of N without replacement: each problem is in the draw with prob k/N.
    n, k, rounds = 10, 3, 2000
    buffer = ProblemBuffer(np.zeros(n), seed=2)
    counts = np.zeros(n, dtype=np.int64)
    for it in range(rounds):
        chosen = buffer.sample(k, iteration=it)
        assert len(set(chosen)) == k
        counts[chosen] += 1
    assert chisquare(counts, np.full(n, rounds * k / n)).pvalue > 0.01


# ------------------------------------------------------------------------- curriculum

DIFFICULTY = np.array([0.1, 0.2, 0.6, 0.9, 0.5, 0.0])  # hard (>= 0.5): 2, 3, 4
HARD = {2, 3, 4}


def curriculum_buffer(seed: int = 0) -> ProblemBuffer:
    config = SamplingConfig(strategy="curriculum", transition_iteration=5, hard_threshold=0.5)
    return ProblemBuffer(DIFFICULTY, config, seed=seed)


def test_curriculum_switches_exactly_at_the_transition_iteration() -> None:
    buffer = curriculum_buffer()
    # Iteration 4 (last mixed one): asking for everything returns the whole set.
    assert sorted(buffer.sample(6, iteration=4)) == list(range(6))
    # Iteration 5: only the hard problems; the pool (3) is smaller than asked (6).
    assert sorted(buffer.sample(6, iteration=5)) == sorted(HARD)
    assert sorted(buffer.sample(6, iteration=6)) == sorted(HARD)


def test_curriculum_weights_at_the_boundary() -> None:
    config = SamplingConfig(strategy="curriculum", transition_iteration=5, hard_threshold=0.5)
    stats = ProblemStats(DIFFICULTY, np.zeros(6, np.int64), np.zeros(6, np.int64))
    np.testing.assert_array_equal(sampling_weights(stats, 4, config), np.ones(6))
    np.testing.assert_array_equal(sampling_weights(stats, 5, config), [0, 0, 1, 1, 1, 0])


def test_curriculum_distribution_before_and_after() -> None:
    never = SamplingConfig(strategy="curriculum", transition_iteration=10**6)
    before = single_draw_counts(ProblemBuffer(DIFFICULTY, never, seed=3), 3000)
    assert chisquare(before).pvalue > 0.01  # uniform over all six
    after = single_draw_counts(curriculum_buffer(seed=3), 3000, first_iteration=5)
    assert set(np.flatnonzero(after)) == HARD
    assert chisquare(after[sorted(HARD)]).pvalue > 0.01  # uniform over the hard ones


def test_curriculum_without_any_hard_problem_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`hard_threshold` \(0.95\); the hardest is 0.9"):
        ProblemBuffer(DIFFICULTY, SamplingConfig(strategy="curriculum", hard_threshold=0.95))


# ------------------------------------------------------------------------- prioritized


def prioritized_buffer(floor: float = 0.05, seed: int = 4) -> tuple[ProblemBuffer, np.ndarray]:
    """Problems with success rates unseen, 0, 1/4, 1/2, 3/4, 1, 1 and their weights."""
    buffer = ProblemBuffer(
        np.zeros(7), SamplingConfig(strategy="prioritized", priority_floor=floor), seed=seed
    )
    outcomes = {
        1: [0, 0],
        2: [1, 0, 0, 0],
        3: [1.0, 0.0],
        4: [True, True, True, False],
        5: [1.0],
        6: [1] * 20,
    }
    for index, values in outcomes.items():
        buffer.record(index, values)
    rate = np.array([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])  # unseen counts as 0
    return buffer, np.maximum(1.0 - rate, floor)


def test_prioritized_weights_follow_the_rule() -> None:
    buffer, weights = prioritized_buffer()
    got = sampling_weights(buffer.stats(), 0, buffer.config)
    np.testing.assert_allclose(got, weights, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[5:], [0.05, 0.05])  # solved problems sit on the floor


def test_prioritized_distribution_matches_weights() -> None:
    buffer, weights = prioritized_buffer()
    draws = 5000
    counts = single_draw_counts(buffer, draws)
    assert chisquare(counts, expected_counts(weights, draws)).pvalue > 0.01
    # Power: the same counts are clearly not uniform.
    assert chisquare(counts).pvalue < 1e-6


def test_prioritized_floor_keeps_solved_problems_in_play() -> None:
    buffer, weights = prioritized_buffer(floor=0.2)
    draws = 4000
    counts = single_draw_counts(buffer, draws)
    solved_share = counts[5:].sum() / draws
    expected_share = weights[5:].sum() / weights.sum()  # 0.4 / 3.4
    assert chisquare(counts, expected_counts(weights, draws)).pvalue > 0.01
    assert abs(solved_share - expected_share) < 4 * np.sqrt(expected_share / draws)


def test_prioritized_floor_of_one_is_uniform() -> None:
    buffer, _ = prioritized_buffer(floor=1.0)
    assert chisquare(single_draw_counts(buffer, 3500)).pvalue > 0.01


# ------------------------------------------------------------------------- the draw


def test_draw_without_replacement_is_successive_sampling() -> None:
    # Ordered pair (i, j) has probability w_i / W · w_j / (W − w_i) (Plackett–Luce).
    weights = np.array([1.0, 2.0, 5.0])
    total = weights.sum()
    pairs = list(itertools.permutations(range(3), 2))
    rng = np.random.default_rng(5)
    draws = 12000
    counts = {pair: 0 for pair in pairs}
    for _ in range(draws):
        counts[tuple(draw_without_replacement(weights, 2, rng))] += 1
    probs = [weights[i] / total * weights[j] / (total - weights[i]) for i, j in pairs]
    result = chisquare([counts[p] for p in pairs], draws * np.array(probs))
    assert result.pvalue > 0.01


@pytest.mark.parametrize(
    "weights,num,expected",
    [
        ([0.0, 1.0, 0.0, 3.0], 4, {1, 3}),  # zero weight never drawn; pool < num
        ([1.0, 1.0, 1.0], 0, set()),  # nothing asked
        ([0.0, 0.0], 2, set()),  # nothing eligible
    ],
)
def test_draw_edge_cases(weights: list[float], num: int, expected: set[int]) -> None:
    chosen = draw_without_replacement(np.array(weights), num, np.random.default_rng(0))
    assert set(chosen) == expected and len(chosen) == len(expected)


@pytest.mark.parametrize(
    "bad_weights,message",
    [
        (np.array([1.0, -1.0, 1.0]), "negative or non-finite"),
        (np.array([1.0, np.nan, 1.0]), "negative or non-finite"),
        (np.ones(2), r"shape \(2,\), expected \(3,\)"),
    ],
)
def test_dispatcher_rejects_bad_strategy_output(bad_weights: np.ndarray, message: str) -> None:
    registry = StrategyRegistry()
    registry.register(SamplingStrategy.UNIFORM)(lambda stats, it, cfg: bad_weights)
    stats = ProblemStats(np.zeros(3), np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=message):
        sampling_weights(stats, 0, SamplingConfig(), registry=registry)


def test_negative_draw_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`num` \(-1\) must be >= 0"):
        draw_without_replacement(np.ones(3), -1, np.random.default_rng(0))
