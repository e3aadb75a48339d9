"""The real training loop (RLlib Algorithm + EnvRunner + engine + Learner) learns.

Tiny random Llama, toy env (see support/toy_env.py): OPMD must raise the success rate within
a few iterations and change the parameters. The HF engine keeps this test fast; the vLLM
engine variant is marked slow (support/vllm_product_path.py, in a child process).

Precision: the engine samples in fp32 here. The learning test keeps the learner's "auto"
autocast, so it follows ``K15_PRECISION`` (CI runs the ``precision`` tests with both); the
tests that compare the engine's log-probs with the learner's (``logp_mismatch``) pin the
learner to fp32 as well — fp32 engine vs bf16-autocast learner differ by ~0.3 per token on
this peaked model, which is bf16 rounding, not a stale weight sync.
"""

import numpy as np
import pytest
import torch
from support import toy_env
from support.paths import support_command, support_env
from support.toy_training import learning_run_config, train_with_weights


@pytest.mark.precision
def test_opmd_raises_reward_on_toy_task(peaked_tiny_model_dir):
    config = learning_run_config("hf", peaked_tiny_model_dir)
    results, before, after = train_with_weights(config, iterations=4)
    accuracy = [r["k15"]["accuracy"] for r in results]
    assert np.mean(accuracy[-2:]) > accuracy[0] + 0.2, accuracy
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), "every parameter tensor should have moved"
    learners = [r["learners"]["default_policy"] for r in results]
    assert all(np.isfinite(lr["total_loss"]) for lr in learners)
    assert learners[0]["grad_norm"] > 0  # the first batch has groups with reward variance
    assert [r["learners"]["optimizer_resets"] for r in results] == [1] * len(results)


@pytest.mark.precision
def test_remote_env_runner_gets_the_new_weights(peaked_tiny_model_dir):
    """EnvRunner as a Ray actor: after each update its engine samples from the new policy,
    so the learner's reference log-probs match the engine's sampling log-probs."""
    from ray import cloudpickle
    from ray.tune.registry import register_env

    cloudpickle.register_pickle_by_value(toy_env)  # the actor cannot import the tests folder
    register_env(toy_env.ENV_ID, toy_env.make_first_letter_env)
    # fp32 learner and engine: the log-probs must agree to float rounding
    config = learning_run_config("hf", peaked_tiny_model_dir, autocast_bf16=False)
    config = config.env_runners(num_env_runners=1)
    results, before, after = train_with_weights(config, iterations=2)
    for result in results:
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_product_path_with_vllm_engine(peaked_tiny_model_dir):
    """The real vLLM engine inside the EnvRunner: sampling, in-place weight sync, learning.

    Runs in a child process: an in-process vLLM engine keeps process-global distributed
    state, and this test must not disturb the session's shared engine (tests/conftest.py).
    """
    import subprocess

    done = subprocess.run(
        support_command("vllm_product_path", peaked_tiny_model_dir),
        env=support_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PRODUCT PATH OK" in done.stdout
