"""The VLM under two DeepSpeed ZeRO-3 learners: image tensors reach every learner's
forward, the sharded vision tower trains, and the engine samples from the synced weights.

fp32 learners and engine (as in tests/distributed/test_deepspeed_learners.py): the log-prob
check compares them exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import toy_env
from support.toy_training import toy_config

from rllib_k15.algorithm.columns import ATTENTION_MASK, INPUT_IDS, RESPONSE_MASK
from rllib_k15.distributed.deepspeed_learner import idle_forward_row


def test_idle_forward_row_carries_the_image_tensors():
    columns = {
        INPUT_IDS: np.arange(6).reshape(2, 3),
        ATTENTION_MASK: np.ones((2, 3), dtype=np.int64),
        RESPONSE_MASK: np.array([[0, 1, 1], [0, 0, 1]]),
        "image_pixel_values": np.zeros((2, 1, 3, 4, 4), dtype=np.float32),
        "image_pixel_attention_mask": np.ones((2, 1, 4, 4), dtype=bool),
        "advantages": np.array([1.0, -1.0]),  # not a forward input
    }
    row = idle_forward_row(columns)
    assert set(row) == {INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK, "image_pixel_values",
                        "image_pixel_attention_mask"}  # fmt: skip
    assert all(isinstance(v, torch.Tensor) and v.shape[0] == 1 for v in row.values())
    assert row[INPUT_IDS].tolist() == [[0, 1, 2]]


@pytest.mark.slow
def test_zero3_learners_train_the_vlm(tiny_vlm_dir, tmp_path):
    import ray

    from rllib_k15.distributed.deepspeed_learner import K15DeepSpeedLearner

    if ray.is_initialized():
        ray.shutdown()
    ray.init(include_dashboard=False, num_cpus=4, log_to_driver=False)
    config = toy_config(
        tiny_vlm_dir, env_id=toy_env.IMAGE_ENV_ID, env_config={"size": 16},
        engine="vllm", engine_options={"dtype": "float32", "kv_cache_gib": 0.1,
                                       "max_model_len": 512, "enforce_eager": True},
        samples_per_problem=4, problems_per_iteration=4, max_response_tokens=4,
        minibatch_size=8, micro_batch_size=2, lr=1e-3, autocast_bf16=False,
        deepspeed={"zero_stage": 3, "bf16": False},
    ).learners(num_learners=2)  # fmt: skip
    algo = config.build_algo()
    try:
        group = algo.learner_group

        def full(lrn):
            assert isinstance(lrn, K15DeepSpeedLearner)
            return lrn.full_hf_state_dict()

        before = group._get_results(group.foreach_learner(full))
        for _ in range(2):
            result = algo.train()
            assert np.isfinite(result["learners"]["default_policy"]["total_loss"])
        after = group._get_results(group.foreach_learner(full))
        for name in after[0]:  # the learners agree on every parameter
            assert torch.equal(after[0][name], after[1][name]), name
        moved = {
            part: any(
                not torch.equal(before[0][k], after[0][k]) for k in after[0] if k.startswith(prefix)
            )
            for part, prefix in (("vision", "model.vision_model."),
                                 ("connector", "model.connector."),
                                 ("language", "model.text_model."))
        }  # fmt: skip
        assert all(moved.values()), moved
        # iteration 2 was sampled by an engine holding iteration 1's weights, images included
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3
    finally:
        algo.stop()
        ray.shutdown()
