"""DAPO dynamic sampling: groups whose k rewards are equal are dropped and replaced by new
problems (bounded rounds, own seeds), every graded group still reaches the sampler's
statistics, and the filtered fraction is reported."""

from __future__ import annotations

import pytest
from support.toy_training import toy_config

from rllib_k15.algorithm.config import K15Config
from rllib_k15.algorithm.sharding import shard_seed
from rllib_k15.metric_names import K15_RESULTS
from rllib_k15.rollout.dynamic_sampling import split_informative
from rllib_k15.rollout.records import Rollout


def _r(problem, reward):
    return Rollout(problem_index=problem, problem_id=str(problem), prompt_ids=[1],
                   response_ids=[2], sample_logp=[-1.0], finish_reason="stop", reward=reward,
                   correct=reward > 0, reason="")  # fmt: skip


def test_split_informative_keeps_groups_whose_rewards_differ():
    rollouts = [_r(0, 1), _r(1, 0), _r(0, 0), _r(1, 0), _r(2, 1), _r(2, 1), _r(3, -0.5), _r(3, 0)]
    kept, flat = split_informative(rollouts)
    assert [r.problem_index for r in kept] == [0, 0, 3, 3]
    assert flat == [1, 2]  # all wrong, all right


def test_extra_rounds_get_their_own_seeds_and_round_0_is_unchanged():
    assert shard_seed(0, 5, 1) == shard_seed(0, 5, 1, 0)
    assert len({shard_seed(0, 5, 1, r) for r in range(4)}) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dynamic_sampling": True, "partial_rollout_max_tokens": 32}, "partial rollouts"),
        ({"dynamic_sampling_max_rounds": -1}, "integer >= 0"),
        ({"dynamic_sampling": 1}, "must be true or false"),
    ],
)
def test_config_rejects_what_dynamic_sampling_cannot_do(kwargs, message):
    config = K15Config().environment("k15/Arithmetic-v0").training(max_response_tokens=64, **kwargs)
    with pytest.raises(ValueError, match=message):
        config.validate()


def _iteration(model_dir, **training):
    config = toy_config(
        model_dir, env_config={"size": 64}, samples_per_problem=2, problems_per_iteration=8,
        max_response_tokens=1, minibatch_size=16, **training,
    )  # fmt: skip
    algo = config.build_algo()
    try:
        stats = algo.train()[K15_RESULTS]
        drawn = list(algo.last_problem_indices)
        attempts = algo.problem_buffer.get_state()["attempts"]
        seen = [i for i, n in enumerate(attempts) if n > 0]
    finally:
        algo.stop()
    return stats, drawn, seen


def test_an_iteration_trains_only_informative_groups_and_records_every_draw(peaked_tiny_model_dir):
    """On the toy task the peaked model is right about a third of the time, so with k = 2 a
    group is flat (both wrong or both right) with probability ~0.56, and 8 problems almost
    surely include flat and informative ones, on any CPU's sampling noise: without the
    filter flat groups are trained on, with it they are replaced, and the sampler still
    learns from every group it drew."""
    plain, plain_drawn, _ = _iteration(peaked_tiny_model_dir)
    assert plain["groups_with_signal_frac"] < 1  # the case has flat groups to filter

    stats, drawn, seen = _iteration(
        peaked_tiny_model_dir, dynamic_sampling=True, dynamic_sampling_max_rounds=3
    )
    assert stats["groups_with_signal_frac"] == 1.0
    assert stats["num_problems"] <= 8
    assert 1 <= stats["dynamic_sampling_rounds"] <= 3
    assert 0 < stats["dynamic_filtered_frac"] < 1
    assert len(drawn) > 8 and len(set(drawn)) == len(drawn)  # more problems, none twice
    assert drawn[:8] == plain_drawn  # round 0 is the plain iteration's draw
    assert sorted(seen) == sorted(drawn)  # every drawn group was recorded
