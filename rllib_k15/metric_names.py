"""Every metric name and results namespace the project writes, in one place (Ray-free).

A training iteration's result dict (``algo.train()``, one row of ``metrics.jsonl``) nests
metrics under namespaces::

    result["k15"][ACCURACY]                       K15_RESULTS: rewards, lengths, timings
    result["k15_eval"][PASS_AT_1]                 EVAL_RESULTS: held-out Pass@1 and tokens
    result["learners"]["default_policy"][...]     LEARNER_RESULTS / module id: loss metrics
    result["learners"][LOGP_MISMATCH_MEAN]        (the learner's module-independent ones)
    result["env_runners"][GENERATION_TOKENS_PER_S]  ENV_RUNNER_RESULTS: the runners' own
    result["fault_tolerance"][...]                RLlib's restarts of EnvRunner actors

The offline trainers of the long2short toolbox log flat ``sft/…`` and ``dpo/…`` names.
Producers and readers (trainer table, experiment scripts, tests) import the names from here
instead of typing them.
"""

from __future__ import annotations

# ------------------------------------------------------------------------- namespaces
K15_RESULTS = "k15"  # the iteration's reward / length statistics and timings (the driver)
EVAL_RESULTS = "k15_eval"  # held-out evaluation with the engine's current weights
LEARNER_RESULTS = "learners"  # RLlib's; the loss metrics sit under the module id
ENV_RUNNER_RESULTS = "env_runners"  # RLlib's; what the EnvRunners log
FAULT_TOLERANCE_RESULTS = "fault_tolerance"  # RLlib's; EnvRunner actor restarts
DEFAULT_MODULE = "default_policy"  # RLlib's DEFAULT_MODULE_ID (the one policy)

# ------------------------------------------- the train batch (K15_RESULTS, batching.py)
REWARD_TASK_MEAN = "reward_task_mean"  # verifier reward incl. penalties, before length shaping
REWARD_TOTAL_MEAN = "reward_total_mean"  # the shaped reward the loss sees
LENGTH_REWARD_MEAN = "length_reward_mean"
LENGTH_WEIGHT = "length_weight"  # w_i of the length reward (0 during warm-up)
OVERLONG_PENALTY_MEAN = "overlong_penalty_mean"  # DAPO soft overlong punishment (≤ 0)
TRUNCATED_MASKED_FRAC = "truncated_masked_frac"  # rows cut at the cap, kept out of the loss
DYNAMIC_FILTERED_FRAC = "dynamic_filtered_frac"  # drawn groups dropped for equal rewards
DYNAMIC_SAMPLING_ROUNDS = "dynamic_sampling_rounds"  # extra sampling rounds this iteration
ACCURACY = "accuracy"  # share of correct responses among the trained ones
RESPONSE_TOKENS_MEAN = "response_tokens_mean"
RESPONSE_TOKENS_P50 = "response_tokens_p50"
RESPONSE_TOKENS_P90 = "response_tokens_p90"
RESPONSE_TOKENS_MAX = "response_tokens_max"
GROUPS_WITH_SIGNAL_FRAC = "groups_with_signal_frac"  # groups whose rewards are not all equal
NUM_RESPONSES = "num_responses"
NUM_PROBLEMS = "num_problems"
GRADING_ERRORS = "grading_errors"  # responses the verifier could not grade (reason names why)

# ---------------------------------------------------------- driver timings (K15_RESULTS)
SAMPLING_SECONDS = "sampling_seconds"  # the iteration's sampling wall time
GENERATION_SECONDS = "generation_seconds"  # its engine part (also an EnvRunner metric)
SCORING_SECONDS = "scoring_seconds"  # its verifier part (also an EnvRunner metric)
LEARNER_UPDATE_SECONDS = "learner_update_seconds"
TRAIN_TOKENS_PER_S = "train_tokens_per_s"
WEIGHT_SYNC_SECONDS = "weight_sync_seconds"  # learner -> engines (also an EnvRunner metric)
ENV_RUNNER_SHARDS_REDONE = "env_runner_shards_redone"  # lifetime; restarts: fault_tolerance
ENV_RUNNERS_HUNG = "env_runners_hung"  # lifetime: runners killed for missing the deadline
# async_rollouts (rllib_k15.algorithm.async_rollouts): of the batch trained this iteration
ASYNC_STALENESS = "async/staleness"  # learner updates between its sampling policy and now
ASYNC_SAMPLING_WALL_SECONDS = "async/sampling_wall_seconds"  # its sampling, start to end
ASYNC_OVERLAP_FRACTION = "async/overlap_fraction"  # of that, spent beside a learner update
ASYNC_WAIT_SECONDS = "async/wait_seconds"  # the driver's wait for it after the update

# ------------------------------------------------ held-out evaluation (EVAL_RESULTS)
PASS_AT_1 = "pass_at_1"
PASS_AT_1_LOW = "pass_at_1_low"  # its 95 % interval, bootstrap over problems
PASS_AT_1_HIGH = "pass_at_1_high"
TRUNCATED_FRACTION = "truncated_fraction"
# also RESPONSE_TOKENS_MEAN and NUM_PROBLEMS

# ------------------------------------------------------ EnvRunner (ENV_RUNNER_RESULTS)
GENERATED_TOKENS = "generated_tokens"
GENERATION_TOKENS_PER_S = "generation_tokens_per_s"
REPEATS_DETECTED = "repeats_detected"
REPEAT_TOKENS_CUT = "repeat_tokens_cut"

# ----------------------------------------------------------- learner (LEARNER_RESULTS)
LOGP_MISMATCH_MEAN = "logp_mismatch_mean_abs"  # mean |log π_learner − log π_engine| per token
LOGP_MISMATCH_MAX = "logp_mismatch_max_abs"
GRAD_NORM = "grad_norm"
TRAIN_TOKENS = "train_tokens"
OPTIMIZER_RESETS = "optimizer_resets"
TOTAL_LOSS = "total_loss"  # RLlib's, per module
KL_REF = "kl_ref"  # OPMD: KL(π_θi ‖ π_θ) on the iteration's samples, per module

# -------------------------------------------- partial rollouts (K15_RESULTS, the driver)
PARTIAL_NEW_PROBLEMS = "partial_new_problems"  # new problems sampled this iteration
PARTIAL_STORE_FULL = "partial_store_full"  # 1 when the bound kept new problems out
PARTIAL_WAITING_GROUPS = "partial_waiting_groups"  # groups in the store after the iteration
PARTIAL_UNFINISHED_RESPONSES = "partial_unfinished_responses"  # to continue next iteration
PARTIAL_WAITING_FINISHED = "partial_waiting_finished"  # finished, waiting for their group
PARTIAL_TOKENS_CARRIED = "partial_tokens_carried"  # tokens of unfinished responses carried
PARTIAL_CONTINUED_FRAC = "partial_continued_frac"  # trained responses that took > 1 segment
PARTIAL_SEGMENTS_MEAN = "partial_segments_mean"  # segments per trained response
PARTIAL_TOKENS_REUSED = "partial_tokens_reused"  # trained tokens generated in earlier iters
PARTIAL_OLD_TOKENS_FRAC = "partial_old_tokens_frac"  # their share of the trained tokens
PARTIAL_TRAINED_GROUPS = "partial_trained_groups"  # groups complete (trained) this iteration

# -------------------------------------------------- offline trainers (flat, per step/run)
SFT_LOSS = "sft/loss"
SFT_NUM_TOKENS = "sft/num_response_tokens"
SFT_STEPS = "sft/steps"
SFT_NUM_EXAMPLES = "sft/num_examples"
SFT_NUM_SKIPPED = "sft/num_skipped_too_long"
SFT_EPOCH_LOSSES = "sft/epoch_losses"
SFT_GRAD_NORM = "sft/grad_norm"
DPO_LOSS = "dpo/loss"
DPO_REWARD_CHOSEN = "dpo/rewards_chosen"
DPO_REWARD_REJECTED = "dpo/rewards_rejected"
DPO_REWARD_MARGIN = "dpo/rewards_margin"
DPO_REWARD_ACCURACY = "dpo/rewards_accuracy"
DPO_LOGPS_CHOSEN = "dpo/logps_chosen"
DPO_LOGPS_REJECTED = "dpo/logps_rejected"
DPO_STEPS = "dpo/steps"
DPO_EPOCH_LOSSES = "dpo/epoch_losses"
DPO_NUM_PAIRS = "dpo/num_pairs"
DPO_NUM_SKIPPED = "dpo/num_skipped_too_long"
DPO_GRAD_NORM = "dpo/grad_norm"
