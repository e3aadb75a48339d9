"""Names of the train-batch columns shared by batching, the RLModule and the learner."""

INPUT_IDS = "input_ids"  # (B, T) prompt + response, right-padded
ATTENTION_MASK = "attention_mask"  # (B, T)
LOSS_MASK = "loss_mask"  # (B, T) response tokens that count in the loss
RESPONSE_MASK = "response_mask"  # (B, T) all response tokens (for reference log-probs)
SAMPLE_LOGP = "sample_logp"  # (B, T) the engine's sampling log-probs (0 off-response)
REF_LOGP = "ref_logp"  # (B, T) log π_θi by the learner's model at the iteration start
REWARDS = "rewards"  # (B,) task reward + weighted length reward (+ penalties)
BASELINES = "baselines"  # (B,) per-problem baseline ≈ τ log Z
TOKEN_LOGP = "token_logp"  # forward_train output: (B, T) log π_θ
