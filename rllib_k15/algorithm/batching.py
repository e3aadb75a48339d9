"""From scored rollouts to the learner's train batch (pure; numpy in, numpy out).

Each finished response becomes one row: ``prompt + response`` token ids (right-padded),
masks, the engine's sampling log-probs, the shaped reward and its problem's baseline:

    reward_j   = r_j (verifier, incl. penalties) + w_i · len_reward_j     (w_i = 0 in warm-up)
                 + w_o · overlong_j       (DAPO soft overlong punishment; only when enabled)
    baseline_j = mean_{j' in group} reward_j'   or   τ log mean exp(reward/τ)

With ``mask_truncated`` (DAPO overlong filtering) a response that hit the hard cap
(``finish_reason == "length"``) keeps its reward in the group baseline but gets loss mask 0:
no gradient. Rollouts reach this module finished, so a partial-rollout segment cut by the
per-iteration budget is never "truncated" here; its whole response length is what counts.

Image problems add one ``image_<name>`` column per image tensor of the VLM's processor
(``image_pixel_values`` (B, ...), ``image_pixel_attention_mask``...), so the learner scores
each response with its image in the forward.

The baseline is computed over the whole group here, before RLlib splits the batch into
minibatches, so minibatches need not keep groups together.

Partial rollouts: a response continued over several iterations carries the iteration of
each token (``token_iterations``). With ``train_on_old_segments=False`` the loss mask keeps
only the tokens of the current iteration (:func:`rllib_k15.rollout.partial.loss_mask`); the
response mask, and so the learner's reference log-probs, always cover the whole response.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rllib_k15 import metric_names as names
from rllib_k15.algorithm.columns import (
    ATTENTION_MASK,
    BASELINES,
    CORRECT,
    GROUP_IDS,
    IMAGE_PREFIX,
    INPUT_IDS,
    LOSS_MASK,
    RESPONSE_MASK,
    REWARDS,
    SAMPLE_LOGP,
)
from rllib_k15.core.rewards import (
    Baseline,
    grouped_baselines,
    grouped_length_rewards,
    soft_overlong_penalty,
)
from rllib_k15.rollout.partial import loss_mask as segment_loss_mask
from rllib_k15.rollout.records import Rollout

__all__ = ["build_train_batch"]


GRADER_FAILURES = ("grading_error", "judge_error", "judge_unparseable")  # verdict reasons


def build_train_batch(
    rollouts: Sequence[Rollout],
    *,
    pad_token_id: int,
    tau: float,
    baseline: Baseline | str,
    length_weight: float,
    iteration: int,
    train_on_old_segments: bool = True,
    mask_truncated: bool = False,
    overlong_buffer_tokens: int = 0,
    overlong_penalty_weight: float = 1.0,
    max_response_tokens: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Rows for the learner plus batch statistics. ``length_weight`` already includes warm-up;
    the overlong punishment (``overlong_buffer_tokens`` > 0) needs ``max_response_tokens``."""
    if not rollouts:
        raise ValueError("build_train_batch got no rollouts")
    groups = np.array([r.problem_index for r in rollouts])
    lengths = np.array([len(r.response_ids) for r in rollouts])
    correct = np.array([r.correct for r in rollouts])
    task = np.array([r.reward for r in rollouts], dtype=np.float64)
    len_reward = grouped_length_rewards(lengths, correct, groups)
    overlong = np.zeros(len(rollouts))
    if overlong_buffer_tokens:
        if max_response_tokens is None:
            raise ValueError("overlong_buffer_tokens needs max_response_tokens")
        overlong = soft_overlong_penalty(lengths, max_response_tokens, overlong_buffer_tokens)
    rewards = task + length_weight * len_reward + overlong_penalty_weight * overlong
    truncated = np.array([r.finish_reason == "length" for r in rollouts])
    baselines = grouped_baselines(rewards, groups, tau, baseline)

    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rollouts)
    n = len(rollouts)
    input_ids = np.full((n, width), pad_token_id, dtype=np.int64)
    attention = np.zeros((n, width), dtype=np.int64)
    response_mask = np.zeros((n, width), dtype=np.float32)
    loss_mask = np.zeros((n, width), dtype=np.float32)
    sample_logp = np.zeros((n, width), dtype=np.float32)
    for row, r in enumerate(rollouts):
        p, t = len(r.prompt_ids), len(r.prompt_ids) + len(r.response_ids)
        input_ids[row, :t] = r.prompt_ids + r.response_ids
        attention[row, :t] = 1
        response_mask[row, p:t] = 1.0
        sample_logp[row, p:t] = r.sample_logp
        if mask_truncated and truncated[row]:
            continue  # DAPO overlong filtering: the row stays out of the loss
        if train_on_old_segments or not r.token_iterations:
            loss_mask[row, p:t] = 1.0
        else:  # tokens of earlier iterations (older policies) stay out of the loss
            loss_mask[row, p:t] = segment_loss_mask(
                np.asarray(r.token_iterations), iteration, include_old_segments=False
            )

    columns = {
        INPUT_IDS: input_ids,
        ATTENTION_MASK: attention,
        RESPONSE_MASK: response_mask,
        LOSS_MASK: loss_mask,
        SAMPLE_LOGP: sample_logp,
        REWARDS: rewards.astype(np.float32),
        BASELINES: baselines.astype(np.float32),
        GROUP_IDS: groups.astype(np.int64),
        CORRECT: correct.astype(np.float32),
    }
    if rollouts[0].image_inputs is not None:  # image problems: each row's image tensors
        for name in rollouts[0].image_inputs:
            columns[IMAGE_PREFIX + name] = np.stack([r.image_inputs[name] for r in rollouts])
    group_has_signal = [np.ptp(rewards[groups == g]) > 0 for g in np.unique(groups)]
    stats = {
        names.REWARD_TASK_MEAN: float(task.mean()),
        names.REWARD_TOTAL_MEAN: float(rewards.mean()),
        names.LENGTH_REWARD_MEAN: float(len_reward.mean()),
        names.LENGTH_WEIGHT: float(length_weight),
        names.OVERLONG_PENALTY_MEAN: float(overlong_penalty_weight * overlong.mean()),
        names.TRUNCATED_MASKED_FRAC: float(mask_truncated * truncated.mean()),
        names.ACCURACY: float(correct.mean()),
        names.RESPONSE_TOKENS_MEAN: float(lengths.mean()),
        names.RESPONSE_TOKENS_P50: float(np.percentile(lengths, 50)),
        names.RESPONSE_TOKENS_P90: float(np.percentile(lengths, 90)),
        names.RESPONSE_TOKENS_MAX: float(lengths.max()),
        names.GROUPS_WITH_SIGNAL_FRAC: float(np.mean(group_has_signal)),
        names.NUM_RESPONSES: float(n),
        names.NUM_PROBLEMS: float(len(group_has_signal)),
        # the verifier itself failed (k15_envs Reason.GRADING_ERROR, or the judge model gave
        # no verdict / could not be reached): reward 0 that is NOT a wrong answer; anything
        # above 0 needs a look (the env logs the first error)
        names.GRADING_ERRORS: float(sum(r.reason.startswith(GRADER_FAILURES) for r in rollouts)),
    }
    return columns, stats
