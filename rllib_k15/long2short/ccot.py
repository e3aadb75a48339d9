"""CCoT: compressed chain of thought with continuous contemplation tokens — the data and math.

Cheng & Van Durme, "Compressed Chain of Thought: Efficient Reasoning Through Dense
Representations" (2024). Instead of decoding the m tokens of a chain of thought, the model
produces k = ⌈r·m⌉ continuous embeddings ("contemplation tokens") and a second adapter
decodes the answer from them:

- **targets**: the frozen base model reads prompt + full CoT; its layer-l hidden states at
  the m CoT positions H ∈ R^{m×d} are subsampled at k evenly spaced positions
  i_j = ⌈(j+1)·m/k⌉ − 1, j = 0..k−1 (the last CoT position always included; the paper's
  importance-free variant, no learned scorer): z*_j = H[i_j].
- **CCOT φ** (LoRA "ccot"): given the prompt, generate k contemplation embeddings
  autoregressively — the final hidden state of each step, projected back to the
  input-embedding space, is the next input embedding. Loss: the scaled MSE between φ's
  layer-l states s at the k contemplation positions and z*,
      L_φ = Σ_{b,j} m_{b,j} · (1/d) Σ_c (s_{b,j,c} − z*_{b,j,c})² / σ²_c  /  Σ_{b,j} m_{b,j}
  with m the step mask (j < k_b) and σ²_c the per-dimension variance of all training
  targets (``loss="mse"``: σ² = 1).
- **END** head (linear on the final hidden state of each contemplation step): binary
  cross-entropy on "this is the k-th step", masked after step k and class-balanced per
  example (its one stop step weighs as much as its k − 1 continue steps together):
      L_END = (1/B) Σ_b [ ½·BCE(e_{b,k_b−1}, 1) + ½·(1/(k_b−1)) Σ_{j<k_b−1} BCE(e_{b,j}, 0) ]
  (k_b = 1: the stop term alone). Unbalanced, the head learned "never stop" on the
  embedded model (accuracy 1 − 1/k; inference ran to ``max_contemplation``); balanced, at
  the same 50 steps, it learned "stop now" — neither found the stop position there.
- **DECODE ψ** (LoRA "decode"): reads prompt + the k contemplation embeddings (φ frozen) and
  is trained with cross-entropy on the answer tokens only.

Choices of this implementation (where it may differ from the paper): the projection back to
the embedding space is a learned linear map whose output is rescaled to the RMS of the
embedding table (identity at the start, see :mod:`.ccot_model`); φ (with END) and ψ are
trained one after the other and not fine-tuned jointly afterwards; σ² is per dimension.

This module holds the pure parts: procedural arithmetic CoTs, CoT examples from sampled
responses, k and the subsampling indices, the masks, the losses, the cost summary and the
run's settings (:class:`CCoTRun`). The modules, their training and inference, and the
resumable run behind ``k15 long2short ccot`` (``run_ccot``) are in
:mod:`rllib_k15.long2short.ccot_model`.
"""

from __future__ import annotations

import ast
import math
import operator
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F

from rllib_k15.long2short.selection import ProblemSamples, shortest_correct_index

__all__ = [
    "CCOT_END_ACCURACY",
    "CCOT_END_RECALL",
    "CCOT_END_LOSS",
    "CCOT_LOSS",
    "CCOT_MSE",
    "CCOT_DECODE_LOSS",
    "CCoTRun",
    "CoTExample",
    "Phase",
    "arithmetic_cot",
    "ccot_eval_result",
    "contemplation_loss",
    "cost_summary",
    "end_labels",
    "end_loss",
    "examples_from_samples",
    "expression_of",
    "num_contemplation",
    "procedural_example",
    "split_response",
    "step_mask",
    "subsample_indices",
    "target_variance",
]

CCOT_LOSS = "ccot/loss"
CCOT_MSE = "ccot/mse"
CCOT_END_LOSS = "ccot/end_loss"
CCOT_END_ACCURACY = "ccot/end_accuracy"
CCOT_END_RECALL = "ccot/end_stop_recall"
CCOT_DECODE_LOSS = "ccot/decode_loss"


@dataclass(frozen=True)
class CoTExample:
    """One problem with a full chain of thought and the answer text decoded after it.

    ``prompt`` is the user message (no chat template); the full response is
    ``cot + "\\n" + answer``.
    """

    problem_id: str
    prompt: str
    cot: str
    answer: str


# --------------------------------------------------------------------- procedural CoTs

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _addition_lines(a: int, b: int) -> list[str]:
    """Column addition with carries for a, b ≥ 0 (one line per column), else one line."""
    if a < 0 or b < 0 or max(a, b) < 10:
        return [f"{a} + {b} = {a + b}"]
    da, db = str(a)[::-1], str(b)[::-1]
    lines, carry = [f"{a} + {b}:"], 0
    for j in range(max(len(da), len(db))):
        x = int(da[j]) if j < len(da) else 0
        y = int(db[j]) if j < len(db) else 0
        s = x + y + carry
        terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
        lines.append(f"{terms} = {s}, write {s % 10}" + (f", carry {s // 10}" if s >= 10 else ""))
        carry = s // 10
    if carry:
        lines.append(f"write {carry}")
    lines.append(f"{a} + {b} = {a + b}")
    return lines


def _multiplication_lines(a: int, b: int) -> list[str]:
    """Long multiplication for a ≥ 0, b ≥ 10: a partial product per digit of b, then the
    running sum of the partial products; else one line."""
    if a < 0 or b < 10:
        return [f"{a} * {b} = {a * b}"]
    digits = str(b)[::-1]
    partials = [a * int(d) * 10**j for j, d in enumerate(digits)]
    lines = [f"{a} * {int(d) * 10**j} = {p}" for j, (d, p) in enumerate(zip(digits, partials))]
    total = partials[0]
    for p in partials[1:]:
        lines.append(f"{total} + {p} = {total + p}")
        total += p
    return lines


_LINES = {ast.Add: _addition_lines, ast.Mult: _multiplication_lines}


def _evaluate(node: ast.AST, lines: list[str]) -> int:
    """Post-order evaluation of an integer expression, appending each operation's lines."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, lines)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _evaluate(node.left, lines), _evaluate(node.right, lines)
        if isinstance(node.op, ast.Sub):
            lines.append(f"{a} - {b} = {a - b}")
        else:
            lines.extend(_LINES[type(node.op)](a, b))
        return _OPS[type(node.op)](a, b)
    raise ValueError(f"unsupported term {ast.unparse(node)!r} (integers with + - * only)")


def arithmetic_cot(expression: str) -> tuple[str, int]:
    """A step-by-step CoT for an integer expression (``+ - *``, parentheses, unary minus)
    with every partial result, and its value. Usual precedence; ``a - b - c`` is
    ``(a - b) - c``. Additions are done column by column, multiplications digit by digit."""
    try:
        tree = ast.parse(expression.replace("×", "*"), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"cannot parse the expression {expression!r}: {err.msg}") from err
    lines: list[str] = []
    value = _evaluate(tree, lines)
    if not lines:  # a bare number: still one line of reasoning
        lines.append(f"{expression.strip()} = {value}")
    return "\n".join(lines), value


def expression_of(problem: Any) -> str:
    """The arithmetic expression of a k15 env problem (``k15/Arithmetic-v0``, and
    ``k15/ReasoningGym-v0`` datasets whose entries carry one, e.g. chain_sum, products)."""
    meta = problem.metadata or {}
    expression = meta.get("expression")
    if expression is None:
        expression = ((meta.get("entry") or {}).get("metadata") or {}).get("expression")
    if not isinstance(expression, str):
        raise ValueError(
            f"problem {problem.id!r} carries no arithmetic expression (metadata 'expression'); "
            "procedural CoTs need k15/Arithmetic-v0 or a reasoning-gym arithmetic dataset "
            "(chain_sum, products), else pass --from-samples"
        )
    return expression


def procedural_example(problem: Any) -> CoTExample:
    """The procedural CoT example of one problem; the CoT's value must equal the gold."""
    cot, value = arithmetic_cot(expression_of(problem))
    if str(value) != str(problem.answer).strip():
        raise ValueError(
            f"problem {problem.id!r}: the expression evaluates to {value}, "
            f"but the gold answer is {problem.answer!r}"
        )
    return CoTExample(str(problem.id), problem.prompt, cot, f"\\boxed{{{value}}}")


# ------------------------------------------------------------------ CoTs from samples


def split_response(response: str) -> tuple[str, str] | None:
    """(CoT, answer) of a sampled response: the answer is the line holding the last
    ``\\boxed`` (the last line if there is none), the CoT everything before it. None when
    either part is empty (a one-line response has no CoT to compress)."""
    text = response.strip()
    cut = text.rfind("\\boxed")
    start = text.rfind("\n", 0, cut if cut >= 0 else len(text)) + 1
    cot, answer = text[:start].strip(), text[start:].strip()
    return (cot, answer) if cot and answer else None


def examples_from_samples(
    groups: Iterable[ProblemSamples], exclude_prompts: Iterable[str] = ()
) -> tuple[list[CoTExample], dict[str, int]]:
    """One example per problem from its shortest correct sample; problems whose prompt is
    in ``exclude_prompts`` (the test split) are dropped. Also returns the counts dropped:
    ``no_correct``, ``no_cot`` (the response had no CoT line) and ``test_overlap``."""
    excluded = set(exclude_prompts)
    examples: list[CoTExample] = []
    dropped = {"no_correct": 0, "no_cot": 0, "test_overlap": 0}
    for group in groups:
        if group.prompt in excluded:
            dropped["test_overlap"] += 1
            continue
        best = shortest_correct_index(group.samples)
        parts = None if best is None else split_response(group.samples[best][0])
        if best is None or parts is None:
            dropped["no_correct" if best is None else "no_cot"] += 1
            continue
        examples.append(CoTExample(group.problem_id, group.prompt, *parts))
    return examples, dropped


# ------------------------------------------------------------------ the compression math


def num_contemplation(m: int, ratio: float) -> int:
    """k = ⌈r·m⌉, computed exactly (r = 0.1, m = 30 gives 3, not 4); at least 1."""
    if m < 1:
        raise ValueError(f"a CoT needs at least one token, got m={m}")
    if not 0 < ratio <= 1:
        raise ValueError(f"the compression ratio r ({ratio}) must be in (0, 1]")
    return max(1, math.ceil(Fraction(str(ratio)) * m))


def subsample_indices(m: int, k: int) -> list[int]:
    """k evenly spaced CoT positions i_j = ⌈(j+1)·m/k⌉ − 1 (strictly increasing, the last
    is m − 1; k = m gives every position)."""
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= k <= m, got k={k}, m={m}")
    return [-(-(j + 1) * m // k) - 1 for j in range(k)]


def step_mask(ks: Sequence[int], steps: int) -> torch.Tensor:
    """(B, K) bool: step j of row b is real iff j < k_b."""
    return torch.arange(steps)[None, :] < torch.as_tensor(list(ks))[:, None]


def end_labels(ks: Sequence[int], steps: int) -> torch.Tensor:
    """(B, K) float END targets: 1 at the k-th step (j = k_b − 1), 0 elsewhere."""
    return (torch.arange(steps)[None, :] == torch.as_tensor(list(ks))[:, None] - 1).float()


def target_variance(targets: Sequence[torch.Tensor], floor: float = 1e-3) -> torch.Tensor:
    """σ²_c: the variance of each hidden dimension over all target rows (k_b × d each),
    clamped below at ``floor`` × its mean so a near-constant dimension cannot dominate."""
    rows = torch.cat([t.float() for t in targets], dim=0)
    var = rows.var(dim=0, unbiased=False) if len(rows) > 1 else torch.ones(rows.shape[1])
    return var.clamp(min=floor * float(var.mean().clamp(min=1e-12)))


def contemplation_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    variance: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scaled MSE L_φ of the module docstring: states, targets (B, K, d), mask (B, K);
    ``variance`` (d,) = σ², None for the plain MSE. Masked steps do not count."""
    sq = (states.float() - targets.float()) ** 2  # (B, K, d)
    per_step = sq.mean(-1) if variance is None else (sq / variance).mean(-1)  # (B, K)
    weight = mask.float()
    count = weight.sum().clamp(min=1.0)
    loss = (per_step * weight).sum() / count
    mse = (sq.mean(-1) * weight).sum() / count
    return loss, {CCOT_LOSS: loss.item(), CCOT_MSE: mse.item()}


def end_loss(logits: torch.Tensor, ks: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
    """Class-balanced BCE L_END of the END head (module docstring): logits (B, K) vs
    :func:`end_labels` over the steps j < k_b. Metrics: the loss, the accuracy of the stop
    decision (p > 0.5) over those steps, and its recall on the stop steps alone (the
    fraction of examples whose k-th step says stop)."""
    steps = logits.shape[1]
    labels, mask = end_labels(ks, steps).to(logits.device), step_mask(ks, steps).to(logits.device)
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    stay = mask * (1.0 - labels)
    stay_count = stay.sum(dim=1)
    stop_term = (bce * labels).sum(dim=1)
    stay_term = (bce * stay).sum(dim=1) / stay_count.clamp(min=1)
    per_example = torch.where(stay_count > 0, 0.5 * stop_term + 0.5 * stay_term, stop_term)
    loss = per_example.mean()
    hits = ((logits > 0).float() == labels).float()
    accuracy = (hits * mask).sum() / mask.sum().clamp(min=1)
    recall = (hits * labels).sum() / labels.sum().clamp(min=1)
    return loss, {
        CCOT_END_LOSS: loss.item(),
        CCOT_END_ACCURACY: accuracy.item(),
        CCOT_END_RECALL: recall.item(),
    }


def cost_summary(
    steps: Sequence[int],
    answer_tokens: Sequence[int],
    full_tokens: Sequence[int],
    ccot_seconds: Sequence[float],
    full_seconds: Sequence[float],
) -> dict[str, float]:
    """Decoding cost of CCoT (contemplation steps + answer tokens) against the full CoT's
    tokens, per problem, and the wall time of both ways:
    ``tokens_saved = 1 − mean(steps + answer) / mean(full)``, ``speedup = t_full / t_ccot``."""
    ccot = [s + a for s, a in zip(steps, answer_tokens, strict=True)]
    mean_ccot, mean_full = statistics.fmean(ccot), statistics.fmean(full_tokens)
    t_ccot, t_full = statistics.fmean(ccot_seconds), statistics.fmean(full_seconds)
    return {
        "mean_contemplation_steps": statistics.fmean(steps),
        "mean_answer_tokens": statistics.fmean(answer_tokens),
        "mean_ccot_decode_steps": mean_ccot,
        "mean_full_cot_tokens": mean_full,
        "decoding_steps_saved": 1.0 - mean_ccot / mean_full,
        "seconds_per_problem_ccot": t_ccot,
        "seconds_per_problem_full_cot": t_full,
        "wall_time_speedup": t_full / t_ccot if t_ccot > 0 else float("nan"),
    }


# ----------------------------------------------------------------------- run settings


@dataclass(frozen=True)
class Phase:
    """Settings of one training phase (φ+END, or ψ); the ``LoopConfig`` of ``run_epochs``."""

    epochs: int = 3
    lr: float = 5e-4
    """AdamW learning rate of the LoRA weights (and of P and END), constant."""
    batch_size: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    progress: bool = True


@dataclass(frozen=True)
class CCoTRun:
    """Settings of ``k15 long2short ccot`` (:func:`run_ccot`); the flags of the same names."""

    model: str
    out: str
    env: str | None = "k15/Arithmetic-v0"
    """Test problems (its ``test`` split) and, without ``from_samples``, training problems
    (its ``train`` split) with procedural CoTs. None: the env named in the samples file."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    from_samples: str | None = None
    """A samples parquet: train on each problem's shortest correct response instead."""
    train_problems: int = 400
    test_problems: int = 100
    ratios: tuple[float, ...] = (0.1, 0.2)
    layer: int | None = None
    """l; None: the middle layer, num_hidden_layers // 2."""
    loss: str = "scaled_mse"
    """``scaled_mse`` (σ²-normalised, the paper's) or ``mse``."""
    lora_r: int = 16
    lora_alpha: float = 32.0
    phi: Phase = Phase()
    decode: Phase = Phase()
    max_contemplation: int | None = None
    """Inference cap on contemplation steps; None: twice the largest training k."""
    end_threshold: float = 0.5
    answer_max_tokens: int = 32
    full_cot_max_tokens: int = 512
    """Greedy full-CoT baseline cap (``from_samples`` runs, where no reference CoT exists)."""
    max_length: int = 1024
    """Prompt + CoT tokens kept; longer training examples are skipped."""
    use_chat_template: bool = True
    label: str = "ccot"
    """Eval rows are labelled ``<label>-r<r>``."""
    results: str | None = None
    """Append the eval rows to this ``.jsonl`` (and the CSV beside it)."""
    seed: int = 0
    progress: bool = True


def ccot_eval_result(
    verdicts: Sequence[Any],
    lengths: Sequence[int],
    truncated: Sequence[bool],
    seconds: Sequence[float],
    wall_seconds: float,
) -> Any:
    """An :class:`~rllib_k15.evaluation.evaluate.EvalResult` of one greedy answer per
    problem; ``lengths`` are the decoding steps (contemplation steps + answer tokens)."""
    from collections import Counter

    from rllib_k15.evaluation.evaluate import EvalResult, pass_at_1, token_percentiles
    from rllib_k15.evaluation.intervals import pass_at_1_interval

    correct = [[bool(v.correct)] for v in verdicts]
    low, high = pass_at_1_interval(correct)
    p50, p90, p99 = token_percentiles(list(lengths))
    gen = sum(seconds)
    return EvalResult(
        num_problems=len(correct),
        samples=1,
        pass_at_1=pass_at_1(correct),
        mean_reward=statistics.fmean(float(v.reward) for v in verdicts),
        mean_tokens=statistics.fmean(lengths),
        p50_tokens=p50,
        p90_tokens=p90,
        p99_tokens=p99,
        truncated_fraction=sum(map(bool, truncated)) / len(correct),
        reasons=dict(sorted(Counter(str(v.reason) for v in verdicts).items())),
        generated_tokens=sum(lengths),
        generation_seconds=gen,
        tokens_per_second=sum(lengths) / gen if gen > 0 else float("nan"),
        wall_seconds=wall_seconds,
        pass_at_1_low=low,
        pass_at_1_high=high,
    )
