"""Stdin/stdout grading for ``k15/Code-v0`` rows with ``tests`` (competitive-programming style).

A row ``{"id", "prompt": <statement>, "tests": [{"input": str, "output": str}, ...]}`` (``tests``
may also be a JSON string of that list) is graded by running the response's program in the
sandbox **once per case**, with the case's input on stdin (``k15_envs.sandbox.run_stdio``),
and comparing what it printed with the expected output **in this (trusted) process**: the
expected output never enters the sandbox, so the program cannot read it or forge a pass.

Comparison (:func:`normalize_output`), the usual judge rule: both texts are split into
lines, trailing whitespace (spaces, tabs, ``\\r``) is stripped from every line and trailing
blank lines are dropped; everything else (leading whitespace, blank lines inside, letter
case, number formatting) must match exactly.

Verdicts, first failing case wins (cases run in order; the rest are skipped):

    correct                                    every case matched
    wrong: case K of N (line L: expected 'e', got 'g')   the first mismatch (excerpts capped)
    timeout, cpu_limit, memory_limit, output_limit, killed   the sandbox's limits, as for
                                               HumanEval rows
    early_exit                                 the program exited with a non-zero status
    error: case K: <Type>: <message>           an uncaught exception (message capped)
    no_answer                                  no code in the response
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from k15_envs.sandbox.runner import RunReport, cap_text
from k15_envs.types import Reason, Verdict, error_reason

__all__ = ["StdioCase", "parse_cases", "normalize_output", "first_difference", "grade_stdio"]

_EXCERPT_CHARS = 40  # of one line of expected/actual output, in a ``wrong`` reason
_REASON_DETAIL_CHARS = 160  # of the program's exception text, in an ``error`` reason
_STATUS_REASON = {
    "timeout": Reason.TIMEOUT,
    "cpu_limit": Reason.CPU_LIMIT,
    "memory_limit": Reason.MEMORY_LIMIT,
    "output_limit": Reason.OUTPUT_LIMIT,
    "early_exit": Reason.EARLY_EXIT,
    "killed": Reason.KILLED,
}

RunCase = Callable[[str, str], RunReport]  # (program, stdin) -> report


@dataclass(frozen=True)
class StdioCase:
    """One test case: the text fed to stdin and the expected stdout."""

    input: str
    output: str


def parse_cases(value: object) -> tuple[StdioCase, ...]:
    """``tests`` (a list of ``{"input", "output"}`` objects, or a JSON string of one) as
    cases; raises ``ValueError`` saying which case and key is wrong."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list of test cases: {exc.msg}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"expected a non-empty list of test cases, got {type(value).__name__}")
    cases = []
    for index, case in enumerate(value):
        if not isinstance(case, dict):
            raise ValueError(f"case {index}: expected an object, got {type(case).__name__}")
        for key in ("input", "output"):
            if not isinstance(case.get(key), str):
                got = type(case.get(key)).__name__
                raise ValueError(f"case {index}: {key!r} must be text, got {got}")
        cases.append(StdioCase(case["input"], case["output"]))
    return tuple(cases)


def normalize_output(text: str) -> str:
    """Judge normalisation: ``rstrip`` every line, drop trailing blank lines."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def first_difference(expected: str, actual: str) -> str | None:
    """None when the normalised texts match, else ``line L: expected 'e', got 'g'`` for the
    first line that differs (``<end of output>`` past the last line)."""
    want, got = normalize_output(expected).split("\n"), normalize_output(actual).split("\n")
    if want == got:
        return None
    end = "<end of output>"
    for number in range(1, max(len(want), len(got)) + 1):
        line_want = want[number - 1] if number <= len(want) else end
        line_got = got[number - 1] if number <= len(got) else end
        if line_want != line_got:
            return (
                f"line {number}: expected {cap_text(line_want, _EXCERPT_CHARS)!r}, "
                f"got {cap_text(line_got, _EXCERPT_CHARS)!r}"
            )
    return None  # unreachable: the lists differ


def grade_stdio(program: str, cases: Sequence[StdioCase], run_case: RunCase) -> Verdict:
    """Run ``program`` on each case in order (``run_case(program, stdin)``, a sandboxed
    run); the first case that does not pass decides the verdict (module docstring)."""
    total = len(cases)
    for number, case in enumerate(cases, start=1):
        report = run_case(program, case.input)
        if report.status == "passed":
            difference = first_difference(case.output, report.stdout)
            if difference is None:
                continue
            return Verdict.failed(
                f"{Reason.WRONG.value}: case {number} of {total} ({difference})", program
            )
        if report.status in _STATUS_REASON:
            return Verdict.failed(_STATUS_REASON[report.status], program)
        detail = cap_text(report.detail or report.status, _REASON_DETAIL_CHARS)
        return Verdict.failed(error_reason(f"case {number}: {detail}"), program)
    return Verdict(1.0, True, program, Reason.CORRECT.value)
