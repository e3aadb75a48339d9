"""The SFT and DPO trainers on a tiny random Llama: the loss goes down, weights move."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from support.l2s_tiny import tiny_model

from rllib_k15.core.losses.dpo import DPO_LOSS, DPO_REWARD_ACCURACY, DPO_REWARD_MARGIN
from rllib_k15.long2short.dpo_train import DPOTrainConfig, evaluate_dpo, train_dpo
from rllib_k15.long2short.selection import PreferencePair, SFTExample
from rllib_k15.long2short.sft import (
    SFT_EPOCH_LOSSES,
    SFT_NUM_SKIPPED,
    SFT_STEPS,
    SFTConfig,
    evaluate_sft_loss,
    sft_loss,
    train_sft,
)

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


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> int:
    return sum(not torch.equal(before[n], p) for n, p in model.state_dict().items())


# --- SFT ---------------------------------------------------------------------------------


def test_sft_loss_is_token_mean_over_response_only():
    lp = torch.tensor([[0.0, -9.0, -1.0, -3.0], [0.0, -9.0, -2.0, 0.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]])
    loss, metrics = sft_loss(lp, mask)
    assert loss.item() == pytest.approx((1 + 3 + 2) / 3)
    assert metrics["sft/num_response_tokens"] == 3
    lp2 = lp.clone()
    lp2[:, 1] = -100.0  # prompt position: masked, must not matter
    assert sft_loss(lp2, mask)[0].item() == loss.item()


def test_train_sft_lowers_loss_and_changes_weights(tokenizer):
    model = tiny_model(0)
    before_weights = copy.deepcopy(model.state_dict())
    config = SFTConfig(epochs=4, lr=3e-3, batch_size=3, progress=False)
    loss_before = evaluate_sft_loss(model, tokenizer, SFT_DATA, config)
    metrics = train_sft(model, tokenizer, SFT_DATA, config)
    loss_after = evaluate_sft_loss(model, tokenizer, SFT_DATA, config)
    assert metrics[SFT_STEPS] == 4 * 2
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert metrics[SFT_EPOCH_LOSSES][-1] < metrics[SFT_EPOCH_LOSSES][0]
    assert _changed(before_weights, model) == len(before_weights)


def test_train_sft_bf16_autocast_also_learns(tokenizer):
    model = tiny_model(0)
    config = SFTConfig(epochs=3, lr=3e-3, batch_size=6, bf16=True, progress=False)
    loss_before = evaluate_sft_loss(model, tokenizer, SFT_DATA, config)
    train_sft(model, tokenizer, SFT_DATA, config)
    assert model.model.embed_tokens.weight.dtype == torch.float32  # fp32 master weights
    assert evaluate_sft_loss(model, tokenizer, SFT_DATA, config) < loss_before


def test_train_sft_skips_too_long_examples(tokenizer):
    data = SFT_DATA[:2] + [SFTExample("long", "q", "x" * 500, 500, 8, 1)]
    config = SFTConfig(epochs=1, batch_size=4, max_length=64, progress=False)
    assert train_sft(tiny_model(0), tokenizer, data, config)[SFT_NUM_SKIPPED] == 1
    with pytest.raises(ValueError, match="max_length"):
        train_sft(tiny_model(0), tokenizer, data[2:], config)


def test_train_sft_is_reproducible(tokenizer):
    config = SFTConfig(epochs=1, lr=1e-3, batch_size=2, progress=False)
    a, b = tiny_model(0), tiny_model(0)
    train_sft(a, tokenizer, SFT_DATA, config)
    train_sft(b, tokenizer, SFT_DATA, config)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


# --- DPO ---------------------------------------------------------------------------------


def test_train_dpo_lowers_loss_and_prefers_chosen(tokenizer):
    model = tiny_model(0)
    ref = copy.deepcopy(model).eval()
    ref_weights = copy.deepcopy(ref.state_dict())
    before_weights = copy.deepcopy(model.state_dict())
    config = DPOTrainConfig(beta=0.1, epochs=4, lr=2e-3, batch_size=2, progress=False)
    start = evaluate_dpo(model, ref, tokenizer, PAIRS, config)
    assert start[DPO_LOSS] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    metrics = train_dpo(model, ref, tokenizer, PAIRS, config)
    end = evaluate_dpo(model, ref, tokenizer, PAIRS, config)
    assert end[DPO_LOSS] < start[DPO_LOSS] - 0.1, (start, end)
    assert end[DPO_REWARD_ACCURACY] == 1.0 and end[DPO_REWARD_MARGIN] > 0
    assert metrics["dpo/steps"] == 4 * 2
    assert _changed(before_weights, model) > 0
    assert _changed(ref_weights, ref) == 0  # the reference stays frozen


def test_train_dpo_without_ref_model_uses_the_starting_model(tokenizer):
    model = tiny_model(0)
    initial = copy.deepcopy(model)
    config = DPOTrainConfig(beta=0.1, epochs=2, lr=2e-3, batch_size=4, progress=False)
    train_dpo(model, None, tokenizer, PAIRS, config)
    # measured against the starting weights, the trained policy now beats log 2
    assert evaluate_dpo(model, initial, tokenizer, PAIRS, config)[DPO_LOSS] < math.log(2)
