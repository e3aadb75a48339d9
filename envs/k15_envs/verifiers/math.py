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

from k15_envs.extract import ExtractMode, extract_answer, find_last_boxed, strip_unit_words
from k15_envs.sandbox import SandboxConfig, WorkerTask
from k15_envs.sandbox.pool import TaskOutcome
from k15_envs.types import Problem, Reason, Verdict, error_reason
from k15_envs.verifiers.base import VerifierKind, register_verifier
from k15_envs.verifiers.worker_pool import PoolJob, WorkerPoolVerifier

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
class MathVerifier(WorkerPoolVerifier):
    """math-verify equivalence.

    extract: answer extraction mode (``boxed``, ``boxed_or_line``, ``lenient``).
    timeout_s: hard per-answer deadline (the worker is killed and replaced past it).
    num_workers: worker processes (default ``min(2, cpu_count)``).
    sandbox: overrides of the worker sandbox (``WORKER_DEFAULTS``), e.g. ``{"memory_bytes": ...}``.
    """

    _worker_preload = ("k15_envs.verifiers.math_grading",)
    _worker_task = WorkerTask.MATH_VERIFY

    def __init__(
        self,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        sandbox: SandboxConfig | dict | None = None,
    ) -> None:
        super().__init__(
            extract=extract, timeout_s=timeout_s, num_workers=num_workers, sandbox=sandbox
        )

    def _prepare(self, problem: Problem, response: str) -> Verdict | PoolJob:
        """``no_answer`` at once, else the job ``(gold, answer without unit words, timeout)``."""
        found = extract_answer(response, self.extract)
        if found.answer is None:
            return Verdict.failed(Reason.NO_ANSWER)
        gold = problem.metadata.get("gold") or gold_answer_text(problem.answer)
        job = (gold, strip_unit_words(found.answer), self.timeout_s)
        return PoolJob(job, (found.answer,))

    def _to_verdict(self, outcome: TaskOutcome, extracted: str) -> Verdict:
        """The worker's ``{"status", "correct"}`` reply (or its failure) as a verdict."""
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
