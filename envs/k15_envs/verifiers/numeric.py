"""Fast exact-number verifier (in process, no worker): the Arithmetic fast path.

math-verify is overkill for integer answers and costs a worker round trip; this verifier
extracts the final answer (``lenient`` by default: boxed, answer tag/line, else the last
number) and compares it to the gold number exactly (``fractions.Fraction``), accepting
``1,234``, ``42.0``, ``$42$``, ``42 apples``, ``\\frac{3}{4}``. Grading 200 responses takes
a few milliseconds.
"""

from __future__ import annotations

from k15_envs.extract import ExtractMode, extract_answer, parse_number
from k15_envs.types import Problem, Reason, Verdict, error_reason
from k15_envs.verifiers.base import Verifier, VerifierKind, register_verifier

__all__ = ["NumericVerifier"]


@register_verifier(VerifierKind.NUMERIC)
class NumericVerifier(Verifier):
    """Exact numeric equality. ``extract``: an :class:`~k15_envs.extract.ExtractMode`."""

    def __init__(self, extract: ExtractMode | str = ExtractMode.LENIENT) -> None:
        self.extract = ExtractMode(extract)

    def verify(self, problem: Problem, response: str) -> Verdict:
        found = extract_answer(response, self.extract)
        if found.answer is None:
            return Verdict.failed(Reason.NO_ANSWER)
        gold = parse_number(problem.answer)
        if gold is None:
            return Verdict.failed(error_reason(f"gold answer {problem.answer!r} is not a number"))
        value = parse_number(found.answer)
        return Verdict.graded(value is not None and value == gold, found.answer)
