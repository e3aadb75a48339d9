"""DAPO's overlong options beside the Kimi length reward: the soft punishment (by hand), the
masking of responses cut at the cap, their validation, and a learner step that leaves a
masked row without gradient."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.algorithm.config import K15Config
from rllib_k15.core.rewards import soft_overlong_penalty
from rllib_k15.rollout.records import Rollout


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 0.0), (12, 0.0), (13, -0.25), (14, -0.5), (15, -0.75), (16, -1.0), (20, -1.0)],
)
def test_soft_overlong_penalty_by_hand(length, expected):
    # L_max = 16, L_buf = 4: free up to 12, then −(|y| − 12)/4, −1 from the cap on
    assert soft_overlong_penalty(np.array([length]), 16, 4)[0] == pytest.approx(expected)


@pytest.mark.parametrize("buffer", [0, 16, -1])
def test_soft_overlong_penalty_needs_a_buffer_inside_the_cap(buffer):
    with pytest.raises(ValueError, match="overlong_buffer_tokens"):
        soft_overlong_penalty(np.array([3]), 16, buffer)


def _rollout(problem, n_tokens, correct, finish="stop"):
    return Rollout(
        problem_index=problem, problem_id=f"p{problem}", prompt_ids=[1, 2],
        response_ids=[7] * n_tokens, sample_logp=[-0.5] * n_tokens, finish_reason=finish,
        reward=float(correct), correct=correct, reason="",
    )  # fmt: skip


def _batch(rollouts, **kwargs):
    return build_train_batch(
        rollouts, pad_token_id=0, tau=1.0, baseline="mean", length_weight=0.0, iteration=0,
        max_response_tokens=16, **kwargs,
    )  # fmt: skip


def test_the_punishment_adds_to_the_reward_and_moves_the_baseline():
    rollouts = [_rollout(0, 4, True), _rollout(0, 14, True), _rollout(0, 16, False, "length")]
    cols, stats = _batch(rollouts, overlong_buffer_tokens=4, overlong_penalty_weight=2.0)
    np.testing.assert_allclose(cols["rewards"], [1.0, 1.0 - 2 * 0.5, 0.0 - 2 * 1.0])
    np.testing.assert_allclose(cols["baselines"], [np.mean([1.0, 0.0, -2.0])] * 3)
    assert stats["overlong_penalty_mean"] == pytest.approx(2 * (0 - 0.5 - 1) / 3)
    off, off_stats = _batch(rollouts)
    np.testing.assert_allclose(off["rewards"], [1.0, 1.0, 0.0])
    assert off_stats["overlong_penalty_mean"] == 0.0


def test_masking_keeps_a_capped_response_out_of_the_loss_but_in_the_baseline():
    rollouts = [_rollout(0, 3, True), _rollout(0, 16, False, "length"), _rollout(0, 5, False)]
    cols, stats = _batch(rollouts, mask_truncated=True)
    assert cols["loss_mask"][1].sum() == 0
    assert cols["response_mask"][1].sum() == 16  # the reference pass still scores it
    assert cols["loss_mask"][0].sum() == 3 and cols["loss_mask"][2].sum() == 5
    np.testing.assert_allclose(cols["baselines"], [1 / 3] * 3)
    assert stats["truncated_masked_frac"] == pytest.approx(1 / 3)
    kept, kept_stats = _batch(rollouts)
    assert kept["loss_mask"][1].sum() == 16 and kept_stats["truncated_masked_frac"] == 0.0


def test_a_looping_response_is_not_masked_as_truncated():
    cols, _ = _batch([_rollout(0, 6, False, "repeat"), _rollout(0, 2, True)], mask_truncated=True)
    assert cols["loss_mask"][0].sum() == 6  # its repeat penalty must still be learned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlong_buffer_tokens": 128}, "must be < max_response_tokens \\(128\\)"),
        ({"overlong_buffer_tokens": -2}, "integer >= 0"),
        ({"overlong_penalty_weight": -1.0}, "`overlong_penalty_weight` \\(-1.0\\)"),
        ({"mask_truncated_responses": "yes"}, "must be true or false"),
    ],
)
def test_config_rejects_bad_overlong_settings(kwargs, message):
    config = (
        K15Config().environment("k15/Arithmetic-v0").training(max_response_tokens=128, **kwargs)
    )
    with pytest.raises(ValueError, match=message):
        config.validate()


def _capped_batch(seed_tokens: int, mask_truncated: bool):
    """2 groups × 4: in each group one response hit the cap (16 tokens) — its tokens drawn
    from ``seed_tokens`` — and the others stopped."""
    rng = np.random.default_rng(seed_tokens)
    rollouts = []
    for j in range(8):
        capped = j % 4 == 0
        n = 16 if capped else 3 + j % 4
        ids = rng.integers(5, 1000, n).tolist() if capped else list(range(10 + j, 10 + j + n))
        rollouts.append(
            Rollout(problem_index=j // 4, problem_id=str(j // 4), prompt_ids=[3, 4, 5],
                    response_ids=ids, sample_logp=[-5.0] * n,
                    finish_reason="length" if capped else "stop", reward=float(j % 2),
                    correct=bool(j % 2), reason="")
        )  # fmt: skip
    cols, _ = _batch(rollouts, mask_truncated=mask_truncated)
    return cols


@pytest.mark.parametrize("loss", ["opmd", "grpo"])
def test_a_masked_capped_response_gives_no_gradient(tiny_model_dir, loss):
    """What the capped rows say cannot move the policy once they are masked; unmasked, it does."""
    import torch
    from support.learner_harness import build_learner, update

    def weights_after(cols):
        learner = build_learner(tiny_model_dir, loss=loss, grpo_kl_beta=0.0)
        update(learner, cols)
        module = learner.module[next(iter(learner.module.keys()))]
        return {k: v.detach().clone() for k, v in module.lm.state_dict().items()}

    masked_a, masked_b = (weights_after(_capped_batch(s, True)) for s in (1, 2))
    assert all(torch.equal(masked_a[k], masked_b[k]) for k in masked_a)
    kept_a, kept_b = (weights_after(_capped_batch(s, False)) for s in (1, 2))
    assert any(not torch.equal(kept_a[k], kept_b[k]) for k in kept_a)


def test_a_training_iteration_with_both_options_reports_them(tiny_model_dir):
    """The real loop (HF engine, toy env): the random tiny model runs into a 4-token cap,
    so rows are masked and punished, and both show in the iteration's results (that a
    masked row moves nothing is the learner test above)."""
    from support.toy_training import toy_config, train_with_weights

    from rllib_k15.metric_names import K15_RESULTS

    config = toy_config(
        tiny_model_dir, max_response_tokens=4, overlong_buffer_tokens=2,
        mask_truncated_responses=True, samples_per_problem=4, problems_per_iteration=2,
        minibatch_size=8,
    )  # fmt: skip
    (result,), _, _ = train_with_weights(config, 1)
    stats = result[K15_RESULTS]
    assert 0 < stats["truncated_masked_frac"] <= 1
    assert -1 <= stats["overlong_penalty_mean"] < 0
