"""Supervised fine-tuning on (prompt, response) pairs — the trainer behind shortest
rejection sampling (Kimi k1.5 §2.4: fine-tune on the shortest correct of n samples).

The loss is the negative log-likelihood of the *response* tokens only (prompt tokens and
padding are masked), averaged over all response tokens of the mini-batch:

    L = − Σ_{b,t} m_{b,t} log π_θ(y_{b,t} | x_b, y_{b,<t}) / Σ_{b,t} m_{b,t}

Optimiser: AdamW; optional bf16 autocast (weights and optimiser state stay fp32).
Structure: :func:`sft_loss` is the pure math, :func:`sft_batch_loss` the forward pass on a
packed batch, :func:`train_sft` the shared loop
:func:`rllib_k15.long2short.training.run_epochs` with that loss (AdamW, or a given
``step_fn``). On several Ray Train workers with DeepSpeed:
:func:`rllib_k15.distributed.offline.distributed_sft`.

CLI: ``k15 sft --model M --data data.parquet --out DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rllib_k15.core.losses.sft import sft_loss
from rllib_k15.core.sequences import PackedSequences, pack_sequences, token_logprobs
from rllib_k15.long2short.training import (
    StepFn,
    StepLog,
    autocast,
    encode_prompt,
    encode_response,
    pad_token_id,
    require_epochs,
    run_epochs,
    warn_skipped,
)
from rllib_k15.metric_names import (
    SFT_EPOCH_LOSSES,
    SFT_GRAD_NORM,
    SFT_LOSS,
    SFT_NUM_EXAMPLES,
    SFT_NUM_SKIPPED,
    SFT_NUM_TOKENS,
    SFT_STEPS,
)

__all__ = [
    "SFT_EPOCH_LOSSES",
    "SFT_GRAD_NORM",
    "SFT_LOSS",
    "SFT_NUM_EXAMPLES",
    "SFT_NUM_SKIPPED",
    "SFT_NUM_TOKENS",
    "SFT_STEPS",
    "SFTConfig",
    "encode_sft_examples",
    "evaluate_sft_loss",
    "sft_batch_loss",
    "sft_loss",
    "train_sft",
]

logger = logging.getLogger(__name__)


def _describe(metrics: Mapping[str, float]) -> str:
    """The tail of the every-``log_every`` log line: loss and grad norm."""
    return f"loss {metrics[SFT_LOSS]:.4f} grad_norm {metrics[SFT_GRAD_NORM]:.3f}"


_STEP_LOG = StepLog(
    name="sft",
    loss=SFT_LOSS,
    grad_norm=SFT_GRAD_NORM,
    describe=_describe,
    postfix=lambda metrics: {"loss": f"{metrics[SFT_LOSS]:.4f}"},
    logger=logger,
)


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
    require_epochs(config)
    encoded, skipped = encode_sft_examples(tokenizer, examples, config)
    if not encoded:
        raise ValueError(
            f"no SFT example fits `max_length` ({config.max_length}); "
            f"{skipped} of {len(examples)} were too long"
        )
    warn_skipped(logger, skipped, len(examples), "examples", config.max_length)
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)

    def batch_loss(
        batch: list[tuple[list[int], list[int]]],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_batch_loss(model, _pack(batch, pad, device), config.bf16)

    result = run_epochs(model, encoded, batch_loss, config, _STEP_LOG, on_step, step_fn)
    return {
        SFT_LOSS: result.epoch_losses[-1],
        SFT_EPOCH_LOSSES: result.epoch_losses,
        SFT_STEPS: result.steps,
        SFT_NUM_EXAMPLES: len(encoded),
        SFT_NUM_SKIPPED: skipped,
    }
