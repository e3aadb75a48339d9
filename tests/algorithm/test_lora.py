"""LoRA through peft: only adapters train, the engine and `k15 export` get merged weights
under the plain HF names (checked against peft's own merge), bad settings are refused."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from support.learner_harness import build_learner, random_columns, update

from rllib_k15.algorithm.config import K15Config
from rllib_k15.algorithm.lora import apply_lora, lora_errors, merged_hf_state_dict
from rllib_k15.models import load_hf_model

SPEC = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def _lm(learner):
    return learner.module[next(iter(learner.module.keys()))].lm


def test_merged_weights_equal_peft_merge_under_plain_names(tiny_model_dir):
    base = load_hf_model(tiny_model_dir, dtype="float32")
    plain_names = set(base.state_dict())
    model = apply_lora(base, SPEC)
    with torch.no_grad():  # a trained adapter: B != 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    ours = merged_hf_state_dict(model)
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(ours) == plain_names == set(reference)
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-6, atol=1e-6)
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"],
                           load_hf_model(tiny_model_dir, dtype="float32")
                           .state_dict()["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_only_the_adapters_train(tiny_model_dir):
    learner = build_learner(tiny_model_dir, lora=SPEC)
    lm = _lm(learner)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    total = sum(p.numel() for p in lm.parameters())
    assert sum(p.numel() for p in lm.parameters() if p.requires_grad) < 0.05 * total
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    merged_before = learner.module[next(iter(learner.module.keys()))].hf_state_dict()
    update(learner, random_columns(seed=0))
    after = dict(lm.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)
    assert any(not torch.equal(before[n], after[n]) for n in trainable if "lora_B" in n)
    merged = learner.module[next(iter(learner.module.keys()))].hf_state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], merged_before[q])  # the policy the engine gets moved
    k = "model.layers.0.self_attn.k_proj.weight"  # not a target: untouched
    assert torch.equal(merged[k], merged_before[k])


def test_a_lora_run_syncs_merged_weights_and_exports_them(peaked_tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from support.toy_training import learning_run_config

    from rllib_k15.runs.export import export_checkpoint

    algo = learning_run_config("hf", peaked_tiny_model_dir, lora=SPEC, lr=1e-3).build_algo()
    try:
        algo.train()
        merged = algo.local_learner.hf_state_dict()
        engine = algo.env_runner.engine.model.state_dict()
        for name, tensor in engine.items():  # the engine holds the merged policy
            torch.testing.assert_close(tensor, merged[name], rtol=1e-6, atol=1e-6)
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", dtype="float32", adapter=True)
    exported = load_file(out / "model.safetensors")
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, merged[name], rtol=1e-6, atol=1e-6)
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rank": 4}, "unknown keys \\['rank'\\]"),
        ({"r": 0}, "`lora.r` \\(0\\) must be an integer >= 1"),
        ({"r": 4, "dropout": 1.5}, "`lora.dropout`"),
        ("yes", "must be a mapping"),
    ],
)
def test_bad_lora_settings_are_named(spec, message):
    assert any(re.search(message, e) for e in lora_errors(spec)), lora_errors(spec)


def test_lora_with_deepspeed_is_refused():
    config = (
        K15Config()
        .environment("k15/Arithmetic-v0")
        .training(lora={"r": 4}, deepspeed={"zero_stage": 2})
    )
    with pytest.raises(ValueError, match="`lora` does not work with `deepspeed`"):
        config.validate()
