"""Supervised fine-tuning loss: the negative log-likelihood of the response tokens.

The pure math of the long2short toolbox's SFT step (shortest rejection sampling fits its
selected responses with it); the trainer is :mod:`rllib_k15.long2short.sft`.
"""

from __future__ import annotations

import torch

from rllib_k15.metric_names import (
    SFT_LOSS,
    SFT_NUM_TOKENS,
)

__all__ = ["SFT_LOSS", "SFT_NUM_TOKENS", "sft_loss"]


def sft_loss(
    token_logps: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = − Σ m·log π / Σ m over the response tokens of the batch.

    token_logps: (B, T) teacher-forced log-probs; response_mask: (B, T) 1 on response tokens.
    """
    mask = response_mask.to(torch.float32)  # (B, T)
    n_tokens = mask.sum()
    if n_tokens.item() == 0:
        raise ValueError("the batch has no response tokens")
    loss = -(token_logps.float() * mask).sum() / n_tokens
    return loss, {SFT_LOSS: loss.item(), SFT_NUM_TOKENS: n_tokens.item()}
