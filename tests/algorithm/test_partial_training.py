"""Partial rollouts in the real training loop (RLlib Algorithm + EnvRunner + engine + Learner).

Tiny random model, toy env, transformers engine. ``max_response_tokens=8`` with a budget of
4 new tokens per iteration: the tiny model hardly ever emits EOS, so each response takes
two segments — every group waits in the store for one iteration and is trained in the
next, made of tokens from two iterations. The tests compare runs state for state (restored vs
uninterrupted, remote vs local runner), so engine and learner are pinned to fp32.
"""

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from support import toy_env
from support.toy_training import policy_weights, toy_config

from rllib_k15.rollout import driver

K, PROBLEMS, MAX_TOKENS, BUDGET = 4, 4, 8, 4


def _config(model_dir, **overrides):
    training = dict(
        autocast_bf16=False, samples_per_problem=K, problems_per_iteration=PROBLEMS,
        max_response_tokens=MAX_TOKENS, partial_rollout_max_tokens=BUDGET,
        partial_rollout_max_groups=2 * PROBLEMS, minibatch_size=K * PROBLEMS, lr=3e-4,
    )  # fmt: skip
    return toy_config(model_dir, env_config={"size": 32}, **{**training, **overrides})


def _train_tokens(result) -> float | None:
    return result.get("learners", {}).get("default_policy", {}).get("train_tokens")


def test_continued_responses_are_trained(tiny_model_dir):
    algo = _config(tiny_model_dir).build_algo()
    try:
        before = policy_weights(algo)
        first = algo.train()
        after_first = policy_weights(algo)
        second = algo.train()
        after_second = policy_weights(algo)
        third = algo.train()
    finally:
        algo.stop()
    k1, k2, k3 = first["k15"], second["k15"], third["k15"]
    # iteration 0: every response used its budget; nothing trained, weights untouched
    assert k1[driver.TRAINED_GROUPS] == 0 and k1[driver.WAITING_GROUPS] == PROBLEMS
    assert k1[driver.UNFINISHED_RESPONSES] == K * PROBLEMS
    assert k1[driver.TOKENS_CARRIED] == K * PROBLEMS * BUDGET
    assert _train_tokens(first) is None
    assert all(torch.equal(before[n], after_first[n]) for n in before)
    # iteration 1: those groups are continued and trained; 4 new problems start
    assert k2[driver.TRAINED_GROUPS] == PROBLEMS and k2[driver.NEW_PROBLEMS] == PROBLEMS
    assert k2[driver.CONTINUED_FRAC] == 1.0 and k2[driver.SEGMENTS_MEAN] == 2.0
    assert k2[driver.TOKENS_REUSED] == K * PROBLEMS * BUDGET
    assert k2["response_tokens_mean"] == MAX_TOKENS
    # old segments are masked: only the tokens generated in iteration 1 are trained
    assert _train_tokens(second) == K * PROBLEMS * (MAX_TOKENS - BUDGET)
    assert any(not torch.equal(after_first[n], after_second[n]) for n in before)
    assert np.isfinite(second["learners"]["default_policy"]["total_loss"])
    # iteration 2: the groups started in iteration 1 are trained
    assert k3[driver.TRAINED_GROUPS] == PROBLEMS and k3[driver.CONTINUED_FRAC] == 1.0
    for k in (k1, k2, k3):  # the wall-time split is reported every iteration
        assert k["sampling_seconds"] >= k["generation_seconds"] > 0
        assert k["scoring_seconds"] >= 0


def test_checkpoint_keeps_unfinished_trajectories(tiny_model_dir, tmp_path):
    """Save after an iteration that left every group unfinished; the restored algorithm
    continues the same trajectories and ends the next iteration in exactly the state of
    the uninterrupted run (nothing replayed, nothing lost)."""
    config = _config(tiny_model_dir, partial_rollout_train_old_segments=True)
    algo = config.build_algo()
    try:
        algo.train()
        saved = algo.partial_groups.get_state()
        algo.save_to_path(str(tmp_path / "ckpt"))
        uninterrupted = algo.train()
        expected = (algo.problem_buffer.get_state(), algo.partial_groups.get_state())
    finally:
        algo.stop()
    waiting = [g["problem_index"] for g in saved["groups"]]
    assert len(waiting) == PROBLEMS and all(len(g["unfinished"]) == K for g in saved["groups"])

    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.partial_groups.get_state() == saved
        resumed = restored.train()
        got = (restored.problem_buffer.get_state(), restored.partial_groups.get_state())
    finally:
        restored.stop()
    assert got == expected
    assert [got[0]["attempts"][p] for p in waiting] == [K] * PROBLEMS  # each trained once
    assert resumed["k15"][driver.TRAINED_GROUPS] == PROBLEMS
    # partial_rollout_train_old_segments=True: whole responses enter the loss
    assert _train_tokens(resumed) == _train_tokens(uninterrupted) == K * PROBLEMS * MAX_TOKENS


def test_bad_partial_rollout_fields_are_named(tiny_model_dir):
    for fields, message in [
        ({"partial_rollout_max_tokens": 8}, r"`partial_rollout_max_tokens` \(8\) must be <"),
        ({"partial_rollout_max_tokens": -1}, r"`partial_rollout_max_tokens` \(-1\) must be None"),
        ({"partial_rollout_max_groups": 0}, r"`partial_rollout_max_groups` \(0\) must be None"),
    ]:
        with pytest.raises(ValueError, match=message):
            _config(tiny_model_dir, **fields).validate()


def test_remote_env_runner_continues_the_same_responses(tiny_model_dir):
    """The store lives on the driver: with a remote EnvRunner (a Ray actor) the unfinished
    responses travel to it and back, and two iterations end in exactly the state of the
    local run (same shard seeds, same weights)."""
    from ray import cloudpickle
    from ray.tune.registry import register_env

    cloudpickle.register_pickle_by_value(toy_env)  # the actor cannot import the tests folder
    register_env(toy_env.ENV_ID, toy_env.make_first_letter_env)
    states, results = [], []
    for config in (_config(tiny_model_dir), _config(tiny_model_dir).env_runners(num_env_runners=1)):
        algo = config.build_algo()
        try:
            results.append([algo.train(), algo.train()])
            states.append((algo.problem_buffer.get_state(), algo.partial_groups.get_state()))
        finally:
            algo.stop()
    (local_buffer, local_groups), (remote_buffer, remote_groups) = states
    assert local_buffer == remote_buffer  # same problems drawn and trained, same outcomes
    local_logp, remote_logp = _pop_logprobs(local_groups), _pop_logprobs(remote_groups)
    assert local_groups == remote_groups  # same waiting problems, token ids, stamps
    # another process, another torch thread count: log-probs agree to float rounding
    np.testing.assert_allclose(local_logp, remote_logp, atol=1e-4)
    remote = results[1][1]
    assert remote["k15"][driver.TRAINED_GROUPS] == PROBLEMS
    assert remote["k15"][driver.CONTINUED_FRAC] == 1.0
    assert _train_tokens(remote) == K * PROBLEMS * (MAX_TOKENS - BUDGET)


def _pop_logprobs(groups_state) -> list[float]:
    """Remove and return the unfinished members' sampling log-probs (in order)."""
    return [x for g in groups_state["groups"] for u in g["unfinished"] for x in u.pop("logprobs")]


@pytest.mark.parametrize(
    "rows,minibatch,expected",
    [
        (32, 32, 32),  # the usual full batch: unchanged
        (16, 32, 16),  # fewer complete groups than a minibatch: one minibatch, no cycling
        (40, 32, 20),  # 2 × 20 instead of 32 + 32 with 24 rows repeated
        (48, 16, 16),  # a multiple: unchanged
        (41, 32, 21),  # 2 × 21: one repeated row, the fewest possible
    ],
)
def test_even_minibatch_size(rows, minibatch, expected):
    from rllib_k15.algorithm.algorithm import even_minibatch_size

    assert even_minibatch_size(rows, minibatch) == expected
