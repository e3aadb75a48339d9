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
GROUP_IDS = "group_ids"  # (B,) problem index; rows with equal ids are one problem's k samples
CORRECT = "correct"  # (B,) verifier verdict 0/1 (ReST selection, O1-Pruner accuracy)
ADVANTAGES = "advantages"  # (B,) the loss's per-row signal, set by the learner (losses.prepare)
INIT_LOGP = "init_logp"  # (B, T) log π of the frozen initial model (GRPO's KL), by the learner
IMAGE_PREFIX = "image_"  # image problems: image_<name> (B, ...) per processor image tensor


def image_columns(batch) -> dict:
    """``{name: column}`` of the image tensors in ``batch`` (``image_pixel_values`` ->
    ``pixel_values``): what a VLM's forward takes besides the tokens."""
    return {k[len(IMAGE_PREFIX) :]: v for k, v in batch.items() if k.startswith(IMAGE_PREFIX)}
