"""The offline trainers on ray.train.torch.TorchTrainer: 2 workers, DeepSpeed ZeRO, the same
``train_sft`` / ``train_dpo`` loops and config builder as everywhere else."""

from __future__ import annotations

import math

import pytest
from support.l2s_tiny import save_tiny

from rllib_k15.core.losses.dpo import DPO_LOSS
from rllib_k15.distributed.offline import distributed_dpo, distributed_sft, equal_shard
from rllib_k15.long2short.dpo_train import DPOTrainConfig, evaluate_dpo
from rllib_k15.long2short.selection import PreferencePair, SFTExample
from rllib_k15.long2short.sft import SFT_EPOCH_LOSSES, SFT_STEPS, SFTConfig, evaluate_sft_loss
from rllib_k15.long2short.training import load_for_training

SFT_DATA = [
    SFTExample(f"p{i}", f"{a}+{b}=?", f"{a + b}", 2, 8, 1)
    for i, (a, b) in enumerate([(1, 2), (3, 4), (2, 2), (5, 1), (0, 7), (4, 4)])
]
PAIRS = [
    PreferencePair(
        f"p{i}", f"{a}+{b}=?", f"{a + b}", f"Let me think. {a}+{b} is {a + b + 1}", 2, 20, False
    )
    for i, (a, b) in enumerate([(1, 2), (3, 4), (2, 2), (5, 1)])
]


@pytest.mark.parametrize(
    "n,world,expected",
    [
        (6, 2, [[0, 2, 4], [1, 3, 5]]),  # even split
        (5, 2, [[0, 2, 4], [1, 3, 0]]),  # last rank padded by wrap-around
        (1, 3, [[0], [0], [0]]),  # fewer items than ranks: everyone gets the item
    ],
)
def test_equal_shard(n, world, expected):
    assert [equal_shard(list(range(n)), r, world) for r in range(world)] == expected


def test_equal_shard_rejects_empty_data():
    with pytest.raises(ValueError, match="empty"):
        equal_shard([], 0, 2)


def test_sft_two_workers_zero2_lowers_loss(ray_one_node, tmp_path):
    model_dir = save_tiny(tmp_path / "tiny")
    config = SFTConfig(epochs=4, lr=3e-3, batch_size=2, progress=False)  # 1 row per worker
    model, tokenizer, _ = load_for_training(model_dir)
    loss_before = evaluate_sft_loss(model, tokenizer, SFT_DATA, config)

    metrics = distributed_sft(
        model_dir,
        SFT_DATA,
        config,
        tmp_path / "sft",
        num_workers=2,
        deepspeed={"zero_stage": 2},
        storage_path=tmp_path / "ray_train",
    )
    assert metrics[SFT_STEPS] == 4 * 3  # 3 rows per worker, 1 per step, 4 epochs
    assert metrics[SFT_EPOCH_LOSSES][-1] < metrics[SFT_EPOCH_LOSSES][0]
    trained, tokenizer, _ = load_for_training(tmp_path / "sft")  # a plain HF directory
    loss_after = evaluate_sft_loss(trained, tokenizer, SFT_DATA, config)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)


def test_dpo_two_workers_zero3_prefers_chosen(ray_one_node, tmp_path):
    model_dir = save_tiny(tmp_path / "tiny")
    config = DPOTrainConfig(beta=0.1, epochs=4, lr=2e-3, batch_size=2, progress=False)
    distributed_dpo(
        model_dir,
        PAIRS,
        config,
        tmp_path / "dpo",
        num_workers=2,
        deepspeed={"zero_stage": 3},
        storage_path=tmp_path / "ray_train",
    )
    start, tokenizer, _ = load_for_training(model_dir)
    trained, _, _ = load_for_training(tmp_path / "dpo")
    # measured against the starting weights, the trained policy now beats log 2
    assert evaluate_dpo(trained, start, tokenizer, PAIRS, config)[DPO_LOSS] < math.log(2) - 0.05
