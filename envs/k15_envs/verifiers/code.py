"""Code verifier: runs the response's solution against the problem's tests in the sandbox.

Two row kinds: HumanEval functions (``entry_point`` + ``test``; below) and stdin/stdout
programs (``tests``: input/output cases; graded by ``code_stdio.grade_stdio``, one sandboxed
run per case, outputs compared outside the sandbox).

Code extraction: the last fenced block (```` ```python ````, ```` ```py ```` or a bare
fence) that defines the entry point, else the last fenced block, else the whole response
as a completion of the prompt (stdin/stdout rows: the last fenced block, else the whole
response). The program is HumanEval's, split at the trust boundary
(:func:`build_program`)::

    solution (untrusted, its own process):  prompt + code
    tests (trusted, the harness process):   prompt; test + "\\n\\ncheck(entry_point)\\n"

(when the code defines the entry point itself, it is appended after the prompt with a
newline, so the prompt's imports and helpers stay available and the new definition wins).
The tests get ``entry_point`` as a proxy: each call sends its arguments to the solution
process and gets the return value back as plain data (JSON-based, never pickle), so a
solution cannot reach the harness's pass report, patch what the tests use, or return
objects that compare equal to anything. See ``k15_envs/sandbox/harness.py`` for what
value passing cannot grade (in-place mutation of arguments, object identity) and
``_wire.py`` for the values it carries (None, bool, int, float, complex, str, bytes,
bytearray, list, tuple, set, frozenset, dict; exact types).

Each run is confined by :func:`k15_envs.sandbox.run_python` (see ``SandboxConfig``); at
most ``num_workers`` run at once (default ``min(2, cpu_count)``), however many threads
call ``verify``. Sandbox outcomes map to reasons: passed -> ``correct``, failed assertion
-> ``wrong``, and ``timeout``, ``cpu_limit``, ``memory_limit``, ``output_limit``,
``early_exit``, ``killed``, ``error: <Type>: <message>`` (``error: unsupported return
type <name>`` for a value value passing cannot carry). The program chooses that message,
so at most 160 characters of it reach the reason (then ``... [N chars cut]``); its
stdout/stderr never reach ``info``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from k15_envs.sandbox import CODE_DEFAULTS, SandboxConfig, default_pool_size, resolve_config
from k15_envs.sandbox.runner import RunReport, SplitProgram, cap_text, run_python, run_stdio
from k15_envs.types import Problem, Reason, Verdict, error_reason
from k15_envs.verifiers.base import PooledVerifier, VerifierKind, register_verifier
from k15_envs.verifiers.code_stdio import grade_stdio

__all__ = ["CodeVerifier", "extract_code", "build_program"]

_REASON_DETAIL_CHARS = 160  # of the program's exception text, in ``info["reason"]``
_LANG_TAG = re.compile(r"^[ \t]*(?:python3?|py)?[ \t]*$", re.IGNORECASE)
_STATUS_REASON = {
    "failed": Reason.WRONG,
    "timeout": Reason.TIMEOUT,
    "cpu_limit": Reason.CPU_LIMIT,
    "memory_limit": Reason.MEMORY_LIMIT,
    "output_limit": Reason.OUTPUT_LIMIT,
    "early_exit": Reason.EARLY_EXIT,
    "killed": Reason.KILLED,
}


def _fenced_blocks(text: str) -> list[str]:
    """Contents of complete ```` ``` ```` fences (split-based: linear, no regex backtracking)."""
    parts = text.split("```")
    blocks = []
    for index in range(1, len(parts) - 1, 2):
        first, _, body = parts[index].partition("\n")
        if _LANG_TAG.match(first):
            blocks.append(body)
        elif not body:
            blocks.append(first)
    return blocks


def _defines(code: str, entry_point: str) -> bool:
    pattern = rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\("
    return re.search(pattern, code, re.MULTILINE) is not None


def extract_code(response: str, entry_point: str | None) -> str | None:
    """The code in ``response`` (see the module docstring), or None if there is none;
    ``entry_point`` None: no preference for a block that defines it (stdin/stdout rows)."""
    blocks = _fenced_blocks(response)
    if blocks:
        defining = [b for b in blocks if entry_point and _defines(b, entry_point)]
        code = (defining or blocks)[-1]
    else:
        code = response
        if "```" in code:  # an unclosed fence: keep what follows it
            first, _, body = code.rsplit("```", 1)[1].partition("\n")
            code = body if _LANG_TAG.match(first) else first + "\n" + body
    return code if code.strip() else None


def build_program(prompt: str, code: str, test: str, entry_point: str) -> SplitProgram:
    """HumanEval's program split in two: the solution (prompt + code) and the tests
    (``test`` + ``check(entry_point)``, with the prompt as context for its helpers)."""
    joiner = "\n" if _defines(code, entry_point) else ""
    return SplitProgram(
        solution=f"{prompt}{joiner}{code}\n",
        tests=f"{test}\n\ncheck({entry_point})\n",
        entry_point=entry_point,
        context=prompt,
    )


class _Runner:
    """Per-process concurrency limit and thread pool for sandbox runs."""

    def __init__(self, size: int) -> None:
        self.slots = threading.BoundedSemaphore(size)
        self.executor = ThreadPoolExecutor(size, thread_name_prefix="k15-code")

    def run(self, program: SplitProgram, config: SandboxConfig) -> RunReport:
        with self.slots:
            return run_python(program, config)

    def run_stdio(self, program: str, stdin: str, config: SandboxConfig) -> RunReport:
        with self.slots:
            return run_stdio(program, stdin, config)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@register_verifier(VerifierKind.CODE)
class CodeVerifier(PooledVerifier):
    """Sandboxed test execution.

    sandbox: :class:`SandboxConfig` or a dict of overrides of ``CODE_DEFAULTS``.
    num_workers: programs run at once (default ``min(2, cpu_count)``).
    """

    def __init__(
        self, sandbox: SandboxConfig | dict | None = None, num_workers: int | None = None
    ) -> None:
        super().__init__()
        self.sandbox = resolve_config(sandbox, CODE_DEFAULTS)
        self.num_workers = default_pool_size() if num_workers is None else int(num_workers)
        if self.num_workers < 1:
            raise ValueError(f"num_workers ({self.num_workers}) must be >= 1")

    def _create_resource(self) -> _Runner:
        return _Runner(self.num_workers)

    def verify(self, problem: Problem, response: str) -> Verdict:
        meta = problem.metadata
        if "tests" in meta:
            return self._verify_stdio(meta["tests"], response)
        code = extract_code(response, meta["entry_point"])
        if code is None:
            return Verdict.failed(Reason.NO_ANSWER)
        program = build_program(meta["prompt"], code, meta["test"], meta["entry_point"])
        return _to_verdict(self._get_resource().run(program, self.sandbox), code)

    def _verify_stdio(self, cases, response: str) -> Verdict:
        """A stdin/stdout row: one sandboxed run per case (``code_stdio``)."""
        program = extract_code(response, None)
        if program is None:
            return Verdict.failed(Reason.NO_ANSWER)
        runner = self._get_resource()
        return grade_stdio(
            program, cases, lambda code, stdin: runner.run_stdio(code, stdin, self.sandbox)
        )

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
        if len(problems) <= 1:
            return [self.verify(p, r) for p, r in zip(problems, responses, strict=True)]
        executor = self._get_resource().executor
        return list(executor.map(self.verify, problems, responses))


def _to_verdict(report: RunReport, code: str) -> Verdict:
    if report.status == "passed":
        return Verdict(1.0, True, code, Reason.CORRECT.value)
    if report.status in _STATUS_REASON:
        return Verdict.failed(_STATUS_REASON[report.status], code)
    detail = cap_text(report.detail or report.status, _REASON_DETAIL_CHARS)
    return Verdict.failed(error_reason(detail), code)
