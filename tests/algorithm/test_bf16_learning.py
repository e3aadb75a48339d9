"""bf16 engine + bf16 learner with small updates: the sampled policy must follow the learner.

The mechanism behind "the bf16 quickstart did not learn" (rllib_k15.core.rounding): weights
on the bf16 grid + updates below half a bf16 step = a bf16 engine that never changes under
round-to-nearest. These tests force bf16 on every machine (tiny model: seconds even where
bf16 is emulated) and check the weight sync and the learner's forward, not a tolerance.
"""

import contextlib

import numpy as np
import pytest
import torch
from support.toy_training import learning_config, policy_weights

pytestmark = pytest.mark.precision


@pytest.fixture(scope="module")
def grid_tiny_model_dir(tmp_path_factory, peaked_tiny_model_dir):
    """The peaked tiny Llama with every weight moved onto the bf16 grid (as a checkpoint
    stored in bf16 is), saved in fp32."""
    from rllib_k15.models import load_hf_model, load_tokenizer

    out = tmp_path_factory.mktemp("bf16-grid-tiny-llama")
    model = load_hf_model(peaked_tiny_model_dir, dtype="float32")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    model.save_pretrained(out)
    load_tokenizer(peaked_tiny_model_dir).save_pretrained(out)
    return out


def _algo(model_dir, rounding: str, lr: float = 1e-5):
    config = learning_config(
        model_dir,
        engine_options={"dtype": "bfloat16"},
        autocast_bf16=True,
        bf16_rounding=rounding,
        lr=lr,
        tau=0.1,
    )
    return config.build_algo()


def _engine_weights(algo) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().float().clone() for k, v in algo.env_runner.engine.model.state_dict().items()
    }


def _module(algo):
    return algo.local_learner.module["default_policy"].unwrapped()


@pytest.mark.parametrize("rounding", ["nearest", "dither"])
def test_the_bf16_engine_follows_sub_step_updates_only_with_dithered_sync(
    grid_tiny_model_dir, rounding
):
    algo = _algo(grid_tiny_model_dir, rounding)
    try:
        engine_before = _engine_weights(algo)
        master_before = policy_weights(algo)
        algo.train()
        engine_after = _engine_weights(algo)
        master_after = algo.local_learner.hf_state_dict()
        # the engine holds exactly the bf16 weights the learner sent for this version
        sent = _module(algo).engine_state_dict()
        assert all(torch.equal(engine_after[k], sent[k].float()) for k in sent)
    finally:
        algo.stop()
    keys = [k for k in master_before if master_before[k].dim() == 2]  # matmul weights
    master_delta = torch.cat([(master_after[k] - master_before[k]).flatten() for k in keys])
    engine_delta = torch.cat([(engine_after[k] - engine_before[k]).flatten() for k in keys])
    assert master_delta.abs().max() < 1e-4  # every update is far below a bf16 step here
    trained = master_delta != 0  # rows of tokens never seen get no gradient
    moved = torch.count_nonzero(engine_delta[trained]).item() / int(trained.sum())
    slope = (engine_delta @ master_delta / (master_delta @ master_delta)).item()
    if rounding == "nearest":
        assert abs(slope) < 0.3, slope
    else:
        # each trained element moves one bf16 step with P = |Δ|/step, so the projection of
        # the engine's change on the master's change has slope 1 in expectation; over
        # thousands of moved elements its spread is a few percent
        assert moved > 0.02, f"only {moved:.1%} of the engine's trained weights changed"
        assert 0.7 < slope < 1.3, slope


def test_the_learner_forward_sees_the_same_bf16_weights_as_the_engine(grid_tiny_model_dir):
    """Within an iteration the learner's bf16 forward reads the engine's bf16 weights, so
    the reference pass reproduces the engine's sampling log-probs up to kernel differences,
    and the log-prob gap does not grow with the version."""
    algo = _algo(grid_tiny_model_dir, "dither", lr=1e-5)
    try:
        gaps = [algo.train()["learners"]["logp_mismatch_mean_abs"] for _ in range(3)]
        module = _module(algo)
        assert module.rounding_version == 3
        used = module._rounded_parameters()
        sent = module.engine_state_dict()
        name = "model.layers.0.mlp.up_proj.weight"
        assert torch.equal(used[name].detach(), sent[name].float())
        # tied embeddings stay tied in what the engine gets
        if module.lm.config.tie_word_embeddings:
            assert torch.equal(sent["lm_head.weight"], sent["model.embed_tokens.weight"])
    finally:
        algo.stop()
    assert np.all(np.isfinite(gaps))
    assert max(gaps[1:]) < 3 * gaps[0] + 1e-3, gaps


def test_straight_through_gradient_reaches_the_fp32_master(grid_tiny_model_dir):
    from rllib_k15.algorithm.rl_module import CausalLMRLModule

    module = CausalLMRLModule(
        observation_space=None, action_space=None, inference_only=False, learner_only=False,
        model_config={"model_path": str(grid_tiny_model_dir), "autocast_bf16": True,
                      "bf16_dither": True, "engine_dtype": "bfloat16"},
    )  # fmt: skip
    module.advance_rounding()
    ids = torch.randint(0, 100, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    module._forward_train(batch)["token_logp"].sum().backward()
    grads = [p.grad for p in module.lm.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_autocast_follows_the_device_of_the_parameters(grid_tiny_model_dir, monkeypatch):
    """A CUDA learner must autocast on "cuda" (on "cpu" its matmuls would silently stay
    fp32); the parameters' device decides, checked here without a GPU."""
    from rllib_k15.algorithm import rl_module

    assert rl_module.autocast_device(torch.nn.Linear(2, 2, device="meta")) == "meta"
    seen = []

    def recording(device_type, *args, **kwargs):  # a CUDA autocast cannot run here
        seen.append(device_type)
        return contextlib.nullcontext()

    monkeypatch.setattr(rl_module.torch, "autocast", recording)
    module = rl_module.CausalLMRLModule(
        observation_space=None, action_space=None, inference_only=False, learner_only=False,
        model_config={"model_path": str(grid_tiny_model_dir), "autocast_bf16": True},
    )  # fmt: skip
    monkeypatch.setattr(rl_module, "autocast_device", lambda model: "cuda")  # as on a GPU
    ids = torch.randint(0, 100, (1, 4))
    module._forward_train({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert seen == ["cuda"]


def test_bf16_parameters_checkpoint_as_fp32_numpy(grid_tiny_model_dir):
    """DeepSpeed's bf16 mode keeps bf16 parameters; a checkpoint must still be writable
    (numpy has no bf16) and load back into them."""
    from rllib_k15.algorithm.rl_module import ROUNDING_VERSION, CausalLMRLModule

    module = CausalLMRLModule(
        observation_space=None, action_space=None, inference_only=False, learner_only=False,
        model_config={"model_path": str(grid_tiny_model_dir), "dtype": "bfloat16"},
    )  # fmt: skip
    state = module.get_state()
    arrays = {k: v for k, v in state.items() if k != ROUNDING_VERSION}
    assert arrays and all(v.dtype == np.float32 for v in arrays.values() if v.dtype.kind == "f")
    before = {k: v.clone() for k, v in module.lm.state_dict().items()}
    module.set_state(state)
    assert all(torch.equal(before[k], v) for k, v in module.lm.state_dict().items())
