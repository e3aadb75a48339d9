"""Final-answer extraction from a model response, and a fast exact number parser.

Extraction order (each step only runs if the previous found nothing):

1. ``boxed``        the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched,
                    nested braces fine; ``\\boxed 42`` too);
2. ``answer_tag``   the last ``<answer>...</answer>`` (the reasoning-gym / R1 convention);
3. ``answer_line``  among the last 3 non-empty lines, the last one that reads
                    ``Answer: X``, ``Final answer: X``, ``#### X`` (GSM8K) or
                    ``... the (final) answer is X``;
4. ``last_number``  the last number anywhere in the response (``lenient`` mode only).

:class:`ExtractMode` picks how far down the list to go: ``boxed`` (1), ``boxed_or_line``
(1-3, the default of most envs), ``lenient`` (1-4, the Arithmetic default: a 135M model
often ends with "17 + 25 = 42"), ``raw`` (the whole stripped response).

Everything here is linear in the response length (no backtracking-prone regexes), so
hostile responses cannot stall the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

__all__ = [
    "ExtractMode",
    "Extraction",
    "extract_answer",
    "find_last_boxed",
    "find_answer_tag",
    "find_answer_line",
    "find_last_number",
    "clean_answer",
    "parse_number",
    "strip_unit_words",
]

MAX_NUMBER_DIGITS = 60  # longer "numbers" are not parsed (no 10**10**10 surprises)


class ExtractMode(str, Enum):  # noqa: UP042 - Python 3.10 has no StrEnum
    BOXED = "boxed"
    BOXED_OR_LINE = "boxed_or_line"
    LENIENT = "lenient"
    RAW = "raw"


@dataclass(frozen=True)
class Extraction:
    """``answer`` is None when nothing was found; ``source`` names the step that found it."""

    answer: str | None
    source: str | None = None


_BOX_TOKEN = re.compile(r"\\(?:boxed|fbox)\b|\\[{}]|[{}]")
_LINE_PATTERNS = (
    re.compile(r"^[\W_]*(?:final\s+)?answer\s*(?:is)?\s*[:：]\s*(.+)$", re.IGNORECASE),
    re.compile(r"^\s*####\s*(.+)$"),
    re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*[:：]?\s*(.+)$", re.IGNORECASE),
)
_NUMBER = re.compile(r"[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(r"([-+]?)\\[dt]?frac\{([-+]?\d+)\}\{(\d+)\}")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_UNIT_TAIL = re.compile(r"^([-+]?[\d.,]+)\s*(?:[A-Za-z]{2,}\.?\s*){1,3}$")


def find_last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` (one linear pass)."""
    start = min((i for i in (text.find("\\boxed"), text.find("\\fbox")) if i >= 0), default=-1)
    if start < 0:
        return None
    best: tuple[int, int] | None = None
    stack: list[int] = []  # content start for \boxed braces, -1 for ordinary braces
    pending_box = -1  # end of a "\boxed" token waiting for its "{"
    for match in _BOX_TOKEN.finditer(text, start):
        token = match.group()
        if token[0] == "\\" and token[1] not in "{}":
            rest = text[match.end() : match.end() + 200]  # bounded: keeps the pass linear
            stripped = rest.lstrip(" ")
            if stripped.startswith("{"):
                pending_box = match.end() + (len(rest) - len(stripped))
            else:  # "\boxed 42": the token up to whitespace or "$"
                word = re.match(r"[^\s$]+", stripped)
                if word and not word.group().startswith("\\"):
                    offset = match.end() + len(rest) - len(stripped)
                    best = (offset, offset + word.end())
                pending_box = -1
        elif token == "{":
            stack.append(match.end() if match.start() == pending_box else -1)
            pending_box = -1
        elif token == "}":
            if stack:
                content_start = stack.pop()
                if content_start >= 0 and (best is None or match.start() >= best[1]):
                    best = (content_start, match.start())
            pending_box = -1
    if best is None:
        return None
    content = text[best[0] : best[1]].strip()
    if content.startswith(("\\boxed", "\\fbox")) and content != text:  # \boxed{\boxed{3}}
        return find_last_boxed(content) or content
    return content


def find_answer_tag(text: str) -> str | None:
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip() or None


def find_answer_line(text: str, last_lines: int = 3) -> str | None:
    lines = [line for line in text[-4000:].splitlines() if line.strip()][-last_lines:]
    for line in reversed(lines):
        line = line.strip()[:500]
        for pattern in _LINE_PATTERNS:
            found = pattern.search(line)
            if found and found.group(1).strip():
                return found.group(1).strip()
    return None


def find_last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text[-2000:])
    return numbers[-1].replace("−", "-").rstrip(",") if numbers else None


def clean_answer(answer: str) -> str:
    """Strip wrappers that carry no meaning: ``$..$``, ``\\(..\\)``, ``**``, a final period."""
    text = answer.strip()
    for _ in range(3):
        before = text
        text = text.strip().strip("*").strip()
        for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + 1:
                text = text[len(left) : len(text) - len(right)].strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        if text == before:
            break
    return text


def extract_answer(text: str, mode: ExtractMode | str = ExtractMode.BOXED_OR_LINE) -> Extraction:
    """Find the final answer in ``text`` following ``mode`` (see the module docstring)."""
    mode = ExtractMode(mode)
    if mode is ExtractMode.RAW:
        stripped = text.strip()
        return Extraction(stripped or None, "raw" if stripped else None)
    steps = [("boxed", find_last_boxed)]
    if mode is not ExtractMode.BOXED:
        steps += [("answer_tag", find_answer_tag), ("answer_line", find_answer_line)]
    if mode is ExtractMode.LENIENT:
        steps.append(("last_number", find_last_number))
    for source, finder in steps:
        found = finder(text)
        if found is not None:
            cleaned = clean_answer(found)
            if cleaned:
                return Extraction(cleaned, source)
    return Extraction(None, None)


def strip_unit_words(answer: str) -> str:
    """``"72 dollars"`` -> ``"72"``; leaves anything that is not number + words alone."""
    text = _TEXT_WRAPPER.sub(r"\1", answer).strip()
    found = _UNIT_TAIL.match(text)
    return found.group(1) if found else answer


def _simplify_number_text(answer: str) -> str:
    text = clean_answer(answer)
    text = _TEXT_WRAPPER.sub(r"\1", text)
    for junk in ("\\!", "\\,", "\\;", "\\ ", "{,}", "\\$", "$", "\\%", "%"):
        text = text.replace(junk, "" if junk not in ("{,}",) else ",")
    text = text.replace("−", "-").replace("\\left", "").replace("\\right", "")
    return strip_unit_words(text.strip())


def parse_number(answer: str) -> Fraction | None:
    """Exact value of a plain number answer, or None.

    Accepts ``42``, ``-7``, ``+3``, ``1,234``, ``42.0``, ``3/4``, ``\\frac{3}{4}``, ``$42$``,
    ``42 apples``, ``\\text{42}``. Rejects anything else (expressions, several numbers).
    """
    text = _simplify_number_text(answer)
    if not text or len(text) > 3 * MAX_NUMBER_DIGITS:
        return None
    if sum(char.isdigit() for char in text) > MAX_NUMBER_DIGITS:
        return None
    if _PLAIN_NUMBER.fullmatch(text):
        return Fraction(text.replace(",", ""))
    for pattern in (_FRACTION, _LATEX_FRACTION):
        found = pattern.fullmatch(text)
        if found:
            *sign, numerator, denominator = found.groups()
            if int(denominator) == 0:
                return None
            value = Fraction(int(numerator), int(denominator))
            return -value if sign and sign[0] == "-" else value
    return None
