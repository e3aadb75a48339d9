"""OPMD loss against hand-computed values and against the report's surrogate."""

import pytest
import torch

from rllib_k15.core.losses import (
    LogprobReduction,
    LossInputs,
    LossParams,
    compute_policy_loss,
    opmd_loss,
    opmd_prepare,
    opmd_surrogate,
    register_loss,
    sequence_logprob,
)


def _inputs(logp, ref, rewards, baselines):
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return LossInputs(logp=t(logp), ref_logp=t(ref), advantages=t(rewards) - t(baselines))


def test_opmd_loss_hand_computed():
    # two samples of one problem, r = [1, 0], b = 0.5, τ = 0.2
    # pg = -mean([0.5 * -1.0, -0.5 * -3.0]) = -mean([-0.5, 1.5]) = -0.5
    # reg = 0.1 * mean([(−1+1.5)², (−3+2)²]) = 0.1 * mean([0.25, 1]) = 0.0625
    inputs = _inputs([-1.0, -3.0], [-1.5, -2.0], [1.0, 0.0], [0.5, 0.5])
    loss, metrics = opmd_loss(inputs, LossParams(tau=0.2))
    assert metrics["pg_loss"].item() == pytest.approx(-0.5)
    assert metrics["reg_loss"].item() == pytest.approx(0.0625)
    assert loss.item() == pytest.approx(-0.4375)


def test_opmd_gradient_matches_eq3_and_surrogate():
    """∇L = −g of eq. (3), and ∇surrogate = 2τ ∇L when τ log Z is the mean reward."""
    torch.manual_seed(0)
    tau = 0.3
    theta = torch.randn(5, dtype=torch.float64, requires_grad=True)  # a toy policy over 5 actions
    actions = torch.tensor([0, 2, 2, 4])
    ref_theta = theta.detach() + 0.1 * torch.randn(5, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    rbar = rewards.mean()

    logp = torch.log_softmax(theta, -1)[actions]
    ref_logp = torch.log_softmax(ref_theta, -1)[actions]
    loss, _ = opmd_loss(LossInputs(logp, ref_logp, rewards - rbar), LossParams(tau=tau))
    (grad_loss,) = torch.autograd.grad(loss, theta)

    # eq. (3) written as an explicit loop over the k samples
    g = torch.zeros(5, dtype=torch.float64)
    for j in range(4):
        lp = torch.log_softmax(theta, -1)[actions[j]]
        (grad_lp,) = torch.autograd.grad(lp, theta, retain_graph=True)
        ratio_sq = (lp - ref_logp[j]) ** 2
        (grad_sq,) = torch.autograd.grad(ratio_sq, theta)
        g += grad_lp * (rewards[j] - rbar) - tau / 2 * grad_sq
    g /= 4
    torch.testing.assert_close(grad_loss, -g)

    logp = torch.log_softmax(theta, -1)[actions]
    (grad_sur,) = torch.autograd.grad(opmd_surrogate(logp, ref_logp, rewards, rbar, tau), theta)
    torch.testing.assert_close(grad_sur, 2 * tau * grad_loss)


def test_opmd_at_reference_is_plain_baseline_policy_gradient():
    # at θ = θi the regulariser and its gradient vanish
    inputs = _inputs([-2.0, -1.0], [-2.0, -1.0], [1.0, 0.0], [0.5, 0.5])
    _, metrics = opmd_loss(inputs, LossParams(tau=1.0))
    assert metrics["reg_loss"].item() == 0.0
    assert metrics["kl_ref"].item() == 0.0


def test_sequence_logprob_reductions_and_masking():
    token_logp = torch.tensor([[0.0, -1.0, -2.0, -9.0], [0.0, -4.0, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]])
    torch.testing.assert_close(
        sequence_logprob(token_logp, mask, "sum"), torch.tensor([-3.0, -4.0])
    )
    torch.testing.assert_close(
        sequence_logprob(token_logp, mask, LogprobReduction.TOKEN_MEAN), torch.tensor([-1.5, -4.0])
    )


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("opmd", prepare=opmd_prepare)(opmd_loss)
    with pytest.raises(ValueError, match="unknown loss"):
        compute_policy_loss("nope", _inputs([0.0], [0.0], [0.0], [0.0]), LossParams())
