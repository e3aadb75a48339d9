"""Token-sequence utilities shared by the learner and the reference engine.

A response is scored by teacher forcing: the model sees ``prompt + response`` and the
log-probability of every response token is read off the logits of the position before it.
These helpers are pure (tensors in, tensors out) and importable without Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PackedSequences", "pack_sequences", "token_logprobs", "response_token_logprobs"]


@dataclass(frozen=True)
class PackedSequences:
    """Right-padded ``prompt + response`` rows.

    input_ids:       (B, T) token ids, padded with ``pad_token_id``.
    attention_mask:  (B, T) 1 for real tokens.
    response_mask:   (B, T) 1 where the token is part of the response (what is scored).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor


def pack_sequences(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_token_id: int,
) -> PackedSequences:
    """Concatenate each prompt with its response and right-pad to the longest row."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("pack_sequences needs at least one sequence")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    batch, width = len(prompts), max(lengths)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        n_prompt, n_total = len(prompt), len(prompt) + len(response)
        input_ids[row, :n_total] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[row, :n_total] = 1
        response_mask[row, n_prompt:n_total] = 1
    return PackedSequences(input_ids, attention_mask, response_mask)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for every position t >= 1; position 0 gets 0.

    logits: (B, T, V) from a causal LM over ``input_ids`` (B, T).
    Returns (B, T) float32; entry [b, t] is the log-prob of input_ids[b, t].
    Computed as logit - logsumexp(logits) in float32 to avoid materialising a full
    (B, T, V) log-softmax in low precision.
    """
    shifted = logits[:, :-1, :].float()  # (B, T-1, V)
    targets = input_ids[:, 1:]  # (B, T-1)
    picked = torch.gather(shifted, -1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    out = picked - torch.logsumexp(shifted, dim=-1)  # (B, T-1)
    return torch.nn.functional.pad(out, (1, 0), value=0.0)  # (B, T)


def response_token_logprobs(model: torch.nn.Module, packed: PackedSequences) -> torch.Tensor:
    """Teacher-forced log-probs of the response tokens, zero elsewhere. Returns (B, T)."""
    logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    return token_logprobs(logits, packed.input_ids) * packed.response_mask
