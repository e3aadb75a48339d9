"""``padding_free``: token-budget micro-batches whose rows the module packs end to end.

The learner's numbers must not move: reference log-probs and the gradient handed to the
optimizer equal the padded learner's (fp32, up to summation order), for OPMD and for a
token-weighted GRPO aggregation, while the micro-batches hold more short rows and no
padded positions are computed. fp32 pinned (support.learner_harness).
"""

import numpy as np
import pytest
import torch
from support.learner_harness import build_learner, random_columns, update

from rllib_k15 import K15Config
from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.algorithm.learner import _micro_batches
from rllib_k15.rollout.records import Rollout

pytestmark = pytest.mark.precision


def test_token_budget_micro_batches_take_more_short_rows():
    mask = np.zeros((6, 10), dtype=np.int64)
    for row, n in enumerate([10, 3, 3, 3, 3, 2]):
        mask[row, :n] = 1
    padded = _micro_batches(mask, micro_batch_size=2)
    free = _micro_batches(mask, micro_batch_size=2, padding_free=True)
    assert [len(rows) for rows, _ in padded] == [2, 2, 2]
    # budget 2 × 10 tokens: [10, 3, 3, 3] (19) then [3, 2]
    assert [sorted(rows.tolist()) for rows, _ in free] == [[0, 1, 2, 3], [4, 5]]
    assert [width for _, width in free] == [10, 3]
    assert sorted(np.concatenate([rows for rows, _ in free]).tolist()) == list(range(6))


def _gradients(model_dir, cols, **training):
    grads = []
    learner = build_learner(model_dir, grad_clip=None, **training)
    learner.apply_gradients = lambda g: grads.append([v.clone() for v in g.values()])
    ref = learner.compute_reference_logprobs(cols)
    update(learner, cols)
    return ref, grads


@pytest.mark.parametrize(
    "loss",
    [{}, {"loss": "grpo", "grpo_kl_beta": 0.0, "loss_aggregation": "token_mean"}],
    ids=["opmd", "grpo-token-mean"],
)
def test_padding_free_learner_equals_the_padded_one(tiny_model_dir, loss):
    cols = random_columns(seed=3)
    ref_padded, padded = _gradients(tiny_model_dir, cols, micro_batch_size=3, **loss)
    ref_free, free = _gradients(tiny_model_dir, cols, micro_batch_size=3, padding_free=True, **loss)
    np.testing.assert_allclose(ref_free, ref_padded, rtol=1e-5, atol=1e-5)
    assert len(padded) == len(free) == 1 and len(padded[0]) > 0
    for a, b in zip(padded[0], free[0]):
        assert (a - b).norm() <= 1e-5 * a.norm() + 1e-9


def _columns_with_response_lengths(lengths: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    rollouts = [
        Rollout(
            problem_index=j // 4, problem_id=str(j // 4),
            prompt_ids=rng.integers(5, 1000, 6).tolist(),
            response_ids=rng.integers(5, 1000, n).tolist(), sample_logp=[-5.0] * n,
            finish_reason="stop", reward=float(j % 2), correct=bool(j % 2), reason="",
        )
        for j, n in enumerate(lengths)
    ]  # fmt: skip
    cols, _ = build_train_batch(
        rollouts, pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=0
    )
    return cols


def test_padding_free_forward_computes_no_padded_positions(tiny_model_dir, monkeypatch):
    """What the model is handed: bins no wider than the longest row, no attention mask, and
    fewer positions than the padded rows: rows of 7-22 tokens, the short ones share bins."""
    learner = build_learner(tiny_model_dir, micro_batch_size=8, padding_free=True)
    module = learner.module[next(iter(learner.module.keys()))]
    seen = []
    forward = module.lm.forward

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(module.lm, "forward", spy)
    cols = _columns_with_response_lengths([16, 1, 2, 3, 14, 4, 5, 1])
    ref = learner.compute_reference_logprobs(cols)
    (call,) = seen
    lengths = cols["attention_mask"].sum(-1)
    assert "attention_mask" not in call or call["attention_mask"] is None
    assert call["input_ids"].shape[1] == lengths.max() == 22
    # 8 padded rows of 22 = 176 positions; packed: 94 real tokens in 5 bins of 22 = 110
    assert cols["attention_mask"].size == 176 and lengths.sum() == 94
    assert call["input_ids"].numel() == 110
    assert torch.equal(call["position_ids"][0, :2], torch.tensor([0, 1]))
    np.testing.assert_allclose(ref, build_learner(tiny_model_dir).compute_reference_logprobs(cols),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_wide_bins_and_another_attention_kernel_give_the_same_log_probs(tiny_model_dir):
    """Bins of 64 positions hold several rows each (a dense block-diagonal mask), here with
    the eager attention kernel: still the padded SDPA learner's log-probs."""
    cols = _columns_with_response_lengths([16, 1, 2, 3, 14, 4, 5, 1])
    wide = build_learner(
        tiny_model_dir, padding_free=True, padding_free_bin_tokens=64, micro_batch_size=8,
        attn_implementation="eager",
    )  # fmt: skip
    module = wide.module[next(iter(wide.module.keys()))]
    assert module.lm.config._attn_implementation == "eager"
    padded = build_learner(tiny_model_dir, micro_batch_size=8).compute_reference_logprobs(cols)
    np.testing.assert_allclose(wide.compute_reference_logprobs(cols), padded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "field,value",
    [("padding_free", "yes"), ("padding_free_bin_tokens", 0), ("attn_implementation", 2)],
)
def test_padding_free_fields_are_validated(field, value):
    config = K15Config().environment("k15/Arithmetic-v0").training(**{field: value})
    with pytest.raises(ValueError, match=f"`{field}`"):
        config.validate()
