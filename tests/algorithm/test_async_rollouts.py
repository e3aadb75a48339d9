"""Overlapped generation and training (``async_rollouts``): staleness 0 is the synchronous
update, later batches come from the policy one version back, sampling overlaps the update,
and a checkpoint taken with sampling in flight resumes with the same draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import toy_env
from support.toy_training import exact_toy_config, policy_weights

from rllib_k15.algorithm.async_rollouts import InFlightSampling, overlap_seconds
from rllib_k15.algorithm.config import K15Config
from rllib_k15.metric_names import (
    ASYNC_OVERLAP_FRACTION,
    ASYNC_STALENESS,
    K15_RESULTS,
    LEARNER_RESULTS,
    LOGP_MISMATCH_MEAN,
)


def test_overlap_seconds_is_the_intersection_of_two_intervals():
    assert overlap_seconds((0.0, 4.0), (1.0, 2.5)) == 1.5  # b inside a
    assert overlap_seconds((1.0, 3.0), (2.0, 6.0)) == 1.0  # partial
    assert overlap_seconds((0.0, 1.0), (2.0, 3.0)) == 0.0  # disjoint
    assert overlap_seconds((2.0, 3.0), (0.0, 2.0)) == 0.0  # touching


def test_in_flight_sampling_returns_the_result_and_reraises_the_error():
    flight = InFlightSampling()
    try:
        job = flight.start(3, [5, 6], policy_version=2, sample=lambda: "rollouts")
        with pytest.raises(RuntimeError, match="iteration 3 is still in flight"):
            flight.start(4, [7], 2, lambda: None)
        taken, result, waited = flight.take()
        assert (taken is job, result, taken.indices, taken.policy_version) == (
            True, "rollouts", [5, 6], 2,
        )  # fmt: skip
        assert taken.finished >= taken.started and waited >= 0

        def boom():
            raise ValueError("runner exploded")

        flight.start(4, [7], 3, boom)
        with pytest.raises(ValueError, match="runner exploded"):
            flight.take()
    finally:
        flight.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"async_rollouts": True}, r"num_env_runners` >= 1, got 0"),
        ({"async_rollouts": True, "partial_rollout_max_tokens": 32}, "partial rollouts"),
        ({"async_rollouts": True, "dynamic_sampling": True}, "dynamic_sampling"),
        ({"async_rollouts": "yes"}, "must be true or false"),
    ],
)
def test_config_rejects_what_async_rollouts_cannot_do(kwargs, message):
    config = K15Config().environment("k15/Arithmetic-v0").training(max_response_tokens=64, **kwargs)
    if "num_env_runners" not in message:
        config = config.env_runners(num_env_runners=1)
    with pytest.raises(ValueError, match=message):
        config.validate()


ASYNC_TOY_ENV = "k15-test/first-letter-async"


def _config(model_dir, async_rollouts: bool):
    from ray import cloudpickle
    from ray.tune.registry import register_env

    cloudpickle.register_pickle_by_value(toy_env)  # the actor cannot import the tests folder
    # an id of its own: registering the toy env's gym id with Tune would change how other
    # tests in this process see it (rllib_k15.algorithm.default_splits.env_parameters)
    register_env(ASYNC_TOY_ENV, toy_env.make_first_letter_env)
    # lr large enough that θ_1 samples visibly different log-probs from θ_0
    config = exact_toy_config(
        model_dir, ASYNC_TOY_ENV, {"size": 64}, lr=1e-3, async_rollouts=async_rollouts
    )
    return config.env_runners(num_env_runners=1)


def _train(config, iterations: int):
    algo = config.build_algo()
    weights, results = [], []
    try:
        for _ in range(iterations):
            results.append(algo.train())
            weights.append(policy_weights(algo))
    finally:
        algo.stop()
    return results, weights


def test_async_rollouts_train_one_version_behind(peaked_tiny_model_dir, tmp_path):
    sync_results, sync_weights = _train(_config(peaked_tiny_model_dir, False), 2)
    algo = _config(peaked_tiny_model_dir, True).build_algo()
    try:
        results = [algo.train()]
        after_0 = policy_weights(algo)
        results.append(algo.train())
        checkpoint = algo.save_to_path(str(tmp_path / "ckpt"))  # sampling of iteration 2 in flight
        results.append(algo.train())
        drawn_2 = list(algo.last_problem_indices)
    finally:
        algo.stop()

    # staleness 0 (nothing in flight at iteration 0) is exactly the synchronous update
    for name, tensor in sync_weights[0].items():
        assert torch.equal(tensor, after_0[name]), name
    stats = [r[K15_RESULTS] for r in results]
    assert [s[ASYNC_STALENESS] for s in stats] == [0.0, 1.0, 1.0]
    assert stats[1][ASYNC_OVERLAP_FRACTION] > 0  # iteration 1 sampled during update 0
    # the engine sampled iteration 1 with θ_0, the learner's reference is θ_1: the log-probs
    # disagree by the update; in the synchronous run they agree to float rounding
    sync_mismatch = sync_results[1][LEARNER_RESULTS][LOGP_MISMATCH_MEAN]
    async_mismatch = results[1][LEARNER_RESULTS][LOGP_MISMATCH_MEAN]
    assert sync_mismatch < 1e-3 < async_mismatch, (sync_mismatch, async_mismatch)
    assert all(np.isfinite(r[LEARNER_RESULTS]["default_policy"]["total_loss"]) for r in results)

    # a checkpoint saved with sampling in flight resumes with that draw
    resumed = _config(peaked_tiny_model_dir, True).build_algo()
    try:
        resumed.restore_from_path(checkpoint)
        again = resumed.train()
        assert list(resumed.last_problem_indices) == drawn_2
        assert again[K15_RESULTS][ASYNC_STALENESS] == 0.0  # re-sampled with the restored θ_2
    finally:
        resumed.stop()


def test_async_bench_rows_from_a_synthetic_run():
    from bench.async_rollouts import ASYNC_KEYS, SPLIT, summarize, summary_rows

    def it(wall, tokens, sampling, update, **extra):
        base = dict.fromkeys(SPLIT + ASYNC_KEYS, 0.0)
        timing = {"sampling_seconds": sampling, "learner_update_seconds": update}
        return {**base, "wall_seconds": wall, "trained_tokens": tokens, "loadavg_1m": 2.0,
                **timing, **extra}  # fmt: skip

    # sync: warm-up, then 2 × 500 tokens in 10 s (4 s sampling, 6 s update)
    sync = {"iterations": [it(50.0, 10, 40.0, 10.0)] + [it(10.0, 500, 4.0, 6.0)] * 2}
    # async: 2 × 500 tokens in 8 s, half of each batch's sampling beside the update
    overlapped = {"async/overlap_fraction": 0.5, "async/wait_seconds": 1.0,
                  "async/staleness": 1.0}  # fmt: skip
    asy = {"iterations": [it(50.0, 10, 40.0, 10.0)] + [it(8.0, 500, 1.0, 7.0, **overlapped)] * 2}
    rows = summary_rows({"sync": summarize([sync]), "async": summarize([asy])})
    wall, overlap, wait, update = rows
    assert (wall.value, wall.baseline, wall.ratio) == (16.0, 20.0, pytest.approx(0.8))
    assert overlap.value == 0.5 and "staleness 1.0" in overlap.note
    assert (wait.value, wait.baseline, wait.ratio) == (1.0, 4.0, 0.25)
    assert update.ratio == pytest.approx(7 / 6)
