"""K15TorchLearner on the tiny model: accumulation invariance, optimizer reset, masking."""

import numpy as np
import pytest
import torch
import toy_env
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_k15 import K15Config
from rllib_k15.algorithm.batching import Rollout, build_train_batch


def _learner(model_dir, **training):
    config = (
        K15Config()
        .environment(toy_env.ENV_ID)
        .training(
            hf_model=str(model_dir),
            lr=1e-3,
            samples_per_problem=4,
            problems_per_iteration=2,
            minibatch_size=8,
            **training,
        )
        .debugging(seed=0)
    )
    env = toy_env.FirstLetterEnv()
    spaces = {DEFAULT_MODULE_ID: (env.observation_space, env.action_space)}
    learner = config.build_learner(env=None, spaces=spaces)
    learner.build()
    return learner


def _columns(seed=0, iteration=0):
    rng = np.random.default_rng(seed)
    rollouts = []
    for j in range(8):
        n = int(rng.integers(2, 9))
        rollouts.append(
            Rollout(
                problem_index=j // 4,
                problem_id=str(j // 4),
                prompt_ids=rng.integers(5, 1000, 6).tolist(),
                response_ids=rng.integers(5, 1000, n).tolist(),
                sample_logp=[-5.0] * n,
                finish_reason="stop",
                reward=float(j % 2),
                correct=bool(j % 2),
                reason="",
            )
        )
    cols, _ = build_train_batch(
        rollouts, pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=iteration
    )
    return cols


def _update(learner, cols):
    batch = MultiAgentBatch(
        {DEFAULT_MODULE_ID: SampleBatch({k: v.copy() for k, v in cols.items()})}, 8
    )
    return learner.update(batch=batch, minibatch_size=8, num_epochs=1)


def test_micro_batching_does_not_change_the_gradient(tiny_model_dir):
    """Accumulating 3+3+2 rows gives the gradient of the 8-row batch (Adam's first step
    would amplify round-off where g ≈ 0, so compare the gradients handed to the optimizer)."""
    cols = _columns()
    grads = []
    for micro_batch_size in (8, 3):
        learner = _learner(tiny_model_dir, micro_batch_size=micro_batch_size, grad_clip=None)
        learner.apply_gradients = lambda g: grads.append([v.clone() for v in g.values()])
        _update(learner, cols)
    assert len(grads[0]) == len(grads[1]) > 0
    for whole, accumulated in zip(*grads):
        # fp32 summation order differs; the relative error of the whole tensor must be tiny
        assert (whole - accumulated).norm() <= 1e-5 * whole.norm() + 1e-9


@pytest.mark.parametrize("reset,expected_steps", [(True, 1), (False, 2)])
def test_optimizer_state_is_reset_each_iteration(tiny_model_dir, reset, expected_steps):
    learner = _learner(tiny_model_dir, reset_optimizer_each_iteration=reset)
    _update(learner, _columns(0))
    _update(learner, _columns(1))
    (optim,) = learner._optimizer_parameters
    steps = {int(state["step"]) for state in optim.state.values()}
    assert steps == {expected_steps}


def test_reference_logprobs_are_the_models_own_and_masked(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    cols = _columns()
    ref = learner.compute_reference_logprobs(cols)
    assert np.all(ref[cols["response_mask"] == 0] == 0)
    assert np.all(ref[cols["response_mask"] == 1] < 0)
    # padding is trimmed per micro-batch: the same rows scored one at a time agree
    single = learner.compute_reference_logprobs({k: v[:1] for k, v in cols.items()})
    np.testing.assert_allclose(single[0], ref[0, : single.shape[1]], rtol=1e-5, atol=1e-5)


def test_tokens_outside_the_loss_mask_do_not_change_the_loss(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    cols = _columns()
    last = cols["attention_mask"].sum(-1) - 1  # final token of every row
    cols["loss_mask"][np.arange(8), last] = 0
    module = learner.module[DEFAULT_MODULE_ID]

    def loss_of(columns):
        columns = {k: v.copy() for k, v in columns.items()}
        columns["ref_logp"] = learner.compute_reference_logprobs(columns)
        tensors = {k: torch.as_tensor(v) for k, v in columns.items()}
        fwd = module.forward_train(tensors)
        return learner.compute_loss_for_module(
            module_id=DEFAULT_MODULE_ID, config=learner.config, batch=tensors, fwd_out=fwd
        ).item()

    changed = {k: v.copy() for k, v in cols.items()}
    changed["input_ids"][np.arange(8), last] = 7  # rewrite the masked final tokens
    assert loss_of(cols) == pytest.approx(loss_of(changed), rel=1e-6, abs=1e-7)
