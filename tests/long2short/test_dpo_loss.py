"""The pure DPO loss: hand-computed values, a plain-loop reference, and TRL's DPOTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from rllib_k15.core.losses.dpo import (
    DPO_LOSS,
    DPO_REWARD_ACCURACY,
    DPO_REWARD_MARGIN,
    dpo_loss,
    sequence_logps,
)
from rllib_k15.core.sequences import token_logprobs


def test_hand_computed_value():
    # logit = 0.5 * ((-1 - -2) - (-3 - -2)) = 1  ->  loss = log(1 + e^-1)
    t = torch.tensor
    loss, m = dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert m[DPO_REWARD_MARGIN] == pytest.approx(1.0)
    assert m[DPO_REWARD_ACCURACY] == 1.0


def test_policy_equal_to_reference_gives_log2():
    x = torch.randn(5)
    y = torch.randn(5)
    loss, m = dpo_loss(x, y, x.clone(), y.clone(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert m[DPO_REWARD_ACCURACY] == 0.0  # ties are not counted as wins


def test_matches_plain_python_loop():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(7, generator=g) * 20 for _ in range(4))
    beta = 0.2
    expected = (
        sum(
            -math.log(1.0 / (1.0 + math.exp(-beta * ((a - c) - (b - d)))))
            for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True)
        )
        / 7
    )
    loss, _ = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # gradient descent raises log π(y_w)


def test_extreme_logits_stay_finite():
    t = torch.tensor
    loss, _ = dpo_loss(t([-1e4]), t([0.0]), t([0.0]), t([0.0]), beta=1.0)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(1e4)


def test_input_validation():
    t = torch.zeros
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(2), t(2), t(2), t(2), beta=0.0)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(t(2), t(2), t(2), t(3), beta=0.1)


def test_sequence_logps_sums_response_tokens_only():
    lp = torch.tensor([[0.0, -1.0, -2.0, -4.0], [0.0, -0.5, -0.25, -8.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    assert sequence_logps(lp, mask).tolist() == [-6.0, -0.75]


def test_equals_trl_dpo_trainer_sigmoid_loss(tmp_path):
    """Same models, same batch: our logps + dpo_loss equal TRL's DPOTrainer loss."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from support.l2s_tiny import tiny_model, tiny_tokenizer
    from trl import DPOConfig, DPOTrainer

    from rllib_k15.long2short.dpo_train import DPOTrainConfig, evaluate_dpo
    from rllib_k15.long2short.selection import PreferencePair

    rows = [
        {"prompt": "1+1=", "chosen": "2", "rejected": "three hundred"},
        {"prompt": "2+3=", "chosen": "5", "rejected": "I think it is 6"},
        {"prompt": "what is 7*6?", "chosen": "42", "rejected": "40"},
    ]
    beta = 0.3
    tokenizer = tiny_tokenizer()
    policy, ref = tiny_model(seed=0), tiny_model(seed=1)
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=beta,
        loss_type=["sigmoid"],
        per_device_train_batch_size=len(rows),
        precompute_ref_log_probs=False,
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    trainer = DPOTrainer(
        model=policy,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
        # (1) identical token tensors: our log-probs and loss on TRL's batch
        ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        logps = {}
        for name, model in (("policy", policy), ("ref", ref)):
            logits = model(input_ids=ids, attention_mask=attn).logits
            logps[name] = sequence_logps(token_logprobs(logits, ids), mask).chunk(2)
        ours, metrics = dpo_loss(*logps["policy"], *logps["ref"], beta=beta)
    assert ours.item() == pytest.approx(trl_loss, rel=1e-5, abs=1e-6)
    trl_margin = trainer._metrics["train"]["rewards/margins"][-1]
    assert metrics[DPO_REWARD_MARGIN] == pytest.approx(trl_margin, rel=1e-5, abs=1e-6)

    # (2) end to end from the texts: our tokenisation + packing give the same loss
    pairs = [
        PreferencePair("p", r["prompt"], r["chosen"], r["rejected"], 0, 0, False) for r in rows
    ]
    config = DPOTrainConfig(beta=beta, use_chat_template=False)
    ours_e2e = evaluate_dpo(policy, ref, tokenizer, pairs, config)[DPO_LOSS]
    assert ours_e2e == pytest.approx(trl_loss, rel=1e-5, abs=1e-6)
