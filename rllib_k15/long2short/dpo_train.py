"""DPO training on long2short preference pairs (Kimi k1.5 §2.4), plain PyTorch.

The policy starts from the long-CoT model; the reference π_ref is that starting model,
frozen (or any ``ref_model`` given). Reference sequence log-probs (sums over response
tokens) are computed once for the whole data set before the first update — with
``ref_model=None`` from the policy itself, so no second copy of the weights is held — and
each step needs only the policy's forward pass over ``[chosen rows; rejected rows]``.
The loss is :func:`rllib_k15.core.losses.dpo.dpo_loss`.

Structure: :func:`dpo_batch_loss` (forward + pure loss), :func:`train_dpo` (the loop:
AdamW or a given ``step_fn``, optional bf16 autocast, progress bar, logged metrics). On
several Ray Train workers with DeepSpeed: :func:`rllib_k15.distributed.offline.distributed_dpo`.

CLI: ``k15 dpo --model M --pairs pairs.parquet --beta 0.1 --out DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from rllib_k15.core.losses.dpo import DPO_LOSS, DPO_REWARD_ACCURACY, dpo_loss, sequence_logps
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
    "DPO_EPOCH_LOSSES",
    "DPO_STEPS",
    "DPOTrainConfig",
    "EncodedPair",
    "dpo_batch_loss",
    "encode_pairs",
    "evaluate_dpo",
    "pack_pairs",
    "pair_logps",
    "train_dpo",
]

logger = logging.getLogger(__name__)

DPO_STEPS = "dpo/steps"
DPO_EPOCH_LOSSES = "dpo/epoch_losses"
DPO_NUM_PAIRS = "dpo/num_pairs"
DPO_NUM_SKIPPED = "dpo/num_skipped_too_long"
DPO_GRAD_NORM = "dpo/grad_norm"


class Pair(Protocol):
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one preference pair; ``index`` keys its reference log-probs."""

    index: int
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


@dataclass(frozen=True)
class DPOTrainConfig:
    """Settings of :func:`train_dpo`."""

    beta: float = 0.1
    """KL strength of DPO: small β lets the policy move further from the reference."""
    epochs: int = 1
    lr: float = 1e-6
    """AdamW learning rate, constant. DPO wants a much smaller rate than SFT."""
    batch_size: int = 4
    """Pairs per optimiser step (the forward pass sees 2× as many rows)."""
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    bf16: bool = False
    """bf16 autocast (fp32 master weights keep AdamW exact). Fast on GPUs and on CPUs with
    AVX512-BF16/AMX; on an AVX2-only CPU (``torch.backends.cpu.get_cpu_capability()``)
    bf16 matmuls are emulated and measured 2-6x *slower* than fp32 — measure first."""
    max_length: int = 2048
    """Pairs whose prompt + longer response exceed it are skipped (not truncated)."""
    use_chat_template: bool = True
    seed: int = 0
    log_every: int = 10
    progress: bool = True


def encode_pairs(
    tokenizer: Any, pairs: Sequence[Pair], config: DPOTrainConfig
) -> tuple[list[EncodedPair], int]:
    """Tokenise the pairs; returns those within ``max_length`` and the number skipped."""
    encoded, skipped = [], 0
    for pair in pairs:
        prompt = encode_prompt(tokenizer, pair.prompt, config.use_chat_template)
        chosen = encode_response(tokenizer, pair.chosen)
        rejected = encode_response(tokenizer, pair.rejected)
        if len(prompt) + max(len(chosen), len(rejected)) > config.max_length:
            skipped += 1
            continue
        encoded.append(EncodedPair(len(encoded), prompt, chosen, rejected))
    return encoded, skipped


def pack_pairs(batch: Sequence[EncodedPair], pad: int, device: torch.device) -> PackedSequences:
    """Rows ``[chosen_0 … chosen_{B-1}, rejected_0 … rejected_{B-1}]``, shape (2B, T)."""
    prompts = [p.prompt for p in batch] * 2
    responses = [p.chosen for p in batch] + [p.rejected for p in batch]
    packed = pack_sequences(prompts, responses, pad)
    return PackedSequences(
        packed.input_ids.to(device),
        packed.attention_mask.to(device),
        packed.response_mask.to(device),
    )


def _chosen_rejected_logps(
    model: torch.nn.Module, packed: PackedSequences, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(model, bf16):
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    logps = sequence_logps(token_logprobs(logits, packed.input_ids), packed.response_mask)
    chosen, rejected = logps.chunk(2, dim=0)  # (B,), (B,)
    return chosen, rejected


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module,
    encoded: Sequence[EncodedPair],
    pad: int,
    batch_size: int,
    bf16: bool = False,
) -> torch.Tensor:
    """(N, 2) sequence log-probs [chosen, rejected] of a frozen model, row i = pair i.

    Used for the reference model (and, by :func:`evaluate_dpo`, for the policy).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(encoded), 2)
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        chosen, rejected = _chosen_rejected_logps(model, pack_pairs(batch, pad, device), bf16)
        idx = torch.tensor([p.index for p in batch])
        out[idx] = torch.stack([chosen, rejected], dim=-1).cpu()
    model.train(was_training)
    return out


def dpo_batch_loss(
    model: torch.nn.Module,
    packed: PackedSequences,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    bf16: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy forward on a :func:`pack_pairs` batch, then :func:`dpo_loss`."""
    chosen, rejected = _chosen_rejected_logps(model, packed, bf16)
    device = chosen.device
    return dpo_loss(
        chosen, rejected, ref_chosen_logps.to(device), ref_rejected_logps.to(device), beta
    )


def _prepare(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[Pair],
    config: DPOTrainConfig,
) -> tuple[list[EncodedPair], int, torch.Tensor]:
    encoded, skipped = encode_pairs(tokenizer, pairs, config)
    if not encoded:
        raise ValueError(
            f"no DPO pair fits `max_length` ({config.max_length}); "
            f"{skipped} of {len(pairs)} were too long"
        )
    # π_ref = the starting policy: before the first update the policy *is* that model,
    # so its log-probs are computed from ``model`` itself — no copy of the weights needed.
    ref = pair_logps(
        model if ref_model is None else ref_model,
        encoded,
        pad_token_id(tokenizer),
        config.batch_size,
        config.bf16,
    )
    return encoded, skipped, ref


@torch.no_grad()
def evaluate_dpo(
    model: torch.nn.Module,
    ref_model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[Pair],
    config: DPOTrainConfig,
) -> dict[str, float]:
    """DPO loss and reward metrics of ``model`` over all pairs, no update.

    Sequence log-probs are computed in mini-batches; the loss is then taken over all pairs
    at once, so the result does not depend on ``batch_size``.
    """
    encoded, _, ref = _prepare(model, ref_model, tokenizer, pairs, config)
    policy = pair_logps(model, encoded, pad_token_id(tokenizer), config.batch_size, config.bf16)
    _, metrics = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], config.beta)
    return metrics


def train_dpo(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[Pair],
    config: DPOTrainConfig | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    step_fn: StepFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place with DPO; ``ref_model=None`` means π_ref = the starting model.

    ``on_step(step, metrics)`` is called after every optimiser step (e.g. to write a log).
    ``step_fn``: backward + update per mini-batch; default :class:`AdamWStep` on ``model``
    (a DeepSpeed engine passes its own, see :mod:`rllib_k15.distributed.offline`).
    """
    config = config or DPOTrainConfig()
    if config.epochs < 1:
        raise ValueError(f"`epochs` ({config.epochs}) must be >= 1")
    encoded, skipped, ref = _prepare(model, ref_model, tokenizer, pairs, config)
    if skipped:
        logger.warning(
            "skipped %d of %d pairs longer than %d tokens", skipped, len(pairs), config.max_length
        )
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)
    step = step_fn or AdamWStep(model, config.lr, config.weight_decay, config.max_grad_norm)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    steps, epoch_losses = 0, []
    last: dict[str, float] = {}
    total = config.epochs * num_batches(len(encoded), config.batch_size)
    bar = tqdm(total=total, desc="dpo", disable=not config.progress)
    for epoch in range(config.epochs):
        losses = []
        for batch in shuffled_batches(encoded, config.batch_size, generator):
            idx = torch.tensor([p.index for p in batch])
            loss, last = dpo_batch_loss(
                model,
                pack_pairs(batch, pad, device),
                ref[idx, 0],
                ref[idx, 1],
                config.beta,
                config.bf16,
            )
            last[DPO_GRAD_NORM] = step(loss)
            losses.append(last[DPO_LOSS])
            steps += 1
            if on_step is not None:
                on_step(steps, {**last, "dpo/epoch": float(epoch)})
            bar.update(1)
            bar.set_postfix(
                epoch=epoch, loss=f"{last[DPO_LOSS]:.4f}", acc=f"{last[DPO_REWARD_ACCURACY]:.2f}"
            )
            if steps % config.log_every == 0:
                logger.info(
                    "dpo step %d epoch %d %s",
                    steps,
                    epoch,
                    " ".join(f"{k}={v:.4f}" for k, v in last.items()),
                )
        epoch_losses.append(sum(losses) / len(losses))
        logger.info("dpo epoch %d mean loss %.4f", epoch, epoch_losses[-1])
    bar.close()
    return {
        **last,
        DPO_LOSS: epoch_losses[-1],
        DPO_EPOCH_LOSSES: epoch_losses,
        DPO_STEPS: steps,
        DPO_NUM_PAIRS: len(encoded),
        DPO_NUM_SKIPPED: skipped,
    }
