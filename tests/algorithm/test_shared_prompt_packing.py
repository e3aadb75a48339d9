"""``shared_prompt_packing``: a prompt's k samples computed with one copy of the prompt.

The learner's numbers must not move: reference log-probs and the gradient handed to the
optimizer equal the padded learner's (fp32, up to summation order), while the model sees
P + Σ m_j positions per group instead of k·(P + R). fp32 pinned (support.learner_harness).
"""

import numpy as np
import pytest
import torch
from support.learner_harness import build_learner, update

from rllib_k15 import K15Config
from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.algorithm.learner import _shared_prompt_micro_batches
from rllib_k15.core.sequences import pack_sequences
from rllib_k15.core.shared_prompts import pack_shared_prompts
from rllib_k15.rollout.records import Rollout

pytestmark = pytest.mark.precision


def _grouped_columns(response_lengths: list[list[int]], prompt_len: int = 9) -> dict:
    """One problem per inner list (its own prompt), one response per length."""
    rng = np.random.default_rng(7)
    rollouts = []
    for problem, lengths in enumerate(response_lengths):
        prompt = rng.integers(5, 1000, prompt_len + problem).tolist()
        for j, n in enumerate(lengths):
            rollouts.append(Rollout(
                problem_index=problem, problem_id=str(problem), prompt_ids=prompt,
                response_ids=rng.integers(5, 1000, n).tolist(), sample_logp=[-5.0] * n,
                finish_reason="stop", reward=float(j % 2), correct=bool(j % 2), reason="",
            ))  # fmt: skip
    cols, _ = build_train_batch(
        rollouts, pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=0
    )
    return cols


def test_layout_shares_each_prompt_and_keeps_every_rows_positions():
    prompts = [[11, 12, 13]] * 3 + [[21, 22]]
    responses = [[1, 2], [3], [4, 5, 6], [7, 8]]
    seq = pack_sequences(prompts, responses, pad_token_id=0)
    packed = pack_shared_prompts(seq.input_ids, seq.attention_mask, seq.response_mask)
    # group 1: 3 + (2 + 1 + 3) = 9 positions; group 2: 2 + 2 = 4 — one bin of 9, one of 9
    assert packed.input_ids.shape == (2, 9)
    assert packed.input_ids[0].tolist() == [11, 12, 13, 1, 2, 3, 4, 5, 6]
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 3, 4, 5]
    allowed = packed.allowed[0]
    assert allowed[5, :3].all() and not allowed[5, 3:5].any()  # response 2 sees prompt only
    assert allowed[7, 6] and not allowed[7, 5]  # response 3 sees its own earlier token
    # row 2's first response token (t = 3) is predicted by the prompt's last position
    assert packed.source[2, 3] == 2 and packed.scored[2].tolist() == [0, 0, 0, 1, 1, 1]
    assert packed.positions_per_real_token == 18 / 19  # rows hold 5 + 4 + 6 + 4 tokens


def test_small_capacity_splits_a_group_and_each_part_carries_the_prompt():
    seq = pack_sequences([[9, 9, 9, 9]] * 4, [[1] * 5] * 4, pad_token_id=0)
    packed = pack_shared_prompts(
        seq.input_ids, seq.attention_mask, seq.response_mask, capacity=14
    )  # fmt: skip
    assert packed.input_ids.shape == (2, 14)  # 4 + 5 + 5 per part
    assert (packed.input_ids[:, :4] == 9).all()


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
def test_shared_prompt_learner_equals_the_padded_one(tiny_model_dir, loss):
    cols = _grouped_columns([[3, 8, 1, 5], [12, 2, 2, 6], [4, 4, 9, 1]])
    ref_padded, padded = _gradients(tiny_model_dir, cols, micro_batch_size=3, **loss)
    ref_shared, shared = _gradients(
        tiny_model_dir, cols, micro_batch_size=3, shared_prompt_packing=True, **loss
    )
    np.testing.assert_allclose(ref_shared, ref_padded, rtol=1e-5, atol=1e-5)
    assert len(padded) == len(shared) >= 1 and len(padded[0]) > 0  # one per minibatch
    for step_padded, step_shared in zip(padded, shared):
        for a, b in zip(step_padded, step_shared):
            assert (a - b).norm() <= 1e-5 * a.norm() + 1e-9


def test_shared_prompt_forward_computes_fewer_positions(tiny_model_dir, monkeypatch):
    """12 rows (3 prompts × 4 samples) go to the model as 3 shared sequences."""
    learner = build_learner(tiny_model_dir, micro_batch_size=8, shared_prompt_packing=True)
    module = learner.module[next(iter(learner.module.keys()))]
    seen, forward = [], module.lm.forward

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(module.lm, "forward", spy)
    cols = _grouped_columns([[3, 8, 1, 5], [12, 2, 2, 6], [4, 4, 9, 1]])
    learner.compute_reference_logprobs(cols)
    positions = sum(call["input_ids"].numel() for call in seen)
    real = int(cols["attention_mask"].sum())
    assert positions < 0.7 * real  # prompts of 9-11 tokens shared 4 ways
    assert all(call["attention_mask"].dim() == 4 for call in seen)


def test_eager_attention_gets_an_additive_mask_with_the_same_log_probs(tiny_model_dir):
    cols = _grouped_columns([[3, 8, 1, 5], [12, 2, 2, 6]])
    eager = build_learner(
        tiny_model_dir, shared_prompt_packing=True, attn_implementation="eager",
        shared_prompt_bin_tokens=30,
    )  # fmt: skip
    padded = build_learner(tiny_model_dir).compute_reference_logprobs(cols)
    np.testing.assert_allclose(eager.compute_reference_logprobs(cols), padded, rtol=1e-5, atol=1e-5)


def test_micro_batches_hold_whole_groups_costed_in_shared_positions():
    # rows interleaved: problem 0 at rows 0, 2, 4; problem 1 at rows 1, 3, 5
    seq = pack_sequences(
        [[1] * 6, [2] * 4] * 3,
        [[5] * 4, [6] * 2, [5] * 3, [6] * 6, [5] * 2, [6] * 1],
        pad_token_id=0,
    )
    ids, mask, response = seq.input_ids, seq.attention_mask, seq.response_mask
    # longest row 10 tokens, budget 1 × 10: no two rows of a group fit with their prompt
    # (6 + 4 + 3 > 10, 4 + 2 + 6 > 10, ...), so every row is its own micro-batch
    small = _shared_prompt_micro_batches(ids, mask, response, micro_batch_size=1)
    assert sorted(rows.tolist() for rows, _ in small) == [[r] for r in range(6)]
    assert all(int(mask[rows].sum(-1).max()) == width for rows, width in small)
    # budget 2 × 10 = 20: group 0 costs 6 + 4 + 3 + 2 = 15, group 1 4 + 2 + 6 + 1 = 13;
    # together 28 > 20, so two micro-batches, each one WHOLE group (a row-count budget of
    # 2 rows, or a row-token budget of 20, would cut both groups)
    groups = _shared_prompt_micro_batches(ids, mask, response, micro_batch_size=2)
    assert sorted(rows.tolist() for rows, _ in groups) == [[0, 2, 4], [1, 3, 5]]
    assert sorted(width for _, width in groups) == [10, 10]
    # budget 3 × 10 = 30 >= 28: both groups in one micro-batch
    (one,) = _shared_prompt_micro_batches(ids, mask, response, micro_batch_size=3)
    assert one[0].tolist() == list(range(6))


@pytest.mark.parametrize(
    "training,match",
    [
        ({"shared_prompt_packing": "yes"}, "`shared_prompt_packing`"),
        ({"shared_prompt_bin_tokens": 0}, "`shared_prompt_bin_tokens`"),
        ({"shared_prompt_packing": True, "attn_implementation": "flash_attention_2"}, "sdpa"),
        ({"shared_prompt_packing": True, "padding_free": True}, "choose one"),
    ],
)
def test_shared_prompt_fields_are_validated(training, match):
    config = K15Config().environment("k15/Arithmetic-v0").training(**training)
    with pytest.raises(ValueError, match=match):
        config.validate()


def test_unused_tail_positions_never_reach_a_response():
    seq = pack_sequences([[5, 6]] * 2 + [[7]], [[1, 2, 3], [4], [8]], pad_token_id=0)
    packed = pack_shared_prompts(seq.input_ids, seq.attention_mask, seq.response_mask)
    rows = packed.allowed.any(-1)
    assert rows.all()  # every query (tail included) has a key: no NaN softmax rows
    assert torch.equal(packed.scored.sum(-1), torch.tensor([3, 1, 1]))
