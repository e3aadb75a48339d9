"""Implicit chain of thought by stepwise internalization (Deng, Choi & Shieber, "From
Explicit CoT to Implicit CoT: Learning to Internalize CoT Step by Step", 2024).

A model first learns to multiply with an explicit chain of thought; then, epoch by epoch, the
first CoT tokens are removed from its training targets until it answers with no CoT at all.

Data (:func:`generate_problems`): ``a * b`` with ``a`` of d_a and ``b`` of d_b digits
(``sizes`` such as ``((2, 2), (3, 3))``), question ``What is a * b?``. The CoT
(:func:`multiplication_cot`) lists the partial products of ``a`` with each digit of ``b``,
least significant first and shifted (``47*6=282 47*80=3760``), then the running sums
(``282+3760=4042``); the response is the CoT, then the delimiter ``\\n#### `` and the answer.
A question is a test problem iff ``split_of(content_key(question), test_fraction) == "test"``
(:mod:`k15_envs.splits`); every problem goes to ``problems.jsonl`` in the ``k15/Math-v0``
format, whose ``split="test"`` selects the same test set for ``k15 eval``.

Training (the response ids are CoT ids ``c_1 … c_L`` then the tail: delimiter, answer, EOS):

* stage 0, ``cot_epochs`` epochs: SFT on the full CoT;
* removal, ``⌈L_max / Δ⌉`` epochs of S optimiser steps (Δ = ``remove_per_epoch``): at step t
  of the phase ``s(t) = ⌊t Δ / S⌋`` (:func:`removal_schedule`, Δ more tokens per epoch) and
  example i drops its first ``min(L_i, s(t) + o_i)`` CoT tokens (:func:`remove_front`; the
  delimiter and answer are never touched), with the **removal smoothing**
  ``o_i ~ P(o) = (1 − e^{−λ}) e^{−λ o}``, o = 0, 1, … (:func:`sample_offsets`; λ = ∞: none);
  the AdamW optimiser is **reset** at every step where ``s(t) > s(t − 1)`` while CoT remains
  (:func:`reset_steps`);
* ``final_epochs`` more epochs with no CoT left.

Loss: :func:`rllib_k15.core.losses.sft.sft_loss` on the kept CoT + tail tokens (prompt masked).
After every epoch the model answers the test problems greedily: exact-answer accuracy (the
text after the last ``####``), mean generated CoT tokens, mean response tokens
-> ``report.json`` and ``internalize.png``.

Where this differs from the paper: the paper writes operands and CoT with the digits reversed
(least significant first) after a raw ``a × b ||`` prompt; here the digits are in their usual
order inside the model's chat template, so ``k15 eval`` can grade the answers. The paper's
code steps s every ``round(S/Δ)`` steps (the same as ``⌊tΔ/S⌋`` when Δ divides S) and caps o
at 100. Resumable per epoch (``checkpoint/`` with ``state.json``); a resumed run starts a
fresh AdamW at the epoch boundary, which the schedule resets there anyway during removal.

CLI: ``k15 long2short internalize`` (:mod:`rllib_k15.commands.long2short_methods.internalize`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rllib_k15.long2short.training import AdamWStep

__all__ = [
    "DELIMITER",
    "Encoded",
    "InternalizeError",
    "MulProblem",
    "RemovalLoss",
    "ResettableAdamW",
    "encode_problems",
    "final_answer",
    "generate_problems",
    "multiplication_cot",
    "removal_epochs",
    "removal_schedule",
    "remove_front",
    "reset_steps",
    "sample_offsets",
    "smoothing_pmf",
    "write_problems_jsonl",
]

DELIMITER = "####"
PROBLEMS_FILE, REPORT_JSON, REPORT_PNG = "problems.jsonl", "report.json", "internalize.png"
CHECKPOINT, STATE, METRICS = "checkpoint", "state.json", "metrics.jsonl"


class InternalizeError(ValueError):
    """Bad input or an output of another run in the way (the message names it)."""


# ----------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class MulProblem:
    """``a * b``: its question, answer and explicit CoT."""

    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} * {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a * self.b)

    @property
    def cot(self) -> str:
        return multiplication_cot(self.a, self.b)


def multiplication_cot(a: int, b: int) -> str:
    """``a*(b_i 10^i)=p_i`` for each digit b_i of b (least significant first), then the
    running sums ``S_{i-1}+p_i=S_i`` (S_0 = p_0), space-separated."""
    digits = [int(d) for d in reversed(str(b))]
    partials = [a * d * 10**i for i, d in enumerate(digits)]
    parts = [f"{a}*{d * 10**i}={p}" for i, (d, p) in enumerate(zip(digits, partials, strict=True))]
    total = partials[0]
    for p in partials[1:]:
        parts.append(f"{total}+{p}={total + p}")
        total += p
    return " ".join(parts)


def generate_problems(
    sizes: Sequence[tuple[int, int]],
    num_train: int,
    num_test: int,
    seed: int = 0,
    test_fraction: float = 0.1,
) -> tuple[list[MulProblem], list[MulProblem]]:
    """The first ``num_train`` train and ``num_test`` test problems of a seeded stream:
    candidate j has size ``sizes[j % len(sizes)]``; duplicates are skipped; the split of a
    problem is ``split_of(content_key(question), test_fraction)``."""
    from k15_envs.splits import content_key, split_of

    rng, seen = random.Random(seed), set()
    out: dict[str, list[MulProblem]] = {"train": [], "test": []}
    want = {"train": num_train, "test": num_test}
    limit = math.ceil(4 * num_test / test_fraction) + 4 * num_train + 1000
    for j in range(limit):
        da, db = sizes[j % len(sizes)]
        problem = MulProblem(
            rng.randint(10 ** (da - 1), 10**da - 1), rng.randint(10 ** (db - 1), 10**db - 1)
        )
        split = split_of(content_key(problem.question), test_fraction)
        if problem.question not in seen and len(out[split]) < want[split]:
            seen.add(problem.question)
            out[split].append(problem)
        if all(len(out[k]) == want[k] for k in want):
            return out["train"], out["test"]
    raise InternalizeError(
        f"--sizes {list(sizes)}: only {len(out['train'])} train and {len(out['test'])} test "
        f"distinct problems among {limit} candidates; ask for fewer or larger ones"
    )


def write_problems_jsonl(
    train: Sequence[MulProblem], test: Sequence[MulProblem], path: Path
) -> Path:
    """Every problem as a ``k15/Math-v0`` row: id, problem, answer (and its split)."""
    rows = [
        {"id": f"{split}-{i:05d}", "problem": p.question, "answer": p.answer, "split": split}
        for split, problems in (("train", train), ("test", test))
        for i, p in enumerate(problems)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def final_answer(text: str) -> str | None:
    """The first word after the last ``####`` (None if there is none)."""
    if DELIMITER not in text:
        return None
    words = text.rsplit(DELIMITER, 1)[1].split()
    return words[0] if words else None


# ----------------------------------------------------------------- the removal rule
def removal_schedule(t: int, steps_per_epoch: int, delta: int) -> int:
    """s(t) = ⌊t Δ / S⌋: CoT tokens removed at step t (>= 0) of the removal phase."""
    return (t * delta) // steps_per_epoch


def removal_epochs(max_cot: int, delta: int) -> int:
    """⌈L_max / Δ⌉: removal epochs until s reaches the longest CoT."""
    return math.ceil(max_cot / delta)


def reset_steps(num_steps: int, steps_per_epoch: int, delta: int, max_cot: int) -> list[int]:
    """The steps t in [1, num_steps) where s(t) > s(t − 1) and s(t − 1) < L_max (CoT left)."""
    s = [removal_schedule(t, steps_per_epoch, delta) for t in range(num_steps)]
    return [t for t in range(1, num_steps) if s[t] > s[t - 1] and s[t - 1] < max_cot]


def smoothing_pmf(o: int, lam: float) -> float:
    """P(o) = (1 − e^{−λ}) e^{−λ o} for o = 0, 1, … (the normalised exp(−λ o))."""
    return (1.0 - math.exp(-lam)) * math.exp(-lam * o)


def sample_offsets(n: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """n draws of o ~ P(o): a geometric count of failures with success prob. 1 − e^{−λ}."""
    if lam <= 0:
        raise ValueError(f"smoothing lambda ({lam}) must be > 0 (inf turns smoothing off)")
    if math.isinf(lam):
        return np.zeros(n, dtype=np.int64)
    return rng.geometric(-math.expm1(-lam), size=n) - 1


def remove_front(cot: Sequence[int], tail: Sequence[int], k: int) -> list[int]:
    """The response ids with the first ``min(k, len(cot))`` CoT ids dropped; tail kept."""
    return list(cot[min(max(k, 0), len(cot)) :]) + list(tail)


# ----------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class Encoded:
    prompt: list[int]
    cot: list[int]
    tail: list[int]
    """Delimiter, answer and EOS."""


def encode_problems(tokenizer: Any, problems: Sequence[MulProblem], chat: bool) -> list[Encoded]:
    """Prompt ids (chat template unless ``chat`` is False), CoT ids, tail ids (+ EOS)."""
    from rllib_k15.long2short.training import encode_prompt, encode_response

    return [
        Encoded(
            encode_prompt(tokenizer, p.question, chat),
            list(tokenizer(p.cot, add_special_tokens=False)["input_ids"]),
            encode_response(tokenizer, f"\n{DELIMITER} {p.answer}"),
        )
        for p in problems
    ]


class ResettableAdamW(AdamWStep):
    """:class:`~rllib_k15.long2short.training.AdamWStep` whose :meth:`reset` starts a fresh
    AdamW (moments and step count at zero, same hyper-parameters)."""

    def reset(self) -> None:
        kept = {k: self.optimizer.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **kept)


class RemovalLoss:
    """The mini-batch loss :func:`~rllib_k15.long2short.training.run_epochs` calls, with
    stepwise removal: ``t`` counts the removal-phase steps (``removing`` False: full CoT)."""

    def __init__(
        self,
        model: Any,
        pad: int,
        step: Any,
        lam: float,
        bf16: bool,
        steps_per_epoch: int,
        delta: int,
        max_cot: int,
    ) -> None:
        self.model, self.pad, self.step, self.lam, self.bf16 = model, pad, step, lam, bf16
        self.steps_per_epoch, self.delta, self.max_cot = steps_per_epoch, delta, max_cot
        self.t, self.removing, self.rng = 0, False, np.random.default_rng(0)

    def schedule(self, t: int) -> int:
        return removal_schedule(t, self.steps_per_epoch, self.delta)

    def __call__(self, batch: list[Encoded]) -> tuple[Any, dict[str, float]]:
        from rllib_k15.core.sequences import PackedSequences, pack_sequences
        from rllib_k15.long2short.sft import sft_batch_loss

        s, reset, offsets = 0, False, np.zeros(len(batch), dtype=np.int64)
        if self.removing:
            s, previous = self.schedule(self.t), self.schedule(self.t - 1)
            reset = self.t > 0 and s > previous and previous < self.max_cot
            if reset:
                self.step.reset()
            offsets = sample_offsets(len(batch), self.lam, self.rng)
            self.t += 1
        responses = [remove_front(e.cot, e.tail, s + int(o)) for e, o in zip(batch, offsets)]
        packed = pack_sequences([e.prompt for e in batch], responses, self.pad)
        device = next(self.model.parameters()).device
        packed = PackedSequences(
            *(getattr(packed, f.name).to(device) for f in dataclasses.fields(packed))
        )
        loss, metrics = sft_batch_loss(self.model, packed, self.bf16)
        removed = [len(e.cot) - max(0, len(e.cot) - s - int(o)) for e, o in zip(batch, offsets)]
        metrics.update(
            {
                "internalize/scheduled_removed": float(s),
                "internalize/mean_removed": float(np.mean(removed)),
                "internalize/optimizer_reset": float(reset),
            }
        )
        return loss, metrics
