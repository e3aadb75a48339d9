"""Two DeepSpeed learners train the tiny model through the real K15MirrorDescent algorithm.

ZeRO-2 runs on a two-node Ray cluster on this machine (one learner per node: the multi-node
mechanics), ZeRO-3 on one node. Both check, after every iteration: the losses are finite,
both learners hold the same full parameters (fetched from each learner actor), the weights
moved, and the EnvRunner's engine samples from them (reference log-probs of the learner
match the engine's sampling log-probs) — then save, restore and `k15 export`.

Exact numerics (identical learners, log-probs equal to the fp32 engine's to 1e-3, the exported
weights bit for bit): DeepSpeed runs in fp32 (``bf16=False``, and the learner's autocast off)
on every machine; "auto" would pick bf16 on bf16-capable CPUs (log-prob gap ~2e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from support.toy_training import toy_config

from rllib_k15 import K15Config
from rllib_k15.distributed.deepspeed_learner import K15DeepSpeedLearner
from rllib_k15.runs.export import export_checkpoint


def _config(model_dir, zero_stage: int) -> K15Config:
    config = toy_config(
        model_dir,
        env_config={"size": 32},
        samples_per_problem=4,
        problems_per_iteration=4,
        max_response_tokens=1,
        minibatch_size=8,  # global: 4 rows per learner per optimizer step
        micro_batch_size=2,  # 2 accumulated backward passes per step
        lr=1e-3,
        autocast_bf16=False,
        deepspeed={"zero_stage": zero_stage, "bf16": False},  # fp32: see the docstring
    )
    return config.learners(num_learners=2)


def _full_weights(algo) -> list[dict[str, torch.Tensor]]:
    """Every learner's full parameters (a collective under ZeRO-3: all learners at once)."""
    group = algo.learner_group
    return group._get_results(group.foreach_learner(lambda lrn: lrn.full_hf_state_dict()))


def _assert_identical(weights: list[dict[str, torch.Tensor]]) -> None:
    first, *others = weights
    for other in others:
        assert other.keys() == first.keys()
        for name in first:
            assert torch.equal(first[name], other[name]), f"learners differ in {name}"


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


def _train_check_restore(algo_config: K15Config, tmp_path, check_placement=None) -> None:
    algo = algo_config.build_algo()
    try:
        group = algo.learner_group
        kinds = group._get_results(
            group.foreach_learner(lambda lrn: isinstance(lrn, K15DeepSpeedLearner))
        )
        assert kinds == [True, True]
        if check_placement is not None:
            check_placement(group)
        before = _full_weights(algo)
        _assert_identical(before)  # DeepSpeed broadcasts rank 0's initial weights
        initial = before[0]
        for _ in range(2):
            result = algo.train()
            stats = result["learners"]["default_policy"]
            assert np.isfinite(stats["total_loss"]) and np.isfinite(stats["grad_norm"])
            assert 0.0 <= result["k15"]["accuracy"] <= 1.0  # the reward metric is there
            after = _full_weights(algo)
            _assert_identical(after)
            assert any(not torch.equal(before[0][k], after[0][k]) for k in after[0])
            before = after
        # the engine sampled iteration 2 from the weights synced after iteration 1
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3
        saved = after[0]
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()

    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.training_iteration == 2
        for weights in _full_weights(restored):  # every shard restored on every learner
            for name, value in saved.items():
                assert torch.equal(weights[name], value), name
        result = restored.train()
        assert np.isfinite(result["learners"]["default_policy"]["total_loss"])
        # training continued FROM the restored weights (ZeRO's fp32 master copy was
        # refreshed too): one more iteration lands nearer to them than the start was
        continued = _full_weights(restored)[0]
        assert _distance(continued, saved) < _distance(saved, initial)
    finally:
        restored.stop()

    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", dtype="float32")
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name, value in saved.items():
        np.testing.assert_array_equal(exported[name].numpy(), value.numpy())


@pytest.mark.slow  # ~3.5 min each on the shared 2 cores (4 learner actors start)
def test_zero2_learners_on_two_nodes(ray_two_nodes, tiny_model_dir, tmp_path):
    def one_learner_per_node(group):
        nodes = group._get_results(
            group.foreach_learner(lambda lrn: ray.get_runtime_context().get_node_id())
        )
        assert len(set(nodes)) == 2, "1 CPU per node and 1 per learner: one learner per node"

    _train_check_restore(_config(tiny_model_dir, 2), tmp_path, one_learner_per_node)


@pytest.mark.slow
def test_zero3_learners_shard_and_sync(ray_one_node, tiny_model_dir, tmp_path):
    _train_check_restore(_config(tiny_model_dir, 3), tmp_path)
