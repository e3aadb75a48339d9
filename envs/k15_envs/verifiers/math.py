"""Math verifier: final answer extraction here, math-verify grading in sandboxed workers.

The parent extracts the answer (``boxed_or_line`` by default: ``\\boxed{}``, an
``<answer>`` tag, or a trailing ``Answer: ...`` / ``#### ...`` line), strips plain-text
unit words (``72 dollars``), and sends ``(gold, answer)`` to a :class:`WorkerPool`, whose
workers run math-verify in their main thread (its ``signal.alarm`` timeout works there)
under a hard wall-clock deadline: adversarial answers (``10^{10^{10}}``, deep nesting,
huge LaTeX) come back as reason ``"timeout"`` within ``timeout_s`` plus a little, from any
calling thread.

Gold answers may be plain (``42``, ``\\frac{1}{2}``, ``(3, \\infty)``), a solution with a
``\\boxed{}``, or GSM8K style (``... #### 72``): :func:`gold_answer_text` reduces them.
"""

from __future__ import annotations

from collections.abc import Sequence

from k15_envs.extract import ExtractMode, extract_answer, find_last_boxed, strip_unit_words
from k15_envs.sandbox import WORKER_DEFAULTS, SandboxConfig, WorkerPool, WorkerTask, resolve_config
from k15_envs.types import Problem, Reason, Verdict, error_reason
from k15_envs.verifiers.base import PooledVerifier, VerifierKind, register_verifier

__all__ = ["MathVerifier", "gold_answer_text"]

_STATUSES = {"graded", "unparsed", "bad_gold", "timeout"}


def gold_answer_text(answer: str) -> str:
    """The final answer inside a gold field: after GSM8K's ``####``, else the last
    ``\\boxed{}``, else the text itself (stripped)."""
    text = str(answer).strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = find_last_boxed(text) if "\\boxed" in text or "\\fbox" in text else None
    return boxed if boxed else text


@register_verifier(VerifierKind.MATH)
class MathVerifier(PooledVerifier):
    """math-verify equivalence.

    extract: answer extraction mode (``boxed``, ``boxed_or_line``, ``lenient``).
    timeout_s: hard per-answer deadline (the worker is killed and replaced past it).
    num_workers: worker processes (default ``min(2, cpu_count)``).
    sandbox: overrides of the worker sandbox (``WORKER_DEFAULTS``), e.g. ``{"memory_bytes": ...}``.
    """

    def __init__(
        self,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        sandbox: SandboxConfig | dict | None = None,
    ) -> None:
        super().__init__()
        self.extract = ExtractMode(extract)
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.sandbox = resolve_config(sandbox, WORKER_DEFAULTS)

    def _create_resource(self) -> WorkerPool:
        return WorkerPool(
            preload=("k15_envs.verifiers.math_grading",),
            size=self.num_workers,
            task_timeout_s=self.timeout_s,
            sandbox=self.sandbox,
        )

    def verify(self, problem: Problem, response: str) -> Verdict:
        return self.verify_many([problem], [response])[0]

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        verdicts: list[Verdict | None] = []
        jobs, slots = [], []
        for problem, response in zip(problems, responses, strict=True):
            found = extract_answer(response, self.extract)
            if found.answer is None:
                verdicts.append(Verdict.failed(Reason.NO_ANSWER))
                continue
            gold = problem.metadata.get("gold") or gold_answer_text(problem.answer)
            jobs.append((gold, strip_unit_words(found.answer), self.timeout_s))
            slots.append((len(verdicts), found.answer))
            verdicts.append(None)
        if jobs:
            outcomes = self._get_resource().map(WorkerTask.MATH_VERIFY, jobs)
            for (index, extracted), outcome in zip(slots, outcomes, strict=True):
                verdicts[index] = _to_verdict(outcome, extracted)
        return [v for v in verdicts if v is not None]


def _to_verdict(outcome, extracted: str) -> Verdict:
    if outcome.status == "timeout":
        return Verdict.failed(Reason.TIMEOUT, extracted)
    if outcome.status != "ok":
        return Verdict.failed(error_reason(outcome.error), extracted)
    value = outcome.value
    if not isinstance(value, dict) or value.get("status") not in _STATUSES:
        return Verdict.failed(error_reason("malformed grading reply"), extracted)
    status = value["status"]
    if status == "bad_gold":
        return Verdict.failed(error_reason("gold answer could not be parsed"), extracted)
    if status == "timeout":
        return Verdict.failed(Reason.TIMEOUT, extracted)
    return Verdict.graded(value.get("correct") is True and status == "graded", extracted)
