"""Loss aggregation modes of the token-level loss (GRPO): hand-computed values, micro-batch
shares that add up to the minibatch's value exactly, and a learner whose update does not
depend on the micro-batch size in any mode. (TRL equivalence: test_comparison_losses.py.)"""

from __future__ import annotations

import pytest
import torch

from rllib_k15.core.losses import LossAggregation, aggregate_tokens, micro_batch_share

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("seq_mean_token_mean", (2.0 + 4.0) / 2),  # row means 2 and 4
        ("token_mean", (1 + 2 + 3 + 4) / 4),
        ("seq_mean_token_sum", (6.0 + 4.0) / 2),
    ],
)
def test_aggregation_by_hand(mode, expected):
    assert aggregate_tokens(VALUES, MASK, mode).item() == pytest.approx(expected)


def test_masked_values_never_count():
    poisoned = VALUES.clone()
    poisoned[1, 1:] = 1e6
    for mode in LossAggregation:
        assert aggregate_tokens(poisoned, MASK, mode) == aggregate_tokens(VALUES, MASK, mode)


@pytest.mark.parametrize("mode", list(LossAggregation))
def test_micro_batch_shares_recompose_the_minibatch_value(mode):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(7, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(7, 5, generator=g) > 0.4).long()
    mask[:, 0] = 1
    whole = aggregate_tokens(values, mask, mode)
    parts = [slice(0, 3), slice(3, 4), slice(4, 7)]
    recomposed = sum(
        micro_batch_share(mode, s.stop - s.start, 7, float(mask[s].sum()), float(mask.sum()))
        * aggregate_tokens(values[s], mask[s], mode)
        for s in parts
    )
    assert recomposed.item() == pytest.approx(whole.item(), rel=1e-12)


def _accumulated_gradients(model_dir, mode, micro_batch_size, monkeypatch=None, share=None):
    """The gradients one learner update accumulates over its micro-batches (captured where
    the optimizer would step: Adam's normalisation would blow float noise up to 1e-2)."""
    from support.learner_harness import build_learner, random_columns, update

    if share is not None:
        monkeypatch.setattr("rllib_k15.algorithm.learner.micro_batch_share", share)
    learner = build_learner(
        model_dir, loss="grpo", grpo_kl_beta=0.0, loss_aggregation=mode,
        micro_batch_size=micro_batch_size,
    )  # fmt: skip
    captured = {}
    lm = learner.module[next(iter(learner.module.keys()))].lm

    def capture() -> float:
        captured.update({n: p.grad.detach().clone() for n, p in lm.named_parameters()})
        return 0.0

    learner._step_optimizers = capture
    update(learner, random_columns(seed=3))
    return captured


def _max_relative_gap(a: dict, b: dict) -> float:
    scale = max(g.abs().max().item() for g in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


@pytest.mark.parametrize("mode", list(LossAggregation))
def test_the_accumulated_gradient_does_not_depend_on_the_micro_batch_size(tiny_model_dir, mode):
    whole = _accumulated_gradients(tiny_model_dir, mode, 8)
    split = _accumulated_gradients(tiny_model_dir, mode, 3)
    assert max(g.abs().max().item() for g in whole.values()) > 0
    assert _max_relative_gap(whole, split) < 1e-5


def test_row_shares_would_get_token_mean_wrong(tiny_model_dir, monkeypatch):
    """The control: weighing token_mean micro-batches by rows changes the gradient."""
    whole = _accumulated_gradients(tiny_model_dir, "token_mean", 8)
    by_rows = _accumulated_gradients(
        tiny_model_dir, "token_mean", 3, monkeypatch, share=lambda mode, r, n, t, tt: r / n
    )
    assert _max_relative_gap(whole, by_rows) > 1e-3


def test_sequence_losses_refuse_another_aggregation():
    from rllib_k15.algorithm.config import K15Config

    config = K15Config().environment("k15/Arithmetic-v0").training(loss_aggregation="token_mean")
    with pytest.raises(ValueError, match="`opmd` is sequence-level: choose `logprob_reduction`"):
        config.validate()
