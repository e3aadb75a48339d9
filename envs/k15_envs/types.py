"""The two value types every env and verifier speaks: :class:`Problem` and :class:`Verdict`.

Both are frozen and picklable, so Ray can ship them between actors. ``Verdict.reason`` is a
plain ``str`` drawn from :class:`Reason` (or ``"error: ..."`` / ``"grading_error: ..."``), so
it is JSON-friendly and stable across versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "Problem",
    "Verdict",
    "Reason",
    "error_reason",
    "grading_error_reason",
    "judge_error_reason",
]


class Reason(str, Enum):  # noqa: UP042 - Python 3.10 has no StrEnum
    """Documented values of ``Verdict.reason`` (plus free-form ``"error: ..."``).

    correct       the answer was graded correct
    wrong         an answer was found and graded wrong (for code: a test assertion failed)
    no_answer     no final answer could be extracted from the response (nothing graded)
    truncated     the response was cut by a length limit (reward 0, nothing graded)
    timeout       grading (or the program under test) exceeded its wall-clock limit
    memory_limit  code: the program hit the memory limit (MemoryError)
    cpu_limit     code: the program hit the CPU-time limit
    output_limit  code: the program wrote more than the file/output size limit
    early_exit    code: the program exited before its tests finished (sys.exit/os._exit)
    killed        code: the program was ended by a signal
    grading_error the grader itself failed (an exception in the scorer or its wrapper):
                  reward 0 but NOT a wrong answer; the reason reads
                  ``"grading_error: <exception text>"`` (see ``Verdict.grading_error``)
    judge_unparseable  judge: the judge model's reply had no ``VERDICT: ...`` line (reward 0,
                  NOT a wrong answer)
    judge_error   judge: the judge could not be asked (timeout, connection or HTTP error);
                  the reason reads ``"judge_error: <what failed>"`` (reward 0, NOT wrong)
    """

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    TRUNCATED = "truncated"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    OUTPUT_LIMIT = "output_limit"
    EARLY_EXIT = "early_exit"
    KILLED = "killed"
    GRADING_ERROR = "grading_error"
    JUDGE_UNPARSEABLE = "judge_unparseable"
    JUDGE_ERROR = "judge_error"


def error_reason(detail: str) -> str:
    """The ``"error: ..."`` reason, one line, bounded length."""
    return "error: " + " ".join(str(detail).split())[:200]


def grading_error_reason(detail: str) -> str:
    """The ``"grading_error: ..."`` reason (the grader failed), one line, bounded length."""
    return f"{Reason.GRADING_ERROR.value}: " + " ".join(str(detail).split())[:200]


def judge_error_reason(detail: str) -> str:
    """The ``"judge_error: ..."`` reason (the judge could not be asked), one line, bounded."""
    return f"{Reason.JUDGE_ERROR.value}: " + " ".join(str(detail).split())[:200]


@dataclass(frozen=True)
class Problem:
    """One reasoning problem.

    id: stable id, e.g. ``"arithmetic/d2/00017"`` (unique within one env configuration).
    prompt: the full user message, answer-format instruction included.
    answer: ground truth as text (for display / SFT data).
    difficulty: higher = harder; from the generator knob or a dataset column (0.0 if none).
    metadata: whatever the verifier needs (picklable).
    """

    id: str
    prompt: str
    answer: str
    difficulty: float
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one response.

    reward: the verifier's score, 1.0 or 0.0 (reasoning-gym envs with
        ``partial_credit=True`` pass the dataset's fractional score through).
    correct: whether the answer was judged correct.
    extracted_answer: the final answer found in the response (code: the program), or None.
    reason: one of :class:`Reason`'s values, ``"error: ..."`` or ``"grading_error: ..."``.
    """

    reward: float
    correct: bool
    extracted_answer: str | None
    reason: str

    @property
    def grading_error(self) -> bool:
        """True when the grader failed (reason ``grading_error``), not the answer."""
        return self.reason.split(":", 1)[0] == Reason.GRADING_ERROR.value

    @classmethod
    def graded(cls, correct: bool, extracted: str | None) -> Verdict:
        reason = Reason.CORRECT if correct else Reason.WRONG
        return cls(1.0 if correct else 0.0, bool(correct), extracted, reason.value)

    @classmethod
    def failed(cls, reason: Reason | str, extracted: str | None = None) -> Verdict:
        value = reason.value if isinstance(reason, Reason) else str(reason)
        return cls(0.0, False, extracted, value)
