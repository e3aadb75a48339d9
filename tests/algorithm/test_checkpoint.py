"""Checkpoints restore exactly (weights, iteration, problem buffer) and export to plain HF."""

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from support.toy_training import learning_run_config, policy_weights

from rllib_k15.runs.export import export_checkpoint


def test_save_restore_and_export(peaked_tiny_model_dir, tmp_path):
    algo = learning_run_config("hf", peaked_tiny_model_dir).build_algo()
    try:
        algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        weights = policy_weights(algo)
        buffer_state = algo.problem_buffer.get_state()
        next_problems = algo.problem_buffer.sample(8, iteration=1)
    finally:
        algo.stop()

    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.training_iteration == 1
        got = restored.local_learner.hf_state_dict()
        assert all(torch.equal(weights[k], got[k]) for k in weights)
        assert restored.problem_buffer.get_state() == buffer_state
        # the restored sampler continues exactly where the saved one was
        assert restored.problem_buffer.sample(8, iteration=1) == next_problems
    finally:
        restored.stop()

    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", dtype="float32")
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name, value in weights.items():
        np.testing.assert_array_equal(exported[name].numpy(), value.numpy())
    assert (out / "tokenizer_config.json").is_file()
