"""ProblemBuffer: statistics, sampling contract, and exact checkpoint round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rllib_k15.sampling import ProblemBuffer, SamplingConfig, write_difficulty_file


def test_record_counts_attempts_and_successes() -> None:
    buffer = ProblemBuffer([0.0, 0.5, 1.0])
    buffer.record(0, [1.0, 0.0, 1.0])  # 0/1 verifier rewards
    buffer.record(0, [True])  # bool flags
    buffer.record(1, [0.5, 0.99])  # partial credit is not a success at threshold 1.0
    buffer.record(2, [])  # nothing finished: nothing recorded
    np.testing.assert_array_equal(buffer.attempts, [4, 2, 0])
    np.testing.assert_array_equal(buffer.successes, [3, 0, 0])
    np.testing.assert_array_equal(buffer.success_rate(), [0.75, 0.0, np.nan])


def test_success_threshold_is_configurable() -> None:
    buffer = ProblemBuffer([0.0], SamplingConfig(success_threshold=0.5))
    buffer.record(0, [0.5, 0.49])
    assert (buffer.attempts[0], buffer.successes[0]) == (2, 1)


@pytest.mark.parametrize(
    "index,outcomes,error",
    [
        (3, [1.0], IndexError),  # out of range
        (-1, [1.0], IndexError),
        (0, [float("nan")], ValueError),
    ],
)
def test_record_rejects_bad_input(index: int, outcomes: list, error: type) -> None:
    with pytest.raises(error):
        ProblemBuffer([0.0, 0.0, 0.0]).record(index, outcomes)


@pytest.mark.parametrize("difficulty", [[], [[0.1, 0.2]], [0.1, float("inf")]])
def test_constructor_rejects_bad_difficulty(difficulty: list) -> None:
    with pytest.raises(ValueError):
        ProblemBuffer(difficulty)


def test_no_problem_twice_in_one_iteration_even_across_calls() -> None:
    buffer = ProblemBuffer(np.zeros(10), seed=0)
    first = buffer.sample(4, iteration=7)
    second = buffer.sample(4, iteration=7)
    third = buffer.sample(4, iteration=7)  # only 2 left
    assert len(first) == len(second) == 4 and len(third) == 2
    assert sorted(first + second + third) == list(range(10))
    assert buffer.sample(1, iteration=7) == []
    np.testing.assert_array_equal(buffer.last_seen_iteration, np.full(10, 7))
    assert len(buffer.sample(10, iteration=8)) == 10  # a new iteration: all eligible again


def test_pool_smaller_than_request_returns_each_problem_once() -> None:
    buffer = ProblemBuffer(np.zeros(3), seed=0)
    chosen = buffer.sample(5, iteration=0)
    assert sorted(chosen) == [0, 1, 2]


def test_last_seen_iteration_tracks_sampling() -> None:
    buffer = ProblemBuffer(np.zeros(4), seed=0)
    np.testing.assert_array_equal(buffer.last_seen_iteration, [-1] * 4)
    chosen = buffer.sample(2, iteration=3)
    assert all(buffer.last_seen_iteration[i] == 3 for i in chosen)
    assert sum(buffer.last_seen_iteration == -1) == 2


def test_external_rng_leaves_the_buffers_own_untouched() -> None:
    a, b = ProblemBuffer(np.zeros(50), seed=9), ProblemBuffer(np.zeros(50), seed=9)
    a.sample(5, iteration=0, rng=np.random.default_rng(123))
    assert a.sample(5, iteration=1) == b.sample(5, iteration=1)


def test_seed_makes_sampling_reproducible() -> None:
    config = SamplingConfig(strategy="prioritized")
    a, b = ProblemBuffer(np.zeros(30), config, seed=1), ProblemBuffer(np.zeros(30), config, seed=1)
    assert [a.sample(5, i) for i in range(5)] == [b.sample(5, i) for i in range(5)]
    c = ProblemBuffer(np.zeros(30), config, seed=2)
    assert [a.sample(5, i) for i in range(5, 10)] != [c.sample(5, i) for i in range(5, 10)]


def test_stats_snapshot_is_a_copy() -> None:
    buffer = ProblemBuffer([0.2, 0.4])
    stats = buffer.stats()
    buffer.record(0, [1.0])
    assert stats.attempts[0] == 0 and buffer.attempts[0] == 1


# ------------------------------------------------------------------ checkpointing


def play(buffer: ProblemBuffer, iterations: range) -> list[list[int]]:
    """A deterministic stand-in for training: sample, then record verified outcomes."""
    drawn = []
    for it in iterations:
        problems = buffer.sample(6, iteration=it)
        drawn.append(problems)
        for p in problems:
            buffer.record(p, [float((p + it) % 3 == 0), float(p % 2)])
    return drawn


@pytest.mark.parametrize("strategy", ["uniform", "curriculum", "prioritized"])
def test_state_round_trip_through_json_resumes_identically(strategy: str) -> None:
    config = SamplingConfig(strategy=strategy, transition_iteration=3, hard_threshold=0.5)
    difficulty = np.linspace(0.0, 1.0, 25)

    def make() -> ProblemBuffer:
        return ProblemBuffer(difficulty, config, seed=11)

    uninterrupted = make()
    play(uninterrupted, range(0, 4))
    state = uninterrupted.get_state()
    restored = make()
    restored.set_state(json.loads(json.dumps(state)))
    assert restored.get_state() == state
    # The resumed run samples, records and stores exactly what the uninterrupted run does.
    assert play(restored, range(4, 9)) == play(uninterrupted, range(4, 9))
    assert restored.get_state() == uninterrupted.get_state()


def test_state_round_trips_through_msgpack() -> None:
    msgpack = pytest.importorskip("msgpack")
    buffer = ProblemBuffer(np.linspace(0, 1, 10), SamplingConfig(strategy="prioritized"), seed=3)
    play(buffer, range(3))
    state = buffer.get_state()
    unpacked = msgpack.unpackb(msgpack.packb(state), strict_map_key=False)
    other = ProblemBuffer(np.zeros(10), SamplingConfig(strategy="prioritized"), seed=99)
    other.set_state(unpacked)
    assert other.get_state() == state
    assert other.sample(4, iteration=3) == buffer.sample(4, iteration=3)


def test_a_bad_state_leaves_the_buffer_untouched() -> None:
    buffer = ProblemBuffer(np.zeros(5), seed=0)
    play(buffer, range(2))
    before = buffer.get_state()
    bad = ProblemBuffer(np.zeros(5), seed=1).get_state()
    bad["attempts"] = bad["attempts"][:4]  # parsed after the RNG and the other arrays
    with pytest.raises(ValueError, match=r"state\['attempts'\] has shape \(4,\), expected \(5,\)"):
        buffer.set_state(bad)
    assert buffer.get_state() == before


def test_set_state_refuses_another_problem_set() -> None:
    state = ProblemBuffer(np.zeros(5)).get_state()
    with pytest.raises(ValueError, match="state is for 5 problems, this buffer has 6"):
        ProblemBuffer(np.zeros(6)).set_state(state)


def test_from_difficulty_file(tmp_path) -> None:
    path = tmp_path / "difficulty.json"
    write_difficulty_file(path, [1.0, 0.25, 0.0])
    buffer = ProblemBuffer.from_difficulty_file(
        path, 3, SamplingConfig(strategy="curriculum", transition_iteration=0), seed=0
    )
    np.testing.assert_allclose(buffer.difficulty, [0.0, 0.75, 1.0])
    assert sorted(buffer.sample(3, iteration=0)) == [1, 2]  # hard: difficulty >= 0.5
