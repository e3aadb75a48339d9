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
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from rllib_k15.engine.base import encode_chat

__all__ = [
    "AdamWStep",
    "JsonlLog",
    "StepFn",
    "autocast",
    "checkpoint_dtype",
    "encode_prompt",
    "encode_response",
    "load_for_training",
    "num_batches",
    "optimizer_step",
    "pad_token_id",
    "save_hf_model",
    "shuffled_batches",
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
