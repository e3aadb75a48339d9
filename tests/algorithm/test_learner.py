"""K15TorchLearner on the tiny model: accumulation invariance, optimizer reset, masking.

Exact numerics: the learner is fp32 (support.learner_harness pins ``autocast_bf16=False``),
on every CPU and whatever ``K15_PRECISION`` says (CI runs these with both: ``-m precision``).
"""

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from support.learner_harness import build_learner, random_columns, update

from rllib_k15.algorithm.loss_prep import grouped_rows, loss_params
from rllib_k15.core.losses import prepare_advantages

pytestmark = pytest.mark.precision


def test_micro_batching_does_not_change_the_gradient(tiny_model_dir):
    """Accumulating 3+3+2 rows gives the gradient of the 8-row batch (Adam's first step
    would amplify round-off where g ≈ 0, so compare the gradients handed to the optimizer)."""
    cols = random_columns()
    grads = []
    for micro_batch_size in (8, 3):
        learner = build_learner(tiny_model_dir, micro_batch_size=micro_batch_size, grad_clip=None)
        learner.apply_gradients = lambda g: grads.append([v.clone() for v in g.values()])
        update(learner, cols)
    assert len(grads[0]) == len(grads[1]) > 0
    for whole, accumulated in zip(*grads):
        # fp32 summation order differs; the relative error of the whole tensor must be tiny
        assert (whole - accumulated).norm() <= 1e-5 * whole.norm() + 1e-9


@pytest.mark.parametrize("reset,expected_steps", [(True, 1), (False, 2)])
def test_optimizer_state_is_reset_each_iteration(tiny_model_dir, reset, expected_steps):
    learner = build_learner(tiny_model_dir, reset_optimizer_each_iteration=reset)
    update(learner, random_columns(0))
    update(learner, random_columns(1))
    (optim,) = learner._optimizer_parameters
    steps = {int(state["step"]) for state in optim.state.values()}
    assert steps == {expected_steps}


def test_reference_logprobs_are_the_models_own_and_masked(tiny_model_dir):
    learner = build_learner(tiny_model_dir)
    cols = random_columns()
    ref = learner.compute_reference_logprobs(cols)
    assert np.all(ref[cols["response_mask"] == 0] == 0)
    assert np.all(ref[cols["response_mask"] == 1] < 0)
    # padding is trimmed per micro-batch: the same rows scored one at a time agree
    single = learner.compute_reference_logprobs({k: v[:1] for k, v in cols.items()})
    np.testing.assert_allclose(single[0], ref[0, : single.shape[1]], rtol=1e-5, atol=1e-5)


def test_tokens_outside_the_loss_mask_do_not_change_the_loss(tiny_model_dir):
    learner = build_learner(tiny_model_dir)
    cols = random_columns()
    last = cols["attention_mask"].sum(-1) - 1  # final token of every row
    cols["loss_mask"][np.arange(8), last] = 0
    module = learner.module[DEFAULT_MODULE_ID]

    def loss_of(columns):
        columns = {k: v.copy() for k, v in columns.items()}
        columns["ref_logp"] = learner.compute_reference_logprobs(columns)
        rows, params = grouped_rows(columns), loss_params(learner.config)
        columns["advantages"], _ = prepare_advantages(learner.config.loss, rows, params)
        tensors = {k: torch.as_tensor(v) for k, v in columns.items()}
        fwd = module.forward_train(tensors)
        return learner.compute_loss_for_module(
            module_id=DEFAULT_MODULE_ID, config=learner.config, batch=tensors, fwd_out=fwd
        ).item()

    changed = {k: v.copy() for k, v in cols.items()}
    changed["input_ids"][np.arange(8), last] = 7  # rewrite the masked final tokens
    assert loss_of(cols) == pytest.approx(loss_of(changed), rel=1e-6, abs=1e-7)


def test_engine_reference_skips_the_extra_pass_and_equals_learner_mode(tiny_model_dir):
    """`reference_logprobs="engine"`: log π_θi is the sampling log-probs, no reference forward
    pass. When those are the model's own (as after a weight sync), the update is the same."""
    cols = random_columns()
    exact = build_learner(tiny_model_dir)
    own = exact.compute_reference_logprobs(cols)
    cols["sample_logp"] = own * cols["response_mask"]  # what a synced engine returns
    grads = []
    for mode in ("learner", "engine"):
        learner = build_learner(tiny_model_dir, reference_logprobs=mode, grad_clip=None)
        if mode == "engine":

            def no_pass(*args, **kwargs):
                raise AssertionError("engine mode must not run the reference forward pass")

            learner.compute_reference_logprobs = no_pass
        learner.apply_gradients = lambda g: grads.append([v.clone() for v in g.values()])
        update(learner, cols)
    for a, b in zip(*grads, strict=True):
        assert (a - b).norm() <= 1e-4 * a.norm() + 1e-8


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.7},
        {"top_p": 0.9},
        {"max_response_tokens": 8, "partial_rollout_max_tokens": 4},
    ],
)
def test_engine_reference_refuses_modified_sampling(tiny_model_dir, fields):
    with pytest.raises(ValueError, match=r"`reference_logprobs` \('engine'\) needs temperature 1"):
        build_learner(tiny_model_dir, reference_logprobs="engine", **fields)
