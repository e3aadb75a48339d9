"""The one DeepSpeed config builder: what each setting turns into, and bad input named."""

from __future__ import annotations

import pytest

from rllib_k15.distributed.deepspeed_config import (
    DeepSpeedSettings,
    build_deepspeed_config,
    dist_backend,
    learner_setting_errors,
    resolve_bf16,
)


def _build(settings, **kw):
    kw = {"micro_batch_size": 4, "grad_clip": 1.0, "bf16": False, **kw}
    return build_deepspeed_config(settings, **kw)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_stage_and_caller_driven_accumulation(stage):
    config = _build({"zero_stage": stage})
    assert config["zero_optimization"]["stage"] == stage
    # the learner decides the boundary: every backward accumulates, step() reduces + updates
    assert config["managed_gradient_accumulation"] is False
    assert config["gradient_accumulation_steps"] == 1
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_clipping"] == 1.0
    assert ("stage3_param_persistence_threshold" in config["zero_optimization"]) == (stage == 3)
    assert ("reduce_bucket_size" in config["zero_optimization"]) == (stage >= 1)


def test_defaults_are_zero2_without_offload():
    config = _build({})
    zero = config["zero_optimization"]
    assert zero["stage"] == 2
    assert "offload_optimizer" not in zero and "offload_param" not in zero


def test_offload_options():
    zero = _build({"zero_stage": 3, "offload_optimizer": True, "offload_params": True})[
        "zero_optimization"
    ]
    assert zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"


def test_bf16_explicit_and_auto(monkeypatch):
    assert _build({}, bf16=True)["bf16"] == {"enabled": True}
    assert _build({}, bf16=False)["bf16"] == {"enabled": False}
    import rllib_k15.hardware as hw

    monkeypatch.setattr(hw, "preferred_dtype", lambda: "float32")  # e.g. AVX2-only CPU
    assert resolve_bf16("auto") is False
    assert (
        build_deepspeed_config({}, micro_batch_size=1, grad_clip=None)["bf16"]["enabled"] is False
    )
    monkeypatch.setattr(hw, "preferred_dtype", lambda: "bfloat16")  # GPU / AVX512-BF16
    assert build_deepspeed_config({}, micro_batch_size=1, grad_clip=None)["bf16"]["enabled"] is True


def test_no_clip_is_zero_and_extra_merges_last():
    config = _build(
        {"extra": {"zero_optimization": {"stage3_max_live_parameters": 100}, "seed": 3}},
        grad_clip=None,
    )
    assert config["gradient_clipping"] == 0.0
    assert config["zero_optimization"]["stage"] == 2  # kept: nested dicts merge key by key
    assert config["zero_optimization"]["stage3_max_live_parameters"] == 100
    assert config["seed"] == 3


def test_backend_follows_the_hardware():
    assert dist_backend(use_gpu=True) == "nccl"
    assert dist_backend(use_gpu=False) == "gloo"
    assert dist_backend() == "gloo"  # this CPU box


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"zero_stage": 4}, r"`deepspeed.zero_stage` \(4\)"),
        ({"zero_stage": "3"}, r"`deepspeed.zero_stage` \('3'\)"),
        ({"zero_stage": 0, "offload_optimizer": True}, r"offload_optimizer.*zero_stage"),
        ({"zero_stage": 2, "offload_params": True}, r"offload_params.*zero_stage` 3 \(got 2\)"),
        ({"bf16": "yes"}, r"`deepspeed.bf16` \('yes'\)"),
        ({"zero_stgae": 3}, r"unknown keys \['zero_stgae'\]"),
        ({"reduce_bucket_size": 0}, r"reduce_bucket_size` \(0\)"),
    ],
)
def test_bad_settings_name_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        DeepSpeedSettings.from_dict(settings)


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match=r"`micro_batch_size` \(0\)"):
        _build({}, micro_batch_size=0)
    with pytest.raises(ValueError, match=r"`grad_clip` \(-1\)"):
        _build({}, grad_clip=-1)


def test_settings_round_trip():
    settings = DeepSpeedSettings(zero_stage=3, extra={"a": 1})
    assert DeepSpeedSettings.from_dict(settings.to_dict()) == settings
    assert set(DeepSpeedSettings.field_docs()) == set(settings.to_dict())


def test_learner_setting_errors():
    ok = dict(num_learners=2, minibatch_size=16, grad_clip_by="global_norm")
    assert learner_setting_errors(None, **{**ok, "num_learners": 0}) == []  # off: no checks
    assert learner_setting_errors({"zero_stage": 3}, **ok) == []
    (msg,) = learner_setting_errors({}, **{**ok, "num_learners": 0})
    assert "`num_learners` (0) must be >= 1" in msg
    (msg,) = learner_setting_errors({}, **{**ok, "minibatch_size": 15})
    assert "`minibatch_size` (15) must be divisible by `num_learners` (2)" in msg
    (msg,) = learner_setting_errors({}, **{**ok, "grad_clip_by": "value"})
    assert "`grad_clip_by` ('value')" in msg


def test_k15config_selects_the_learner_and_validates(tiny_model_dir):
    from support import toy_env  # registers the env

    from rllib_k15 import K15Config
    from rllib_k15.algorithm.learner import K15TorchLearner
    from rllib_k15.distributed.deepspeed_learner import K15DeepSpeedLearner

    base = K15Config().environment(toy_env.ENV_ID).training(hf_model=str(tiny_model_dir))
    assert base.get_default_learner_class() is K15TorchLearner
    ds = base.copy().learners(num_learners=2).training(deepspeed={"zero_stage": 3})
    assert ds.get_default_learner_class() is K15DeepSpeedLearner
    ds.validate()
    bad = base.copy().training(deepspeed={"zero_stage": 5})
    with pytest.raises(ValueError, match=r"`deepspeed.zero_stage` \(5\)"):
        bad.validate()
