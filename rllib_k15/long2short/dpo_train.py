"""DPO training on long2short preference pairs (Kimi k1.5 §2.4), plain PyTorch.

The policy starts from the long-CoT model; the reference π_ref is that starting model,
frozen (or any ``ref_model`` given). Reference sequence log-probs (sums over response
tokens) are computed once for the whole data set before the first update — with
``ref_model=None`` from the policy itself, so no second copy of the weights is held — and
each step needs only the policy's forward pass over ``[chosen rows; rejected rows]``.
The loss is :func:`rllib_k15.core.losses.dpo.dpo_loss`.

Structure: :func:`dpo_batch_loss` (forward + pure loss), :func:`train_dpo` (the shared
loop :func:`rllib_k15.long2short.training.run_epochs` with that loss: AdamW or a given
``step_fn``, optional bf16 autocast, progress bar, logged metrics). On several Ray Train
workers with DeepSpeed: :func:`rllib_k15.distributed.offline.distributed_dpo`.

CLI: ``k15 dpo --model M --pairs pairs.parquet --beta 0.1 --out DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rllib_k15.core.losses.dpo import dpo_loss, sequence_logps
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
    DPO_EPOCH_LOSSES,
    DPO_GRAD_NORM,
    DPO_LOSS,
    DPO_NUM_PAIRS,
    DPO_NUM_SKIPPED,
    DPO_REWARD_ACCURACY,
    DPO_STEPS,
)

__all__ = [
    "DPO_EPOCH_LOSSES",
    "DPO_GRAD_NORM",
    "DPO_LOSS",
    "DPO_NUM_PAIRS",
    "DPO_NUM_SKIPPED",
    "DPO_REWARD_ACCURACY",
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


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    """Progress-bar fields: loss and reward accuracy."""
    return {"loss": f"{metrics[DPO_LOSS]:.4f}", "acc": f"{metrics[DPO_REWARD_ACCURACY]:.2f}"}


_STEP_LOG = StepLog(
    name="dpo",
    loss=DPO_LOSS,
    grad_norm=DPO_GRAD_NORM,
    describe=lambda metrics: " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
    postfix=_postfix,
    logger=logger,
)


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
    require_epochs(config)
    encoded, skipped, ref = _prepare(model, ref_model, tokenizer, pairs, config)
    warn_skipped(logger, skipped, len(pairs), "pairs", config.max_length)
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)

    def batch_loss(batch: list[EncodedPair]) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.tensor([p.index for p in batch])
        packed = pack_pairs(batch, pad, device)
        return dpo_batch_loss(model, packed, ref[idx, 0], ref[idx, 1], config.beta, config.bf16)

    result = run_epochs(model, encoded, batch_loss, config, _STEP_LOG, on_step, step_fn)
    return {
        **result.last,
        DPO_LOSS: result.epoch_losses[-1],
        DPO_EPOCH_LOSSES: result.epoch_losses,
        DPO_STEPS: result.steps,
        DPO_NUM_PAIRS: len(encoded),
        DPO_NUM_SKIPPED: skipped,
    }
