"""Worker side of the math verifier: math-verify, run in a grading worker's main thread.

Imported only inside a sandboxed worker (see ``k15_envs.sandbox.worker``), where
math-verify's ``signal.alarm`` timeouts work. Both gold and prediction are tried as
``\\boxed{x}``, then ``$x$``, then plain text, with math-verify's default LaTeX
normalisation (units, ``\\frac12``, ``\\text{}``, percent) and expression parsing.
"""

from __future__ import annotations

import time
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

__all__ = ["grade"]

_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())


def _parse(text: str, timeout: int) -> list:
    for candidate in (f"\\boxed{{{text}}}", f"${text}$", text):
        parsed = parse(candidate, extraction_config=list(_CONFIG), parsing_timeout=timeout)
        if parsed:
            return parsed
    return []


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int) -> list:
    return _parse(gold, timeout)


def grade(gold: str, answer: str, timeout_s: float) -> dict:
    """``{"correct": bool, "status": "graded" | "unparsed" | "bad_gold" | "timeout"}``."""
    budget = max(1, int(timeout_s // 2))  # math-verify's own (signal) budget per operation
    start = time.monotonic()
    gold_parsed = _parse_gold(gold, budget)
    if not gold_parsed:
        return {"correct": False, "status": "bad_gold"}
    pred_parsed = _parse(answer, budget)
    if not pred_parsed:
        slow = time.monotonic() - start >= budget
        return {"correct": False, "status": "timeout" if slow else "unparsed"}
    correct = bool(verify(gold_parsed, pred_parsed, timeout_seconds=budget))
    slow = not correct and time.monotonic() - start >= budget
    return {"correct": correct, "status": "timeout" if slow else "graded"}


_parse("1", 5)  # warm up the LaTeX parser at worker start, not inside a task deadline
