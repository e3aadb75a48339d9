"""reasoning-gym verifier: each dataset grades with its own ``score_answer``, sandboxed.

The parent extracts the final answer (``boxed_or_line`` by default) and sends
``(dataset, config, answer, entry)`` to a :class:`WorkerPool` whose confined workers run
the scorer (some scorers ``eval`` the answer through sympy, so this is not optional).

Scores are fractional in reasoning-gym (countdown gives 0.05 for a wrong expression that
uses the right numbers). By default a score ``>= success_threshold`` (1.0) is correct and
the reward is 1.0/0.0; ``partial_credit=True`` passes the raw score through as the reward.

``problem.metadata`` holds ``dataset`` (name), ``config`` (the generator's config object,
seed and size included, so the worker rebuilds the very dataset the problem came from; a
JSON string of constructor kwargs is accepted too) and ``entry`` (the generated item, its
metadata objects intact: requests to a worker are pickles).

Answer text: a ``\\boxed{...}`` or ``<answer>...</answer>`` is delimited, so its content goes
to the scorer as written (only ``$..$``/``**`` wrappers dropped, a final period kept:
``sentence_reordering`` and ``emoji_mystery`` answers are sentences). An ``Answer: ...``
line loses a final period, as in every env.

Grading errors: an exception in the scorer (or in this wrapper), a crashed worker or a
malformed score is never graded as a wrong answer. The verdict reads
``"grading_error: <exception text>"`` (``Verdict.grading_error`` is True, reward 0), it is
counted in ``verifier.grading_errors`` (``"dataset: ErrorType"`` -> count) and logged as a
warning once per dataset and error type per process. A scorer that exceeds ``timeout_s``
gives reason ``timeout``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter

from k15_envs.extract import ExtractMode, extract_answer, find_answer_tag, find_last_boxed
from k15_envs.sandbox import SandboxConfig, WorkerTask
from k15_envs.sandbox.pool import TaskOutcome
from k15_envs.types import Problem, Reason, Verdict, grading_error_reason
from k15_envs.verifiers.base import VerifierKind, register_verifier
from k15_envs.verifiers.worker_pool import PoolJob, WorkerPoolVerifier

__all__ = ["ReasoningGymVerifier", "latex_to_ascii_ops"]

logger = logging.getLogger(__name__)
_ERRORS_LOCK = threading.Lock()  # module level: verifiers are pickled, locks are not
_WARNED: set[tuple[str, str]] = set()  # (dataset, error type) already logged in this process
_WRAPPERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

_LATEX_OPS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", ""))
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def latex_to_ascii_ops(expression: str) -> str:
    """``(3 + 5) \\times 7`` -> ``(3 + 5) * 7``; ``\\frac{a}{b}`` -> ``(a)/(b)``; drops ``$``."""
    text = expression.replace("$", "")
    for latex, ascii_op in _LATEX_OPS:
        text = text.replace(latex, ascii_op)
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    return text.replace("{", "(").replace("}", ")").replace("×", "*").replace("÷", "/").strip()


def _unwrap(text: str) -> str:
    """``clean_answer`` without dropping a final period (for delimited answers)."""
    for _ in range(3):
        before = text
        text = text.strip().strip("*").strip()
        for left, right in _WRAPPERS:
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + 1:
                text = text[len(left) : len(text) - len(right)].strip()
        if text == before:
            break
    return text


def _error_type(error: str) -> str:
    """``"KeyError: x"`` -> ``"KeyError"``; ``"worker died: x"`` -> ``"worker died"``."""
    return " ".join(str(error).split(":", 1)[0].split())[:60] or "unknown"


@register_verifier(VerifierKind.REASONING_GYM)
class ReasoningGymVerifier(WorkerPoolVerifier):
    """Grades with the reasoning-gym dataset's scorer in sandboxed workers.

    extract: answer extraction mode. ``raw`` passes the whole response to the scorer.
    timeout_s: hard per-answer deadline.
    partial_credit: reward = the raw score instead of 1.0/0.0.
    success_threshold: score at or above which the answer counts as correct.
    ascii_operators: rewrite LaTeX operators (``\\times``, ``\\frac``) before scoring
        (Countdown expressions).

    ``grading_errors``: ``"dataset: ErrorType"`` -> how many answers this verifier (in this
    process) could not grade; each such verdict has reason ``grading_error: ...``.
    """

    _worker_preload = ("k15_envs.verifiers.rgym_scoring",)
    _worker_task = WorkerTask.REASONING_GYM_SCORE

    def __init__(
        self,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        timeout_s: float = 10.0,
        num_workers: int | None = None,
        sandbox: SandboxConfig | dict | None = None,
        partial_credit: bool = False,
        success_threshold: float = 1.0,
        ascii_operators: bool = False,
    ) -> None:
        super().__init__(
            extract=extract, timeout_s=timeout_s, num_workers=num_workers, sandbox=sandbox
        )
        self.partial_credit = bool(partial_credit)
        self.success_threshold = float(success_threshold)
        self.ascii_operators = bool(ascii_operators)
        self.grading_errors: Counter[str] = Counter()

    def _answer(self, response: str) -> str | None:
        """The answer text the scorer gets (see the module docstring), or None if none."""
        found = extract_answer(response, self.extract)
        if found.answer is None:
            return None
        answer = found.answer
        if found.source in ("boxed", "answer_tag"):
            finder = find_last_boxed if found.source == "boxed" else find_answer_tag
            raw = finder(response)
            answer = _unwrap(raw or "") or answer
        return latex_to_ascii_ops(answer) if self.ascii_operators else answer

    def _prepare(self, problem: Problem, response: str) -> Verdict | PoolJob:
        """``no_answer`` or a grading error at once, else the job ``(dataset, config,
        answer, entry)`` with context ``(dataset, answer)``."""
        dataset = _dataset_name(problem)
        try:
            answer = self._answer(response)
            if answer is None:
                return Verdict.failed(Reason.NO_ANSWER)
            meta = problem.metadata
            job = (meta["dataset"], meta["config"], answer, meta["entry"])
        except Exception as exc:  # noqa: BLE001 - a grader bug, not a wrong answer
            return self._grading_error(dataset, f"{type(exc).__name__}: {exc}", None)
        return PoolJob(job, (dataset, answer))

    def _run_jobs(self, jobs: list[tuple]) -> list[TaskOutcome]:
        """The pool's batch; if it raises, one call per job, so only the culprit fails."""
        pool = self._get_resource()
        try:
            return pool.map(self._worker_task, jobs)
        except Exception:  # noqa: BLE001 - e.g. an entry that cannot be pickled: find which
            outcomes = []
            for job in jobs:
                try:
                    outcomes.append(pool.call(self._worker_task, *job))
                except Exception as exc:  # noqa: BLE001
                    outcomes.append(TaskOutcome("error", error=f"{type(exc).__name__}: {exc}"))
            return outcomes

    def _grading_error(self, dataset: str, error: str, answer: str | None) -> Verdict:
        """A ``grading_error`` verdict, counted, and logged once per dataset and error type."""
        kind = _error_type(error)
        with _ERRORS_LOCK:
            self.grading_errors[f"{dataset}: {kind}"] += 1
            first = (dataset, kind) not in _WARNED
            _WARNED.add((dataset, kind))
        if first:
            logger.warning(
                "reasoning-gym grading error on dataset %r: %s -- graded reward 0 with reason "
                "'grading_error' (NOT a wrong answer); further %s errors on %r are counted in "
                "verifier.grading_errors, not logged",
                dataset,
                " ".join(str(error).split())[:300],
                kind,
                dataset,
            )
        return Verdict.failed(grading_error_reason(error), answer)

    def _to_verdict(self, outcome: TaskOutcome, dataset: str, answer: str) -> Verdict:
        """The scorer's score (clipped to [0, 1]) as a verdict; a failure is a grading error."""
        if outcome.status == "timeout":
            return Verdict.failed(Reason.TIMEOUT, answer)
        if outcome.status != "ok":
            return self._grading_error(dataset, outcome.error or "unknown error", answer)
        score = outcome.value
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            return self._grading_error(
                dataset, f"MalformedScore: {str(score)[:80]!r} from the grading worker", answer
            )
        score = min(1.0, max(0.0, float(score)))
        correct = score >= self.success_threshold
        reward = score if self.partial_credit else (1.0 if correct else 0.0)
        reason = Reason.CORRECT if correct else Reason.WRONG
        return Verdict(reward, correct, answer, reason.value)


def _dataset_name(problem: Problem) -> str:
    """``problem.metadata["dataset"]`` as text, ``"?"`` when there is none."""
    try:
        return str(problem.metadata.get("dataset", "?"))
    except Exception:  # noqa: BLE001 - metadata is not a dict
        return "?"
