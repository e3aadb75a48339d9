"""Supervised fine-tuning on (prompt, response) pairs — the trainer behind shortest
rejection sampling (Kimi k1.5 §2.4: fine-tune on the shortest correct of n samples).

The loss is the negative log-likelihood of the *response* tokens only (prompt tokens and
padding are masked), averaged over all response tokens of the mini-batch:

    L = − Σ_{b,t} m_{b,t} log π_θ(y_{b,t} | x_b, y_{b,<t}) / Σ_{b,t} m_{b,t}

Optimiser: AdamW; optional bf16 autocast (weights and optimiser state stay fp32).
Structure: :func:`sft_loss` is the pure math, :func:`sft_batch_loss` the forward pass on a
packed batch, :func:`train_sft` the loop with a progress bar (AdamW, or a given
``step_fn``). On several Ray Train workers with DeepSpeed:
:func:`rllib_k15.distributed.offline.distributed_sft`.

CLI: ``k15 sft --model M --data data.parquet --out DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from rllib_k15.core.losses.sft import SFT_LOSS, SFT_NUM_TOKENS, sft_loss
from rllib_k15.core.sequences import PackedSequences, pack_sequences, token_logprobs
from rllib_k15.long2short.training import (
    AdamWStep,
    StepFn,
    autocast,
    encode_prompt,
    encode_response,
    num_batches,
    pad_token_id,
    shuffled_batches,
)

__all__ = [
    "SFT_EPOCH_LOSSES",
    "SFT_LOSS",
    "SFT_NUM_EXAMPLES",
    "SFT_NUM_SKIPPED",
    "SFT_STEPS",
    "SFTConfig",
    "encode_sft_examples",
    "evaluate_sft_loss",
    "sft_batch_loss",
    "sft_loss",
    "train_sft",
]

logger = logging.getLogger(__name__)

SFT_STEPS = "sft/steps"
SFT_NUM_EXAMPLES = "sft/num_examples"
SFT_NUM_SKIPPED = "sft/num_skipped_too_long"
SFT_EPOCH_LOSSES = "sft/epoch_losses"
SFT_GRAD_NORM = "sft/grad_norm"


class PromptResponse(Protocol):
    prompt: str
    response: str


@dataclass(frozen=True)
class SFTConfig:
    """Settings of :func:`train_sft`."""

    epochs: int = 3
    """Passes over the data. The SFT sets here are small (one example per problem)."""
    lr: float = 1e-5
    """AdamW learning rate, constant. 1e-5 suits full fine-tuning of ~100M+ models."""
    batch_size: int = 8
    """Examples per optimiser step."""
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    """Global gradient-norm clip; None disables it."""
    bf16: bool = False
    """bf16 autocast (fp32 master weights keep AdamW exact). Fast on GPUs and on CPUs with
    AVX512-BF16/AMX; on an AVX2-only CPU (``torch.backends.cpu.get_cpu_capability()``)
    bf16 matmuls are emulated and measured 2-6x *slower* than fp32 — measure first."""
    max_length: int = 2048
    """Longest prompt+response kept. Longer examples are skipped, not truncated: a cut
    response would lose its EOS and teach the model not to stop."""
    use_chat_template: bool = True
    seed: int = 0
    """Seeds the shuffling order."""
    log_every: int = 10
    progress: bool = True


def encode_sft_examples(
    tokenizer: Any, examples: Sequence[PromptResponse], config: SFTConfig
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(prompt ids, response ids) per example, and how many were skipped as too long."""
    encoded, skipped = [], 0
    for ex in examples:
        prompt = encode_prompt(tokenizer, ex.prompt, config.use_chat_template)
        response = encode_response(tokenizer, ex.response)
        if len(prompt) + len(response) > config.max_length:
            skipped += 1
            continue
        encoded.append((prompt, response))
    return encoded, skipped


def sft_batch_loss(
    model: torch.nn.Module, packed: PackedSequences, bf16: bool = False
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward pass on one packed batch and :func:`sft_loss`."""
    with autocast(model, bf16):
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    return sft_loss(token_logprobs(logits, packed.input_ids), packed.response_mask)


def _pack(batch: Sequence[tuple[list[int], list[int]]], pad: int, device: torch.device):
    packed = pack_sequences([p for p, _ in batch], [r for _, r in batch], pad)
    return PackedSequences(
        *(t.to(device) for t in (packed.input_ids, packed.attention_mask, packed.response_mask))
    )


@torch.no_grad()
def evaluate_sft_loss(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[PromptResponse], config: SFTConfig
) -> float:
    """Response-token NLL over the whole data set (token mean), without training."""
    encoded, _ = encode_sft_examples(tokenizer, examples, config)
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)
    was_training = model.training
    model.eval()
    total, n_tokens = 0.0, 0.0
    for start in range(0, len(encoded), config.batch_size):
        packed = _pack(encoded[start : start + config.batch_size], pad, device)
        loss, metrics = sft_batch_loss(model, packed, config.bf16)
        total += loss.item() * metrics[SFT_NUM_TOKENS]
        n_tokens += metrics[SFT_NUM_TOKENS]
    model.train(was_training)
    return total / max(n_tokens, 1.0)


def train_sft(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[PromptResponse],
    config: SFTConfig | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    step_fn: StepFn | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place; returns metrics (last-epoch loss, per-epoch losses …).

    ``on_step(step, metrics)`` is called after every optimiser step (e.g. to write a log).
    ``step_fn``: backward + update per mini-batch; default :class:`AdamWStep` on ``model``
    (a DeepSpeed engine passes its own, see :mod:`rllib_k15.distributed.offline`).
    """
    config = config or SFTConfig()
    if config.epochs < 1:
        raise ValueError(f"`epochs` ({config.epochs}) must be >= 1")
    encoded, skipped = encode_sft_examples(tokenizer, examples, config)
    if not encoded:
        raise ValueError(
            f"no SFT example fits `max_length` ({config.max_length}); "
            f"{skipped} of {len(examples)} were too long"
        )
    if skipped:
        logger.warning(
            "skipped %d of %d examples longer than %d tokens",
            skipped,
            len(examples),
            config.max_length,
        )
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)
    step = step_fn or AdamWStep(model, config.lr, config.weight_decay, config.max_grad_norm)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    steps, epoch_losses = 0, []
    total_steps = config.epochs * num_batches(len(encoded), config.batch_size)
    bar = tqdm(total=total_steps, desc="sft", disable=not config.progress)
    for epoch in range(config.epochs):
        losses = []
        for batch in shuffled_batches(encoded, config.batch_size, generator):
            loss, metrics = sft_batch_loss(model, _pack(batch, pad, device), config.bf16)
            metrics[SFT_GRAD_NORM] = step(loss)
            losses.append(metrics[SFT_LOSS])
            steps += 1
            if on_step is not None:
                on_step(steps, {**metrics, "sft/epoch": float(epoch)})
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{metrics[SFT_LOSS]:.4f}")
            if steps % config.log_every == 0:
                logger.info(
                    "sft step %d epoch %d loss %.4f grad_norm %.3f",
                    steps,
                    epoch,
                    metrics[SFT_LOSS],
                    metrics[SFT_GRAD_NORM],
                )
        epoch_losses.append(sum(losses) / len(losses))
        logger.info("sft epoch %d mean loss %.4f", epoch, epoch_losses[-1])
    bar.close()
    return {
        SFT_LOSS: epoch_losses[-1],
        SFT_EPOCH_LOSSES: epoch_losses,
        SFT_STEPS: steps,
        SFT_NUM_EXAMPLES: len(encoded),
        SFT_NUM_SKIPPED: skipped,
    }
