"""Learning to skip steps (Liu et al., "Can Language Models Learn to Skip Steps?", 2024).

The model first learns to solve a problem in a *requested* number of steps, then is asked for
fewer steps than the full solution has; its correct answers in exactly that many steps are
mixed into the next round's data, so the model learns, round by round, which steps it can
skip.

Problems: chain sums of ``k15/ReasoningGym-v0`` ``dataset="chain_sum"`` (train split for
training, test split for evaluation, so ``k15 eval`` sees the very same prompts). An
``n``-term chain ``t_0 o_1 t_1 ... o_{n-1} t_{n-1}`` has ``N = n − 1`` operations; its
**solution in s steps** (:func:`chain_solution`, 1 <= s <= N) cuts the operations into ``s``
consecutive groups of sizes ``⌈N/s⌉ ... ⌊N/s⌋`` (larger groups first) and step ``j`` applies
group ``j`` to the running value: ``Step j: v o t ... = v'``; the last line is ``\\boxed{v}``.
``s = N`` is the full step-by-step solution; fewer steps merge consecutive steps.

Rounds (``D_0``: each train problem's full solution; ``A``: accepted skipped solutions):

* round 0: SFT on ``D_0``;
* round r >= 1: prompt the round-(r−1) model for every train problem with
  ``"Solve in k steps."`` for k = N−1, ..., 1; accept a response when the env's verifier grades
  it correct, it has exactly ``k`` step lines (:func:`count_steps`) and every step's arithmetic
  holds (:func:`steps_valid`); ``A ← A ∪ accepted`` (one per problem and step count, first
  kept) and SFT on :func:`mix_data` ``(D_0, A)``, continuing from the round-(r−1) weights
  (the paper continues; ``continue_training=False`` restarts from the base model).

Every round also asks its model for fewer steps (the last round's answers are only counted),
so ``report.json`` shows how the skipping ability grows round by round.

Each round is evaluated on the test split with the plain env prompt (greedy): accuracy, mean
steps of the correct solutions, mean response tokens -> ``report.json``, ``skip_steps.png``.

Where this differs from the paper: the paper trains a separate *standard* model (question
only, no step count) on each round's mixed data to measure spontaneous skipping; here one
model learns both views of the same data (:func:`mix_data`: the step-controlled prompt and
the plain prompt), which halves training. ``warm_start`` adds the generator's own shorter
solutions (step-controlled view only), the paper's warm start with made-up skipped data.

CLI: ``k15 long2short skip-steps`` (:mod:`rllib_k15.commands.long2short_methods.skip_steps`).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "Chain",
    "SkipStepsError",
    "StepSolution",
    "TrainExample",
    "accept_solutions",
    "chain_of",
    "chain_solution",
    "count_steps",
    "merge_solutions",
    "mix_data",
    "parse_chain",
    "step_groups",
    "steps_prompt",
    "steps_valid",
    "summarize_answers",
]

_STEP_LINE = re.compile(r"^\s*Step\s+\d+\s*:(.*)$")
ROUNDS_DIR = "rounds"
REPORT_JSON = "report.json"
REPORT_PNG = "skip_steps.png"
ROUND_INFO = "round.json"


class SkipStepsError(ValueError):
    """Bad input or an output of another run in the way (the message names it)."""


# ----------------------------------------------------------------- chains and their solutions
@dataclasses.dataclass(frozen=True)
class Chain:
    """``terms[0] ops[0] terms[1] ...``; ``ops`` are ``"+"``/``"-"``, one fewer than terms."""

    terms: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def full_steps(self) -> int:
        """N = number of operations: the steps of the full solution."""
        return len(self.ops)

    def value(self) -> int:
        """The chain's value (the gold answer)."""
        return _apply(self.terms[0], zip(self.ops, self.terms[1:], strict=True))


def _apply(start: int, pairs: Iterable[tuple[str, int]]) -> int:
    """``start o_1 t_1 o_2 t_2 ...`` evaluated left to right."""
    value = start
    for op, term in pairs:
        value = value + term if op == "+" else value - term
    return value


def parse_chain(expression: str) -> Chain:
    """``"2 - 9 + 9"`` -> ``Chain((2, 9, 9), ("-", "+"))`` (space-separated tokens)."""
    tokens = expression.split()
    ops, terms = tokens[1::2], tokens[0::2]
    if len(tokens) < 3 or len(tokens) % 2 == 0 or any(op not in ("+", "-") for op in ops):
        raise ValueError(f"not a chain of + and - with at least 2 terms: {expression!r}")
    try:
        return Chain(tuple(int(t) for t in terms), tuple(ops))
    except ValueError:
        raise ValueError(f"a term of {expression!r} is not an integer") from None


def chain_of(problem: Any) -> Chain:
    """The chain of a ``k15/ReasoningGym-v0`` chain_sum problem (its generator metadata)."""
    try:
        expression = problem.metadata["entry"]["metadata"]["expression"]
    except (KeyError, TypeError):
        raise SkipStepsError(
            f"problem {problem.id}: no chain_sum expression in its metadata; skip-steps needs "
            "k15/ReasoningGym-v0 with dataset='chain_sum'"
        ) from None
    return parse_chain(expression)


def step_groups(num_ops: int, steps: int) -> list[int]:
    """Sizes of ``steps`` consecutive groups of ``num_ops`` operations, as equal as possible,
    larger first: ``q + 1`` (``r`` times) then ``q``, where ``num_ops = q · steps + r``."""
    if not 1 <= steps <= num_ops:
        raise ValueError(f"steps ({steps}) must be in [1, {num_ops}] for {num_ops} operations")
    q, r = divmod(num_ops, steps)
    return [q + 1] * r + [q] * (steps - r)


def chain_solution(chain: Chain, steps: int) -> str:
    """The solution in ``steps`` steps: ``Step j: v o t ... = v'`` lines, then ``\\boxed{v}``."""
    pairs = list(zip(chain.ops, chain.terms[1:], strict=True))
    value, start, lines = chain.terms[0], 0, []
    for j, size in enumerate(step_groups(len(pairs), steps), start=1):
        group = pairs[start : start + size]
        lhs = " ".join([str(value)] + [f"{op} {term}" for op, term in group])
        value, start = _apply(value, group), start + size
        lines.append(f"Step {j}: {lhs} = {value}")
    return "\n".join(lines + [f"\\boxed{{{value}}}"])


def steps_prompt(prompt: str, steps: int) -> str:
    """The step-controlled prompt: the env prompt, then ``Solve in k step(s).``"""
    return f"{prompt}\nSolve in {steps} step{'' if steps == 1 else 's'}."


def _step_bodies(text: str) -> list[str]:
    return [m.group(1) for m in map(_STEP_LINE.match, text.splitlines()) if m]


def count_steps(text: str) -> int:
    """Number of step lines (lines that start with ``Step <number>:``)."""
    return len(_step_bodies(text))


def _step_holds(body: str) -> bool:
    lhs, eq, rhs = body.rpartition("=")
    try:
        chain = parse_chain(lhs) if len(lhs.split()) > 1 else Chain((int(lhs),), ())
        return bool(eq) and chain.value() == int(rhs.strip())
    except ValueError:
        return False


def steps_valid(text: str) -> bool:
    """True when there is a step line and every one reads ``a o b ... = c`` with c correct."""
    bodies = _step_bodies(text)
    return bool(bodies) and all(_step_holds(b) for b in bodies)


# ----------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class StepSolution:
    """A solution of one train problem in ``steps`` of its ``full_steps`` steps."""

    problem_id: str
    prompt: str
    """The plain env prompt (no step count)."""
    response: str
    steps: int
    full_steps: int
    origin: str
    """``full`` (D_0), ``warm`` (generator, warm start) or ``round<r>`` (generated)."""


@dataclasses.dataclass(frozen=True)
class TrainExample:
    """One SFT row (what :func:`rllib_k15.long2short.sft.train_sft` reads)."""

    prompt: str
    response: str


def merge_solutions(*groups: Iterable[StepSolution]) -> list[StepSolution]:
    """Concatenate, keeping the first solution of each (problem, steps) pair."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for solution in (s for group in groups for s in group):
        if (solution.problem_id, solution.steps) not in seen:
            seen.add((solution.problem_id, solution.steps))
            kept.append(solution)
    return kept


def mix_data(
    originals: Sequence[StepSolution],
    accepted: Sequence[StepSolution] = (),
    warm: Sequence[StepSolution] = (),
) -> list[TrainExample]:
    """A round's SFT data: every solution of :func:`merge_solutions` ``(originals, accepted,
    warm)`` with its step-controlled prompt, and the full and accepted ones (not ``warm``)
    with the plain prompt too (the standard view ``k15 eval`` prompts)."""
    merged = merge_solutions(originals, accepted, warm)
    controlled = [TrainExample(steps_prompt(s.prompt, s.steps), s.response) for s in merged]
    plain = [TrainExample(s.prompt, s.response) for s in merged if s.origin != "warm"]
    return controlled + plain


def accept_solutions(
    requests: Sequence[tuple[StepSolution, int]],
    groups: Sequence[Any],
    origin: str,
    check_arithmetic: bool = True,
) -> tuple[list[StepSolution], dict[str, Any]]:
    """Per request (full solution, requested k) and its graded samples (``ProblemSamples``):
    the first sample that is correct, has exactly k step lines and (``check_arithmetic``)
    valid steps. Returns the accepted solutions and counts per skipped steps (N − k)."""
    accepted, stats = [], {}
    for (full, k), group in zip(requests, groups, strict=True):
        zero = {"requests": 0, "correct": 0, "step_count_matched": 0, "accepted": 0}
        row = stats.setdefault(str(full.full_steps - k), Counter(zero))
        row["requests"] += 1
        for sample in group.samples:
            matched = count_steps(sample.response) == k
            valid = matched and (not check_arithmetic or steps_valid(sample.response))
            row["correct"] += bool(sample.correct)
            row["step_count_matched"] += matched
            if sample.correct and valid:
                accepted.append(
                    dataclasses.replace(full, response=sample.response, steps=k, origin=origin)
                )
                row["accepted"] += 1
                break
    return accepted, {
        "by_steps_skipped": {k: dict(v) for k, v in sorted(stats.items())},
        "accepted": len(accepted),
        "requests": len(requests),
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def summarize_answers(groups: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, mean steps of correct responses, mean tokens (all and correct)."""
    samples = [s for g in groups for s in g.samples]
    correct = [s for s in samples if s.correct]
    steps = [count_steps(s.response) for s in correct]
    return {
        "num_responses": len(samples),
        "accuracy": _mean([float(s.correct) for s in samples]),
        "mean_steps_correct": _mean(steps),
        "steps_histogram_correct": {str(k): v for k, v in sorted(Counter(steps).items())},
        "mean_tokens": _mean([s.token_length for s in samples]),
        "mean_tokens_correct": _mean([s.token_length for s in correct]),
    }
