"""GRPO, ReST and O1-Pruner: hand-computed values, gradient directions, TRL equivalence."""

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rllib_k15.core.losses import (
    GroupedRows,
    LossInputs,
    LossParams,
    LossType,
    compute_policy_loss,
    grpo_loss,
    grpo_prepare,
    masked_row_mean,
    needs_initial_reference,
    o1_pruner_loss,
    prepare_advantages,
    register_loss,
    registered_losses,
    rest_loss,
)
from rllib_k15.core.rewards import (
    grpo_advantages,
    length_harmonizing_reward,
    reference_statistics,
    rest_fit_weights,
)

LN = math.log


def t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def _rows(rewards, group_ids, correct=None, lengths=None, **kw):
    n = len(rewards)
    return GroupedRows(
        rewards=np.asarray(rewards, float),
        baselines=np.zeros(n),
        group_ids=np.asarray(group_ids),
        lengths=np.asarray(lengths if lengths is not None else [10] * n),
        correct=np.asarray(correct if correct is not None else [r > 0 for r in rewards]),
        **kw,
    )


# ----------------------------------------------------------------------------- registry
def test_every_loss_is_registered_once():
    for name in ("grpo", "rest", "o1_pruner"):
        with pytest.raises(ValueError, match="already registered"):
            register_loss(name, prepare=grpo_prepare)(grpo_loss)
    assert {t.value for t in LossType} == {"opmd", "grpo", "rest", "o1_pruner"}
    assert sorted(registered_losses()) == sorted(t.value for t in LossType)


def test_only_grpo_with_positive_beta_needs_the_initial_model():
    assert needs_initial_reference("grpo", LossParams(kl_beta=0.04))
    assert not needs_initial_reference("grpo", LossParams(kl_beta=0.0))
    for name in ("opmd", "rest", "o1_pruner"):
        assert not needs_initial_reference(name, LossParams(kl_beta=0.04))


def test_opmd_rows_get_reward_minus_baseline():
    rows = GroupedRows(
        rewards=np.array([1.0, 0.0]),
        baselines=np.array([0.5, 0.5]),
        group_ids=np.array([0, 0]),
        lengths=np.array([3, 4]),
        correct=np.array([True, False]),
    )
    adv, _ = prepare_advantages("opmd", rows, LossParams())
    np.testing.assert_allclose(adv, [0.5, -0.5])
    assert adv.dtype == np.float32


# ----------------------------------------------------------------------------- GRPO
def test_grpo_advantages_hand_computed():
    # group 0: r = [1, 0, 0, 1], mean 0.5, Bessel std sqrt(1/3); group 1 has no variance
    adv = grpo_advantages([1, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1])
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    np.testing.assert_allclose(adv, [a, -a, -a, a, 0, 0], rtol=1e-12)
    assert grpo_advantages([1.0], [7])[0] == 0.0  # a lone response has no group to compare
    # interleaved groups are the same as contiguous ones
    b = 0.5 / (math.sqrt(0.5) + 1e-4)  # rows 0, 2 form group 0: r = [1, 0]
    np.testing.assert_allclose(grpo_advantages([1, 1, 0, 1], [0, 1, 0, 1]), [b, 0, -b, 0])


def _grpo_case():
    """2 rows × 3 tokens; ratios 1.5, 0.5 (row 0) and 1.1 (row 1); A = [1, −2]."""
    logp = t([[0.0, LN(1.5) - 1.0, LN(0.5) - 2.0], [0.0, LN(1.1) - 0.5, -9.0]], grad=True)
    old = t([[0.0, -1.0, -2.0], [0.0, -0.5, -3.0]])
    init = logp.detach() + t([[0.0, LN(2.0), 0.0], [0.0, -LN(2.0), 5.0]])
    mask = t([[0, 1, 1], [0, 1, 0]])
    inputs = LossInputs(
        logp=t([0.0, 0.0]), ref_logp=t([0.0, 0.0]), advantages=t([1.0, -2.0]), token_logp=logp,
        token_ref_logp=old, token_init_logp=init, token_mask=mask,
    )  # fmt: skip
    return inputs, logp


def test_grpo_loss_hand_computed():
    inputs, logp = _grpo_case()
    loss, m = grpo_loss(inputs, LossParams(clip_eps=0.2, kl_beta=0.1))
    # pg: row0 = (−min(1.5,1.2) − min(0.5,0.8))/2 = −0.85; row1 = −min(−2.2,−2.2) = 2.2
    assert m["pg_loss"].item() == pytest.approx((-0.85 + 2.2) / 2)
    # k3 with δ = log π_init − log π_θ: row0 (e^{ln2} − ln2 − 1 + 0)/2, row1 e^{−ln2} + ln2 − 1
    kl = ((1 - LN(2)) / 2 + (LN(2) - 0.5)) / 2
    assert m["kl_init"].item() == pytest.approx(kl)
    assert loss.item() == pytest.approx(0.675 + 0.1 * kl)
    assert m["clip_frac"].item() == pytest.approx(1 / 3)  # only row0 token 1 (ratio 1.5, A>0)
    assert m["ratio_max"].item() == pytest.approx(1.5)
    # gradient per token: clipped token 0 from pg; −ρA/(|y|·B) elsewhere; β(1 − e^δ)/(|y|·B)
    (grad,) = torch.autograd.grad(loss, logp)
    expected = [[0, -0.1 / 4, -0.5 / 4], [0, 2.2 / 2 + 0.1 * 0.5 / 2, 0]]
    torch.testing.assert_close(grad, t(expected))


def test_grpo_without_beta_ignores_the_initial_model_and_needs_none():
    inputs, _ = _grpo_case()
    loss, _ = grpo_loss(inputs, LossParams(clip_eps=0.2, kl_beta=0.0))
    assert loss.item() == pytest.approx(0.675)
    no_init = LossInputs(**{**inputs.__dict__, "token_init_logp": None})
    assert grpo_loss(no_init, LossParams(kl_beta=0.0))[0].item() == pytest.approx(0.675)
    with pytest.raises(ValueError, match="token_init_logp"):
        grpo_loss(no_init, LossParams(kl_beta=0.1))


def test_grpo_at_the_sampling_policy_is_the_policy_gradient():
    """ratio = 1 at the iteration start: ∇L = −Â_j/(|y_j| B) per token, i.e. a good
    response is pushed up and a bad one down (the negative gradient ReST lacks)."""
    logp = t([[-1.0, -2.0], [-0.5, -0.7]], grad=True)
    inputs = LossInputs(
        logp=t([0.0, 0.0]), ref_logp=t([0.0, 0.0]), advantages=t([0.7, -0.7]), token_logp=logp,
        token_ref_logp=logp.detach().clone(), token_mask=t([[1, 1], [1, 1]]),
    )  # fmt: skip
    (grad,) = torch.autograd.grad(grpo_loss(inputs, LossParams())[0], logp)
    torch.testing.assert_close(grad, t([[-0.7 / 4] * 2, [0.7 / 4] * 2]))


def test_masked_tokens_do_not_change_grpo():
    inputs, _ = _grpo_case()
    base = grpo_loss(inputs, LossParams(kl_beta=0.1))[0].item()
    junk = inputs.token_logp.detach().clone()
    junk[1, 2] = 3.0  # the masked token of row 1
    other = LossInputs(**{**inputs.__dict__, "token_logp": junk})
    assert grpo_loss(other, LossParams(kl_beta=0.1))[0].item() == pytest.approx(base)


def test_grpo_is_finite_when_off_mask_log_probs_are_extreme():
    """Prompt/padding positions can hold log-probs like −500 (a peaked model on pad tokens)
    while the reference columns are 0 there: exp(0 − (−500)) overflows unless masked first."""
    inputs, _ = _grpo_case()
    logp = inputs.token_logp.detach().clone()
    logp[:, 0] = -500.0  # position 0 is off the mask in both rows
    logp = logp.requires_grad_()
    init = inputs.token_init_logp.clone()
    init[:, 0] = 0.0
    extreme = LossInputs(**{**inputs.__dict__, "token_logp": logp, "token_init_logp": init})
    loss, m = grpo_loss(extreme, LossParams(clip_eps=0.2, kl_beta=0.1))
    assert loss.item() == pytest.approx(grpo_loss(inputs, LossParams(kl_beta=0.1))[0].item())
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.isfinite(grad).all() and (grad[:, 0] == 0).all()
    assert torch.isfinite(m["kl_init"]) and m["ratio_max"].item() == pytest.approx(1.5)


def test_masked_row_mean_is_per_sequence_token_mean():
    v = t([[1.0, 3.0, 100.0], [4.0, 0.0, 0.0]])
    m = t([[1, 1, 0], [1, 0, 0]])
    assert masked_row_mean(v, m).item() == pytest.approx((2.0 + 4.0) / 2)


# ----------------------------------------------------------------------------- TRL 1.16
@pytest.fixture(scope="module")
def trl_grpo():
    pytest.importorskip("trl")
    from trl.trainer import utils as trl_utils
    from trl.trainer.grpo_trainer import GRPOTrainer

    return GRPOTrainer, trl_utils


def _trl_self(per_token_logps, beta, eps, loss_type="grpo", max_completion_length=None):
    """The attributes GRPOTrainer._compute_loss reads, with its model forward replaced by
    the given per-token log-probs (so the loss arithmetic is TRL's own code path)."""
    ident = SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction="sum": x)
    return SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (
            per_token_logps, torch.zeros_like(per_token_logps), None
        ),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type,
        max_completion_length=max_completion_length,
        epsilon_low=eps, epsilon_high=eps, use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), accelerator=ident,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
    )  # fmt: skip


# our loss_aggregation -> TRL's loss_type with the same arithmetic, and the factor between
# them: TRL's dr_grpo divides the token sum by B · max_completion_length, ours by B only
AGGREGATIONS = [
    ("seq_mean_token_mean", "grpo", 1.0),
    ("token_mean", "bnpo", 1.0),
    ("seq_mean_token_sum", "dr_grpo", 6.0),  # C = max_completion_length = 6 below
]


@pytest.mark.parametrize(("aggregation", "trl_loss_type", "factor"), AGGREGATIONS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_matches_trl_compute_loss(trl_grpo, beta, aggregation, trl_loss_type, factor):
    GRPOTrainer, trl_utils = trl_grpo
    g = torch.Generator().manual_seed(0)
    B, C, k, eps = 8, 6, 4, 0.2
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 1.0, 0.0, 0.0])
    # TRL's advantage (GRPOTrainer._generate_and_score_completions, scale_rewards="group"):
    # (r − group mean) / (nanstd(group) + 1e-4), with its own nanstd
    grouped = rewards.view(-1, k)
    mean = grouped.mean(1).repeat_interleave(k)
    std = trl_utils.nanstd(grouped, dim=1).repeat_interleave(k)
    trl_adv = (rewards - mean) / (std + 1e-4)
    ours_adv = grpo_advantages(rewards.numpy(), np.repeat(np.arange(B // k), k))
    np.testing.assert_allclose(ours_adv, trl_adv.numpy(), rtol=1e-5, atol=1e-6)

    old = -torch.rand(B, C, generator=g, dtype=torch.float64) * 3
    ref = old + 0.3 * torch.randn(B, C, generator=g, dtype=torch.float64)
    logp_ours = (old + 0.4 * torch.randn(B, C, generator=g, dtype=torch.float64)).requires_grad_()
    logp_trl = logp_ours.detach().clone().requires_grad_()
    mask = (torch.rand(B, C, generator=g) > 0.25).long()
    mask[:, 0] = 1
    adv = torch.as_tensor(ours_adv)

    trl_inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, C, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    trl_self = _trl_self(logp_trl, beta, eps, trl_loss_type, max_completion_length=C)
    trl_loss = factor * GRPOTrainer._compute_loss(trl_self, None, trl_inputs)
    inputs = LossInputs(
        logp=torch.zeros(B), ref_logp=torch.zeros(B), advantages=adv, token_logp=logp_ours,
        token_ref_logp=old, token_init_logp=ref if beta > 0 else None, token_mask=mask,
    )  # fmt: skip
    loss, m = grpo_loss(inputs, LossParams(clip_eps=eps, kl_beta=beta, aggregation=aggregation))
    assert m["clip_frac"] > 0.1  # the case exercises the clip, not only the linear branch
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-10, abs=1e-12)
    (g_ours,) = torch.autograd.grad(loss, logp_ours)
    (g_trl,) = torch.autograd.grad(trl_loss, logp_trl)
    torch.testing.assert_close(g_ours, g_trl, rtol=1e-10, atol=1e-12)
    assert g_ours.abs().sum() > 0


# ----------------------------------------------------------------------------- ReST
def test_rest_weights_pick_the_best_correct_response_per_problem():
    rewards = [1.0, 1.2, 5.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    correct = [1, 1, 0, 1, 0, 0, 1, 1]  # row 2 has the top reward but is wrong
    groups = [0, 0, 0, 0, 1, 1, 2, 2]
    # top-1: row 1 (1.2) in problem 0, row 6 (first of a tie) in problem 2; none in problem 1
    w = rest_fit_weights(rewards, correct, groups, top_k=1)
    np.testing.assert_allclose(w, [0, 4, 0, 0, 0, 0, 4, 0])  # n/s = 8/2
    w_all = rest_fit_weights(rewards, correct, groups, top_k=0)
    np.testing.assert_allclose(w_all, np.array([1, 1, 0, 1, 0, 0, 1, 1]) * 8 / 5)
    assert not rest_fit_weights([0.0, 0.0], [0, 0], [0, 0]).any()
    with pytest.raises(ValueError, match="rest_top_k"):
        rest_fit_weights(rewards, correct, groups, top_k=-1)


def test_rest_loss_is_mean_nll_of_fitted_rows_and_never_pushes_down():
    logp = t([-1.0, -2.0, -3.0, -4.0], grad=True)
    w = t([0.0, 2.0, 0.0, 2.0])  # rows 1 and 3 selected out of 4
    inputs = LossInputs(logp=logp, ref_logp=t([0.0] * 4), advantages=w)  # fmt: skip
    loss, m = rest_loss(inputs, LossParams())
    assert loss.item() == pytest.approx((2 * 2 + 2 * 4) / 4)  # = mean NLL of rows 1, 3
    assert m["nll_fitted"].item() == pytest.approx(3.0)
    assert m["fitted_frac"].item() == pytest.approx(0.5)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, t([0.0, -0.5, 0.0, -0.5]))  # wrong rows: exactly 0
    assert (grad <= 0).all()


# ----------------------------------------------------------------------------- O1-Pruner
def test_length_harmonizing_reward_hand_computed():
    # L̂_ref = 100, Â_ref = 0.5, λ = 2: half-length right +2; same-length right +1;
    # double-length wrong 0.5 − 1 + 2(0 − 0.5) = −1.5
    r = length_harmonizing_reward([50, 100, 200], [1, 1, 0], [100] * 3, [0.5] * 3, lam=2.0)
    np.testing.assert_allclose(r, [2.0, 1.0, -1.5])
    assert length_harmonizing_reward([0], [1], [10], [1.0], lam=1.0)[0] == 9.0  # L clamped to 1
    assert reference_statistics([10, 20, 30, 40], [1, 0, 0, 1]) == (25.0, 0.5)
    with pytest.raises(ValueError, match="o1_pruner_lambda"):
        length_harmonizing_reward([1], [1], [1], [1], lam=-1)


def test_o1_pruner_prepare_uses_reference_stats():
    rows = _rows([1, 1, 0], [0, 0, 1], correct=[1, 1, 0], lengths=[50, 100, 10],
                 ref_mean_length=np.array([100.0, 100.0, 20.0]),
                 ref_accuracy=np.array([0.5, 0.5, 0.0]))  # fmt: skip
    adv, m = prepare_advantages("o1_pruner", rows, LossParams(o1_lambda=2.0))
    np.testing.assert_allclose(adv, [2.0, 1.0, 1.0])
    assert m["o1_length_ratio_mean"] == pytest.approx((2 + 1 + 2) / 3)
    with pytest.raises(ValueError, match="o1_pruner_reference_stats"):
        prepare_advantages("o1_pruner", _rows([1.0], [0]), LossParams())


def test_o1_pruner_loss_hand_computed_with_clipping():
    logp = t([LN(1.5), LN(0.5), LN(0.5)], grad=True)  # ρ = [1.5, 0.5, 0.5] against ref 0
    inputs = LossInputs(logp=logp, ref_logp=t([0.0] * 3), advantages=t([2.0, 1.0, -1.5]))
    loss, m = o1_pruner_loss(inputs, LossParams(clip_eps=0.2))
    # −mean(min(3.0, 2.4), min(0.5, 0.8), min(−0.75, −1.2)) = −(2.4 + 0.5 − 1.2)/3
    assert loss.item() == pytest.approx(-1.7 / 3)
    assert m["clip_frac"].item() == pytest.approx(2 / 3)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, t([0.0, -0.5 / 3, 0.0]))  # clipped rows give no gradient


def test_o1_pruner_at_the_sampling_policy_pushes_short_up_and_long_down():
    logp = t([-3.0, -5.0], grad=True)
    inputs = LossInputs(logp=logp, ref_logp=logp.detach().clone(), advantages=t([1.0, -0.5]))
    (grad,) = torch.autograd.grad(compute_policy_loss("o1_pruner", inputs, LossParams())[0], logp)
    torch.testing.assert_close(grad, t([-0.5, 0.25]))
