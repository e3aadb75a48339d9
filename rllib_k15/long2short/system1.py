"""System 2 -> System 1 distillation (``k15 long2short system1``).

The method (Yu et al. 2024, "Distilling System 2 into System 1"), unsupervised:

1. sample ``n`` reasoning responses per problem from the model at T = 1 (System 2);
2. take each response's final answer as the env's verifier extracts it
   (``Verdict.extracted_answer`` of ``verify_batch``; a response cut at the token limit has
   none);
3. **majority vote** (self-consistency): answers are grouped by :func:`answer_key` (numbers
   by exact value, so ``42`` and ``42.0`` agree); the winner is the class with the most votes
   and its share is ``votes / n`` — a response without an answer votes for nobody but counts
   in ``n``. A problem is kept iff the winner is unique (a tie for the top keeps nothing)
   and ``share >= confidence`` (default 0.6, compared exactly as fractions);
4. fine-tune the model with :func:`~rllib_k15.long2short.sft.train_sft` to answer directly:
   the response is the majority answer alone in the env's format (:func:`format_answer`,
   e.g. ``\\boxed{42}``), no reasoning tokens.

The gold answer is never used to select. It is used to *measure*: each kept answer-only
response is graded by the env's verifier, which also checks that the verifier extracts the
majority answer back from it (else the format does not suit the env and the problem is
dropped and counted). The paper also filters by consistency under input perturbation for
some tasks; only output self-consistency is used here.

The run's steps (sampling, data, eval, training) are the shared, resumable ones of
:class:`MethodRun` below, which ``k15 long2short c3ot`` uses too. CLI::

    k15 long2short system1 --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 2, "split": "train", "size": 256}' --samples 8 \\
        --out runs/system1
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from k15_envs.extract import clean_answer, parse_number

from rllib_k15.long2short.method_run import (
    MethodError,
    MethodRun,
    MethodSettings,
    StepCache,
    pct,
)
from rllib_k15.long2short.selection import ProblemSamples, SFTExample

__all__ = [
    "ANSWER_FORMATS",
    "Majority",
    "MethodError",
    "MethodRun",
    "MethodSettings",
    "StepCache",
    "System1Stats",
    "answer_key",
    "extract_answers",
    "format_answer",
    "is_confident",
    "majority_vote",
    "run_system1",
    "select_system1",
]

ANSWER_FORMATS: dict[str, str] = {
    "boxed": "\\boxed{%s}",
    "answer-tag": "<answer>%s</answer>",
    "answer-line": "Answer: %s",
}
"""Answer-only response templates; each is one the k15 verifiers extract (boxed first)."""


@dataclass(frozen=True)
class Majority:
    """The vote over one problem's extracted answers.

    answer: the most frequent raw spelling of the winning class, None without a unique winner.
    votes:  responses in the winning (or, on a tie, each top) class; total: all responses.
    tied:   two or more classes share the top count.
    """

    answer: str | None
    votes: int
    total: int
    tied: bool = False

    @property
    def share(self) -> Fraction:
        """votes / total (0 for an empty vote)."""
        return Fraction(self.votes, self.total) if self.total else Fraction(0)


def answer_key(answer: str) -> str:
    """The class an answer votes for: its exact value for a number (``"42.0"`` -> ``"42"``,
    ``"1,234"`` -> ``"1234"``), else the cleaned text with whitespace collapsed."""
    value = parse_number(answer)
    if value is not None:
        return str(value)
    return re.sub(r"\s+", " ", clean_answer(answer)).strip()


def majority_vote(answers: Sequence[str | None]) -> Majority:
    """Self-consistency vote: ``None`` (no answer) is counted in the total, never a candidate."""
    classes: dict[str, list[str]] = {}
    for answer in answers:
        if answer is not None and answer_key(answer):
            classes.setdefault(answer_key(answer), []).append(answer.strip())
    if not classes:
        return Majority(None, 0, len(answers))
    counts = sorted((len(v) for v in classes.values()), reverse=True)
    if len(counts) > 1 and counts[0] == counts[1]:
        return Majority(None, counts[0], len(answers), tied=True)
    spellings = max(classes.values(), key=len)
    best = max(dict.fromkeys(spellings), key=spellings.count)  # first-seen wins a tie
    return Majority(best, counts[0], len(answers))


def is_confident(majority: Majority, confidence: float) -> bool:
    """A unique winner whose share reaches ``confidence`` (inclusive, exact arithmetic)."""
    if not 0 < confidence <= 1:
        raise ValueError(f"`confidence` ({confidence}) must be in (0, 1]")
    threshold = Fraction(str(confidence))
    return majority.answer is not None and majority.share >= threshold


def format_answer(answer: str, style: str = "boxed") -> str:
    """The System-1 response: ``answer`` alone in ``style`` (:data:`ANSWER_FORMATS`)."""
    if style not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {style!r}; choose one of {sorted(ANSWER_FORMATS)}")
    return ANSWER_FORMATS[style] % answer.strip()


def extract_answers(
    env: Any, problems: Sequence[Any], groups: Sequence[ProblemSamples], max_tokens: int | None
) -> list[list[str | None]]:
    """Each sample's final answer as ``env.verify_batch`` extracts it, per group.

    A sample is passed as truncated when it is not correct and reached ``max_tokens`` (the
    samples file keeps no finish reason; a correct response was not cut)."""
    flat = [(p, s) for p, g in zip(problems, groups, strict=True) for s in g.samples]
    cut = [not s.correct and max_tokens is not None and s.token_length >= max_tokens
           for _, s in flat]  # fmt: skip
    verdicts = env.verify_batch([p for p, _ in flat], [s.response for _, s in flat], cut)
    out, pos = [], 0
    for group in groups:
        out.append([v.extracted_answer for v in verdicts[pos : pos + len(group.samples)]])
        pos += len(group.samples)
    return out


@dataclass
class System1Stats:
    """Where the sampled problems went (all counts are problems)."""

    num_problems: int = 0
    num_kept: int = 0
    num_kept_correct: int = 0
    """Kept problems whose majority answer the verifier grades correct (measured only)."""
    num_no_answer: int = 0
    num_tied: int = 0
    num_below_confidence: int = 0
    num_format_mismatch: int = 0
    """Confident problems dropped: the verifier did not read the answer-only response back."""
    num_samples: int = 0
    num_samples_correct: int = 0

    def to_dict(self) -> dict[str, Any]:
        kept = self.num_kept
        return {
            **asdict(self),
            "kept_fraction": self.num_kept / self.num_problems if self.num_problems else None,
            "majority_accuracy_kept": self.num_kept_correct / kept if kept else None,
            "sample_pass_at_1": (
                self.num_samples_correct / self.num_samples if self.num_samples else None
            ),  # fmt: skip
        }


def select_system1(
    groups: Sequence[ProblemSamples],
    problems: Sequence[Any],
    answers: Sequence[Sequence[str | None]],
    verify_batch: Callable[..., list[Any]],
    count_tokens: Callable[[str], int],
    confidence: float = 0.6,
    style: str = "boxed",
) -> tuple[list[SFTExample], System1Stats]:
    """Majority vote per problem, confidence filter, answer-only responses graded once by
    ``verify_batch(problems, responses)`` (correctness measured, format read back)."""
    stats = System1Stats(num_problems=len(groups))
    kept: list[tuple[ProblemSamples, Any, Majority]] = []
    for group, problem, group_answers in zip(groups, problems, answers, strict=True):
        stats.num_samples += len(group.samples)
        stats.num_samples_correct += sum(bool(s.correct) for s in group.samples)
        vote = majority_vote(group_answers)
        if vote.tied:
            stats.num_tied += 1
        elif vote.answer is None:
            stats.num_no_answer += 1
        elif not is_confident(vote, confidence):
            stats.num_below_confidence += 1
        else:
            kept.append((group, problem, vote))
    responses = [format_answer(str(vote.answer), style) for _, _, vote in kept]
    verdicts = verify_batch([p for _, p, _ in kept], responses) if kept else []
    examples = []
    for (group, _, vote), response, verdict in zip(kept, responses, verdicts, strict=True):
        read = verdict.extracted_answer
        if read is None or answer_key(read) != answer_key(str(vote.answer)):
            stats.num_format_mismatch += 1
            continue
        stats.num_kept += 1
        stats.num_kept_correct += bool(verdict.correct)
        examples.append(SFTExample(
            group.problem_id, group.prompt, response, count_tokens(response),
            len(group.samples), sum(bool(s.correct) for s in group.samples),
        ))  # fmt: skip
    return examples, stats


def run_system1(
    settings: MethodSettings,
    *,
    confidence: float = 0.6,
    style: str = "boxed",
    log: Callable = print,
) -> dict[str, Any]:
    """The whole method on ``settings`` (:class:`MethodSettings`): samples ->
    answer-only data -> base eval -> SFT -> System-1 eval -> ``<out>/report.json``."""
    from rllib_k15.long2short.training import encode_response

    format_answer("0", style)  # an unknown style fails before any work
    is_confident(Majority("0", 1, 1), confidence)
    with MethodRun(settings, "system1", log) as run:
        groups, info = run.groups()

        def build() -> tuple[list[SFTExample], dict[str, Any]]:
            env, problems = run.env(), run.problems(groups)
            answers = extract_answers(env, problems, groups, info.get("max_tokens"))
            tok = run.tokenizer()
            examples, stats = select_system1(
                groups, problems, answers, env.verify_batch,
                lambda text: len(encode_response(tok, text)), confidence, style,
            )  # fmt: skip
            return examples, stats.to_dict()

        examples, stats = run.data(build, {"confidence": confidence, "answer_format": style})
        log(f"system1: kept {stats['num_kept']}/{stats['num_problems']} problems "
            f"(tied {stats['num_tied']}, no answer {stats['num_no_answer']}, below confidence "
            f"{stats['num_below_confidence']}, format mismatch {stats['num_format_mismatch']}); "
            f"majority accuracy among kept {pct(stats['majority_accuracy_kept'])}")  # fmt: skip
        if not examples:
            raise MethodError(
                f"no problem reached --confidence {confidence} out of {stats['num_problems']}: "
                "nothing to fine-tune on. Try more --samples, a lower --confidence, an easier "
                "env or a larger --max-tokens."
            )
        evals = {"system2": run.evaluate("base", settings.model)}
        sft = run.train(examples, {"confidence": confidence, "answer_format": style})
        evals["system1"] = run.evaluate("system1", run.out, after=("model",))
        report = {"method": "system1", "confidence": confidence, "answer_format": style,
                  "selection": stats, "sft": sft, "eval": evals}  # fmt: skip
        return run.write_report(report)
