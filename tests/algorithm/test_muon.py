"""`optimizer="muon"`: torch.optim.Muon on the 2-D hidden weights (orthogonalised updates,
RMS matched to AdamW), AdamW on the rest, reset per iteration like Adam, kept in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.learner_harness import build_learner, random_columns, update

from rllib_k15.algorithm.config import K15Config
from rllib_k15.algorithm.learner import muon_param_split
from rllib_k15.algorithm.muon import newton_schulz_dtype

LR = 1e-3  # build_learner's


def _lm(learner):
    return learner.module[next(iter(learner.module.keys()))].lm


def test_matrices_go_to_muon_embeddings_and_norms_to_adamw(tiny_model_dir):
    learner = build_learner(tiny_model_dir, optimizer="muon")
    named = dict(_lm(learner).named_parameters())
    muon, adamw = muon_param_split(named.items())
    name_of = {id(p): n for n, p in named.items()}
    muon_names = {name_of[id(p)] for p in muon}
    adamw_names = {name_of[id(p)] for p in adamw}
    assert len(muon_names) == 2 * 7  # q k v o gate up down per layer
    assert all(n.endswith(".weight") and "layers." in n and "norm" not in n for n in muon_names)
    assert "model.embed_tokens.weight" in adamw_names  # tied with the head in this model
    assert all("norm" in n or "embed" in n for n in adamw_names)
    assert len(muon_names) + len(adamw_names) == len(named)


def _first_step_spectra(model_dir, optimizer):
    """(shape, singular values of ΔW) of every Muon-eligible matrix after one update."""
    learner = build_learner(model_dir, optimizer=optimizer, weight_decay=0.0)
    lm = _lm(learner)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    update(learner, random_columns(seed=1))
    muon, _ = muon_param_split(lm.named_parameters())
    eligible = {id(p) for p in muon}
    return {
        n: (tuple(p.shape), torch.linalg.svdvals((p.detach() - before[n]).double()))
        for n, p in lm.named_parameters()
        if id(p) in eligible
    }


def test_a_muon_step_is_orthogonalised_with_adamw_matched_scale(tiny_model_dir):
    """Muon's step has a flat top spectrum (Newton-Schulz pushes the singular values of the
    gradient's strong directions towards 1; AdamW's first step, the control, falls off at
    once), and its size is Kimi's RMS match: 0.2 · lr · sqrt(max(A, B)) times Newton-Schulz's
    top value (~1.2). (The tail stays small where the small-batch gradient has low rank.)"""
    for name, (shape, sigma) in _first_step_spectra(tiny_model_dir, "muon").items():
        assert (sigma[7] / sigma[0]).item() > 0.88, name
        assert 0.8 < (sigma[0] / (0.2 * LR * max(shape) ** 0.5)).item() < 1.5, name
    adamw = _first_step_spectra(tiny_model_dir, "adamw")
    assert all((s[7] / s[0]).item() < 0.85 for _, s in adamw.values())


def test_the_per_iteration_reset_clears_muon_too(tiny_model_dir):
    learner = build_learner(tiny_model_dir, optimizer="muon")
    update(learner, random_columns(seed=2))
    optimizers = {k.rsplit("_", 1)[-1]: opt for k, opt in learner._named_optimizers.items()}
    assert set(optimizers) == {"muon", "adamw"}
    assert len(optimizers["muon"].state) > 0
    learner.reset_optimizer_state()
    assert all(len(opt.state) == 0 for opt in optimizers.values())


def test_muon_state_round_trips_through_a_checkpoint(peaked_tiny_model_dir, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm
    from support.toy_training import learning_run_config

    config = learning_run_config(
        "hf", peaked_tiny_model_dir, optimizer="muon", reset_optimizer_each_iteration=False
    )
    algo = config.build_algo()
    try:
        algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        saved = algo.local_learner._get_optimizer_state()
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        got = restored.local_learner._get_optimizer_state()
    finally:
        restored.stop()
    assert set(saved) == set(got) and any(key.endswith("_muon") for key in saved)
    muon_state = next(v for k, v in saved.items() if k.endswith("_muon"))["state"]["state"]
    assert muon_state  # momentum buffers were saved, not an empty optimizer
    for key in saved:
        for pid, state in saved[key]["state"]["state"].items():
            for field, value in state.items():
                np.testing.assert_array_equal(value, got[key]["state"]["state"][pid][field])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "sgd"}, "must be 'adamw' or 'muon'"),
        ({"optimizer": "muon", "deepspeed": {"zero_stage": 2}}, "does not work with `deepspeed`"),
        ({"optimizer": "muon", "muon_update_rms": 0}, "`muon_update_rms` \\(0\\) must be"),
    ],
)
def test_config_rejects_what_muon_cannot_do(kwargs, message):
    config = K15Config().environment("k15/Arithmetic-v0").training(**kwargs)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_muon_update_rms_scales_only_the_muon_step(tiny_model_dir):
    """`muon_update_rms: 1.0` makes Muon's step 5x the default's (RMS 1.0 vs 0.2 x lr), the
    AdamW groups (embeddings, norms) unchanged; the scheduler keeps the scaled lr."""
    steps = {}
    for rms in (0.2, 1.0):
        learner = build_learner(tiny_model_dir, optimizer="muon", weight_decay=0.0,
                                muon_update_rms=rms)  # fmt: skip
        lm = _lm(learner)
        before = {n: p.detach().clone() for n, p in lm.named_parameters()}
        update(learner, random_columns(seed=1))
        update(learner, random_columns(seed=2))  # a second step: after RLlib's lr update
        steps[rms] = {n: (p.detach() - before[n]).double() for n, p in lm.named_parameters()}
        optimizers = {k.rsplit("_", 1)[-1]: o for k, o in learner._named_optimizers.items()}
        assert optimizers["muon"].param_groups[0]["lr"] == pytest.approx(LR * rms / 0.2)
        assert optimizers["adamw"].param_groups[0]["lr"] == pytest.approx(LR)
        # Newton-Schulz in bf16 only where bf16 is native (else fp32: rllib_k15.algorithm.muon)
        assert optimizers["muon"].ns_dtype == newton_schulz_dtype("cpu")
    muon, _ = muon_param_split(_lm(learner).named_parameters())
    muon_names = {n for n, p in _lm(learner).named_parameters() if any(p is q for q in muon)}
    for name, default_step in steps[0.2].items():
        rms_default = default_step.pow(2).mean().sqrt().item()
        rms_scaled = steps[1.0][name].pow(2).mean().sqrt().item()
        if name in muon_names:
            assert rms_scaled / rms_default == pytest.approx(5.0, rel=0.25), name
        else:
            assert rms_scaled / rms_default == pytest.approx(1.0, rel=0.25), name


def test_muon_lr_scales_a_schedule_too():
    from rllib_k15.algorithm.muon import muon_lr

    assert muon_lr(1e-5, 1.0) == pytest.approx(5e-5)
    assert muon_lr([[0, 1e-4], [100, 1e-5]], 0.4) == [
        [0, pytest.approx(2e-4)],
        [100, pytest.approx(2e-5)],
    ]
