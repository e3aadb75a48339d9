"""Multiple-choice verifier (in process): compares option letters.

The answer is extracted like everywhere else (boxed, answer tag, answer line); then
``B``, ``(B)``, ``B.``, ``B) text``, ``\\text{(B)}`` or the exact option text map to a
letter. ``lenient`` mode falls back to the last standalone option letter near the end of
the response. ``problem.metadata`` holds ``letters`` (e.g. ``"ABCD"``) and ``options``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from k15_envs.extract import ExtractMode, extract_answer
from k15_envs.types import Problem, Reason, Verdict
from k15_envs.verifiers.base import Verifier, VerifierKind, register_verifier

__all__ = ["ChoiceVerifier", "to_letter"]

_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_LEADING_LETTER = re.compile(r"^(?:option\s+)?\(?([A-Z])\)?(?:[.):,]|\s|$)", re.IGNORECASE)
_STANDALONE = re.compile(r"\b([A-Z])\b")


def to_letter(answer: str, letters: str, options: Sequence[str]) -> str | None:
    """The option letter an extracted answer names, or None."""
    text = _WRAPPER.sub(r"\1", answer).strip().strip("*").strip()
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    found = _LEADING_LETTER.match(text)
    if found and found.group(1).isupper() and found.group(1) in letters:
        return found.group(1)
    folded = text.casefold().rstrip(".")
    for letter, option in zip(letters, options, strict=False):
        if folded == str(option).strip().casefold().rstrip("."):
            return letter
    return None


@register_verifier(VerifierKind.CHOICE)
class ChoiceVerifier(Verifier):
    """Letter equality. ``extract``: ``boxed``, ``boxed_or_line`` (default) or ``lenient``."""

    def __init__(self, extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE) -> None:
        self.extract = ExtractMode(extract)

    def verify(self, problem: Problem, response: str) -> Verdict:
        letters = str(problem.metadata["letters"])
        options = problem.metadata.get("options", ())
        mode = ExtractMode.BOXED_OR_LINE if self.extract is ExtractMode.LENIENT else self.extract
        found = extract_answer(response, mode)
        letter = to_letter(found.answer, letters, options) if found.answer else None
        extracted = found.answer
        if letter is None and self.extract is ExtractMode.LENIENT:
            hits = [m.group(1) for m in _STANDALONE.finditer(response[-300:])]
            hits = [h for h in hits if h in letters]
            letter = extracted = hits[-1] if hits else None
        if extracted is None:
            return Verdict.failed(Reason.NO_ANSWER)
        return Verdict.graded(letter is not None and letter == problem.answer, extracted)
