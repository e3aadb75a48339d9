"""Token-sequence utilities shared by the learner and the reference engine.

A response is scored by teacher forcing: the model sees ``prompt + response`` and the
log-probability of every response token is read off the logits of the position before it.
These helpers are pure (tensors in, tensors out) and importable without Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "PackedSequences",
    "logits_to_keep",
    "pack_sequences",
    "response_token_logprobs",
    "token_logprobs",
]


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
    """log p(x_t | x_<t) for the positions the logits cover; every other position gets 0.

    logits: (B, L, V) from a causal LM over ``input_ids`` (B, T), for the LAST L positions
    (L = T for a full forward; L < T when the model ran with ``logits_to_keep=L``, which
    skips the vocabulary projection of the prompt). With offset o = T - L, entry [b, t] for
    t in (o, T) is logits[b, t-1-o, x_t] - logsumexp(logits[b, t-1-o]); entries t <= o are 0.
    Returns (B, T) float32. Computed as logit - logsumexp in float32 to avoid materialising
    a full (B, L, V) log-softmax in low precision.
    """
    offset = input_ids.shape[1] - logits.shape[1]
    if offset < 0:
        raise ValueError(
            f"logits cover {logits.shape[1]} positions but input_ids has only {input_ids.shape[1]}"
        )
    shifted = logits[:, :-1, :].float()  # (B, L-1, V)
    targets = input_ids[:, offset + 1 :]  # (B, L-1)
    picked = torch.gather(shifted, -1, targets.unsqueeze(-1)).squeeze(-1)  # (B, L-1)
    out = picked - torch.logsumexp(shifted, dim=-1)  # (B, L-1)
    return torch.nn.functional.pad(out, (offset + 1, 0), value=0.0)  # (B, T)


def logits_to_keep(response_mask: torch.Tensor) -> int:
    """How many trailing positions need logits to score every response token.

    A response token at position t is predicted by the logits at t-1, so with f the first
    response position over all rows, positions f-1 … T-1 are needed: T - f + 1 of them.
    Returns T (all) when there is no response token or it starts at position 0.
    """
    total = response_mask.shape[1]
    has_response = response_mask.any(dim=1)
    if not bool(has_response.any()):
        return total
    first = int(response_mask[has_response].float().argmax(dim=1).min())
    return total - max(first - 1, 0)


def response_token_logprobs(model: torch.nn.Module, packed: PackedSequences) -> torch.Tensor:
    """Teacher-forced log-probs of the response tokens, zero elsewhere. Returns (B, T)."""
    logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    return token_logprobs(logits, packed.input_ids) * packed.response_mask
