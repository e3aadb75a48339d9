"""Shared pieces of the small offline trainers (:mod:`.sft`, :mod:`.dpo_train`).

Tokenisation: the prompt column holds the *user message*; it is rendered with the
tokenizer's chat template by :func:`rllib_k15.engine.base.encode_chat` — the very function
the rollout engine used when it sampled the responses — so training sees the prompt
exactly as sampling did.
The response is encoded without special tokens and ends with EOS, so the model learns
where to stop — which is the point of long2short.

The step helpers are plain PyTorch. A trainer takes a ``step_fn(loss) -> grad norm`` (a
:data:`StepFn`): :class:`AdamWStep` here, or a DeepSpeed engine's backward + step from
:mod:`rllib_k15.distributed.offline`, which runs the same trainers on Ray Train workers.
Both trainers run the one epoch loop :func:`run_epochs` with their own mini-batch loss;
both commands (``k15 sft``, ``k15 dpo``) run the one skeleton :func:`run_training_command`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from rllib_k15.engine.base import encode_chat

__all__ = [
    "AdamWStep",
    "EpochsResult",
    "JsonlLog",
    "LoopConfig",
    "StepFn",
    "StepLog",
    "autocast",
    "checkpoint_dtype",
    "config_from_args",
    "encode_prompt",
    "encode_response",
    "load_for_training",
    "num_batches",
    "optimizer_step",
    "pad_token_id",
    "require_epochs",
    "run_epochs",
    "run_training_command",
    "save_hf_model",
    "shuffled_batches",
    "warn_skipped",
]

T = TypeVar("T")

StepFn = Callable[[torch.Tensor], float]
"""Backward on a mini-batch loss, one optimizer update; returns the global grad norm."""


def encode_prompt(tokenizer: Any, prompt: str, use_chat_template: bool = True) -> list[int]:
    """Token ids of the prompt; with the chat template unless ``use_chat_template`` is off."""
    if use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template; pass use_chat_template=False "
                "(CLI: --no-chat-template) to train on the raw prompt text"
            )
        return encode_chat(tokenizer, prompt)
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of the response followed by EOS (not doubled if already there)."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; cannot mark the end of a response")
    if not ids or ids[-1] != eos:
        ids.append(eos)
    return ids


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (padding is masked out either way)."""
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def shuffled_batches(
    items: Sequence[T], batch_size: int, generator: torch.Generator
) -> Iterator[list[T]]:
    """One epoch of mini-batches in a seeded random order (last batch may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` ({batch_size}) must be >= 1")
    order = torch.randperm(len(items), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        yield [items[i] for i in order[start : start + batch_size]]


def num_batches(num_items: int, batch_size: int) -> int:
    """Mini-batches per epoch of :func:`shuffled_batches`."""
    return math.ceil(num_items / batch_size)


def autocast(model: torch.nn.Module, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device (fp32 master weights), or a no-op."""
    if not bf16:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float | None,
) -> float:
    """backward, clip the global grad norm, step, zero grads. Returns the pre-clip norm."""
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm is not None and max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


class AdamWStep:
    """The single-process :data:`StepFn`: AdamW over ``model.parameters()`` and
    :func:`optimizer_step` (backward, global-norm clip, step, zero grads)."""

    def __init__(
        self, model: torch.nn.Module, lr: float, weight_decay: float, max_grad_norm: float | None
    ) -> None:
        self.model = model
        self.max_grad_norm = max_grad_norm
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def __call__(self, loss: torch.Tensor) -> float:
        return optimizer_step(self.model, self.optimizer, loss, self.max_grad_norm)


class LoopConfig(Protocol):
    """The settings :func:`run_epochs` reads (``SFTConfig`` and ``DPOTrainConfig`` have them)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    max_grad_norm: float | None
    seed: int
    log_every: int
    progress: bool


@dataclasses.dataclass(frozen=True)
class StepLog:
    """How one trainer's :func:`run_epochs` names its metrics and reports its steps."""

    name: str
    """E.g. "sft": the progress bar's label, the log lines' head, the ``<name>/epoch`` metric."""
    loss: str
    """Metric name of the mini-batch loss (averaged into the epoch losses)."""
    grad_norm: str
    """Metric name the step's global grad norm is stored under."""
    describe: Callable[[Mapping[str, float]], str]
    """The tail of the log line written every ``log_every`` steps."""
    postfix: Callable[[Mapping[str, float]], dict[str, str]]
    """Progress-bar fields shown after ``epoch``."""
    logger: logging.Logger


@dataclasses.dataclass(frozen=True)
class EpochsResult:
    """What :func:`run_epochs` returns."""

    epoch_losses: list[float]
    """Mean mini-batch loss of each epoch."""
    steps: int
    last: dict[str, float]
    """The metrics of the last step (its grad norm included)."""


def require_epochs(config: LoopConfig) -> None:
    """Reject ``epochs < 1`` before any work is done."""
    if config.epochs < 1:
        raise ValueError(f"`epochs` ({config.epochs}) must be >= 1")


def warn_skipped(
    logger: logging.Logger, skipped: int, total: int, what: str, max_length: int
) -> None:
    """Log how many of ``total`` items were dropped as longer than ``max_length`` tokens."""
    if skipped:
        logger.warning(
            "skipped %d of %d %s longer than %d tokens", skipped, total, what, max_length
        )


def run_epochs(
    model: torch.nn.Module,
    items: Sequence[T],
    loss_fn: Callable[[list[T]], tuple[torch.Tensor, dict[str, float]]],
    config: LoopConfig,
    log: StepLog,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    step_fn: StepFn | None = None,
) -> EpochsResult:
    """The training loop of both offline trainers: ``config.epochs`` passes over ``items``
    in :func:`shuffled_batches` (one generator seeded with ``config.seed``), per mini-batch
    ``loss, metrics = loss_fn(batch)`` then ``step_fn(loss)`` (default :class:`AdamWStep`),
    ``on_step(step, metrics + {<name>/epoch})``, a progress bar and a log line every
    ``config.log_every`` steps. The model is put in train mode first.
    """
    step = step_fn or AdamWStep(model, config.lr, config.weight_decay, config.max_grad_norm)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    steps, epoch_losses, last = 0, [], {}
    total = config.epochs * num_batches(len(items), config.batch_size)
    bar = tqdm(total=total, desc=log.name, disable=not config.progress)
    for epoch in range(config.epochs):
        losses = []
        for batch in shuffled_batches(items, config.batch_size, generator):
            loss, last = loss_fn(batch)
            last[log.grad_norm] = step(loss)
            losses.append(last[log.loss])
            steps += 1
            if on_step is not None:
                on_step(steps, {**last, f"{log.name}/epoch": float(epoch)})
            bar.update(1)
            bar.set_postfix(epoch=epoch, **log.postfix(last))
            if steps % config.log_every == 0:
                log.logger.info(
                    "%s step %d epoch %d %s", log.name, steps, epoch, log.describe(last)
                )
        epoch_losses.append(sum(losses) / len(losses))
        log.logger.info("%s epoch %d mean loss %.4f", log.name, epoch, epoch_losses[-1])
    bar.close()
    return EpochsResult(epoch_losses, steps, last)


def checkpoint_dtype(model_dir: str | Path) -> str:
    """The dtype a HF directory was saved in (``config.json``), "float32" if unstated."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype).removeprefix("torch.")


def save_hf_model(
    model: Any, tokenizer: Any, out_dir: str | Path, dtype: str | torch.dtype | None = None
) -> Path:
    """Save a plain Hugging Face directory (safetensors + config + tokenizer).

    ``dtype`` casts the model first (e.g. back to the bf16 of the input checkpoint after
    fp32 training); None saves it as it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_for_training(name_or_path: str | Path) -> tuple[Any, Any, Path]:
    """(fp32 model in train mode, tokenizer, resolved HF directory) for a model name/path.

    Weights are loaded in float32 (master weights for AdamW); use bf16 autocast for speed.
    """
    from rllib_k15.models import load_hf_model, load_tokenizer, resolve_model

    path = Path(resolve_model(name_or_path))
    model = load_hf_model(path, dtype="float32")
    model.train()
    return model, load_tokenizer(path), path


class JsonlLog:
    """Append one JSON object per call to ``path`` (the per-step training log)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")


# ------------------------------------------------------- the `k15 sft` / `k15 dpo` body
C = TypeVar("C")


def config_from_args(config_cls: type[C], args: argparse.Namespace, **extra: Any) -> C:
    """The trainer settings shared by ``k15 sft`` and ``k15 dpo`` from their flags
    (``--max-grad-norm <= 0`` disables clipping), plus ``extra`` (e.g. DPO's β)."""
    return config_cls(
        **extra,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        bf16=args.bf16,
        max_length=args.max_length,
        use_chat_template=not args.no_chat_template,
        seed=args.seed,
        progress=not args.no_progress,
    )


def run_training_command(
    args: argparse.Namespace,
    *,
    command: str,
    config: Any,
    data: str,
    read: Callable[[str], Sequence[Any]],
    what: str,
    train: Callable[[Any, Any, Sequence[Any], Path], dict[str, Any]],
    inputs: Mapping[str, str],
    report: Callable[[dict[str, Any], Path], str],
    check: Callable[[], None] | None = None,
) -> int:
    """The body of ``k15 <command>``; returns its exit code (2 on bad input or model).

    ``check()``, ``read(data)`` (must hold some ``what``), seed torch with ``--seed``, load
    ``--model`` (fp32), ``train(model, tokenizer, items, metrics_path)`` (which logs its
    steps to ``--out``/metrics.jsonl), save ``--out`` as a HF directory in ``--save-dtype``,
    write ``k15_<command>.json`` (``inputs``, config, saved dtype, metrics) and print
    ``report(metrics, out)``.
    """
    from rllib_k15.models import ModelNotFoundError

    try:
        if check is not None:
            check()
        items = read(data)
        if not items:
            raise ValueError(f"{data} holds no {what}")
        torch.manual_seed(args.seed)
        model, tokenizer, path = load_for_training(args.model)
        out = Path(args.out)
        metrics = train(model, tokenizer, items, out / "metrics.jsonl")
    except (ValueError, FileNotFoundError, ModelNotFoundError) as err:
        print(f"k15 {command}: error: {err}", file=sys.stderr)
        return 2
    dtype = checkpoint_dtype(path) if args.save_dtype == "auto" else args.save_dtype
    save_hf_model(model, tokenizer, out, dtype=dtype)
    summary = {
        **inputs,
        "config": dataclasses.asdict(config),
        "saved_dtype": dtype,
        "metrics": metrics,
    }
    (out / f"k15_{command}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report(metrics, out))
    return 0
