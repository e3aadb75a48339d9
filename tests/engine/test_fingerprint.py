"""Weights that are what they claim: after a sync the engine must hold what it was sent."""

import pytest
import torch

from rllib_k15.engine.fingerprint import WeightSyncError, check_synced, fingerprint, pick_names


def _names(model_dir):
    from rllib_k15.models import load_hf_model

    return list(load_hf_model(model_dir, dtype="float32").state_dict())


def test_the_fingerprinted_tensors_are_unfused_ones_of_the_first_and_last_layer(tiny_model_dir):
    picked = pick_names(_names(tiny_model_dir))
    assert "model.norm.weight" in picked
    assert "model.layers.0.mlp.down_proj.weight" in picked
    assert not any("q_proj" in n or "gate_proj" in n or "embed" in n for n in picked)


def test_a_changed_tensor_is_named_and_an_equal_one_passes():
    sent = {"a": torch.ones(3), "b": torch.arange(4.0)}
    held = {name: fingerprint(t) for name, t in sent.items()}
    assert check_synced(sent, held, torch.float32) == ["a", "b"]
    held["b"] = fingerprint(torch.arange(4.0) + 1e-3)
    with pytest.raises(WeightSyncError, match="b differ"):
        check_synced(sent, held, torch.float32)


@pytest.mark.slow
def test_vllm_reports_the_fingerprinted_tensors_under_their_hf_names(
    vllm_tiny_engine, tiny_model_dir
):
    from rllib_k15.models import load_hf_model

    state = load_hf_model(tiny_model_dir, dtype="float32").state_dict()
    names = pick_names(list(state))
    held = vllm_tiny_engine.weight_fingerprints(names)
    norms = [n for n in names if "norm" in n]
    assert set(norms) <= set(held)  # CPU: linear weights are repacked and not reported
    compared = check_synced({n: state[n] for n in names}, held, vllm_tiny_engine.torch_dtype)
    assert set(norms) <= set(compared)
    changed = {n: state[n] + 0.5 for n in norms}
    with pytest.raises(WeightSyncError):
        check_synced(changed, held, vllm_tiny_engine.torch_dtype)
