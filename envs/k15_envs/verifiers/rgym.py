"""reasoning-gym verifier: each dataset grades with its own ``score_answer``, sandboxed.

The parent extracts the final answer (``boxed_or_line`` by default) and sends
``(dataset, config, answer, entry)`` to a :class:`WorkerPool` whose confined workers run
the scorer (some scorers ``eval`` the answer through sympy, so this is not optional).

Scores are fractional in reasoning-gym (countdown gives 0.05 for a wrong expression that
uses the right numbers). By default a score ``>= success_threshold`` (1.0) is correct and
the reward is 1.0/0.0; ``partial_credit=True`` passes the raw score through as the reward.

``problem.metadata`` holds ``dataset`` (name), ``config`` (JSON of the generator config
without seed/size) and ``entry`` (the generated item the scorer expects).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from k15_envs.extract import ExtractMode, extract_answer
from k15_envs.sandbox import WORKER_DEFAULTS, SandboxConfig, WorkerPool, WorkerTask, resolve_config
from k15_envs.types import Problem, Reason, Verdict, error_reason
from k15_envs.verifiers.base import PooledVerifier, VerifierKind, register_verifier

__all__ = ["ReasoningGymVerifier", "latex_to_ascii_ops"]

_LATEX_OPS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", ""))
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def latex_to_ascii_ops(expression: str) -> str:
    """``(3 + 5) \\times 7`` -> ``(3 + 5) * 7``; ``\\frac{a}{b}`` -> ``(a)/(b)``; drops ``$``."""
    text = expression.replace("$", "")
    for latex, ascii_op in _LATEX_OPS:
        text = text.replace(latex, ascii_op)
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    return text.replace("{", "(").replace("}", ")").replace("×", "*").replace("÷", "/").strip()


@register_verifier(VerifierKind.REASONING_GYM)
class ReasoningGymVerifier(PooledVerifier):
    """Grades with the reasoning-gym dataset's scorer in sandboxed workers.

    extract: answer extraction mode. ``raw`` passes the whole response to the scorer.
    timeout_s: hard per-answer deadline.
    partial_credit: reward = the raw score instead of 1.0/0.0.
    success_threshold: score at or above which the answer counts as correct.
    ascii_operators: rewrite LaTeX operators (``\\times``, ``\\frac``) before scoring
        (Countdown expressions).
    """

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
        super().__init__()
        self.extract = ExtractMode(extract)
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.sandbox = resolve_config(sandbox, WORKER_DEFAULTS)
        self.partial_credit = bool(partial_credit)
        self.success_threshold = float(success_threshold)
        self.ascii_operators = bool(ascii_operators)

    def _create_resource(self) -> WorkerPool:
        return WorkerPool(
            preload=("k15_envs.verifiers.rgym_scoring",),
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
            answer = latex_to_ascii_ops(found.answer) if self.ascii_operators else found.answer
            meta = problem.metadata
            jobs.append((meta["dataset"], meta["config"], answer, meta["entry"]))
            slots.append((len(verdicts), answer))
            verdicts.append(None)
        if jobs:
            outcomes = self._get_resource().map(WorkerTask.REASONING_GYM_SCORE, jobs)
            for (index, answer), outcome in zip(slots, outcomes, strict=True):
                verdicts[index] = self._to_verdict(outcome, answer)
        return [v for v in verdicts if v is not None]

    def _to_verdict(self, outcome, answer: str) -> Verdict:
        if outcome.status == "timeout":
            return Verdict.failed(Reason.TIMEOUT, answer)
        if outcome.status != "ok":
            return Verdict.failed(error_reason(outcome.error), answer)
        score = outcome.value
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            return Verdict.failed(error_reason("malformed score from the grading worker"), answer)
        score = min(1.0, max(0.0, float(score)))
        correct = score >= self.success_threshold
        reward = score if self.partial_credit else (1.0 if correct else 0.0)
        reason = Reason.CORRECT if correct else Reason.WRONG
        return Verdict(reward, correct, answer, reason.value)
