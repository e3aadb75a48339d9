"""Test cases for code problems from ground-truth solutions (the Kimi k1.5 report, §2.2).

Code problems often come with solutions but without tests. Following the report, each
problem's input generator (CYaRon) draws ``cases`` inputs; every ground-truth solution runs on
every input in the sandbox (``k15_envs.sandbox.run_stdio``, the runner that grades
``k15/Code-v0`` stdin/stdout rows, with the same limits); then

- a **case** is kept when at least ``ceil(case_agreement * n)`` of the ``n`` solutions print
  the same (normalised, ``k15_envs.verifiers.code_stdio.normalize_output``) output; that
  majority output becomes the expected output. A solution that errors, times out or hits a
  limit counts as disagreeing;
- a **problem** is kept when at least ``ceil(problem_pass * n)`` solutions pass all of its
  kept cases and it has at least ``min_cases`` kept cases.

With 10 solutions and the report's 0.7 / 0.9: a case needs 7 agreeing solutions, a problem
9 solutions passing everything. Kept problems become Code-v0 stdin/stdout rows
(``{"id", "prompt", "tests": [{"input", "output"}], "canonical_solution"}``).

Generators are the dataset author's code, not model output: they run unconfined, in one
child Python process per problem (``sys.executable``, the caller's environment, cwd = the
current directory, the input file's directory first on ``sys.path``) with a wall-clock
timeout, so a hanging or crashing generator drops its problem instead of the run. Before
``generate(i)`` Python's ``random`` (which CYaRon draws from) is seeded with
:func:`case_seed` ``(seed, problem id, i)``: the same seed gives the same inputs. Duplicate
inputs are run once (the first occurrence is kept), and so are identical solution texts
(each copy still counts as one of the ``n`` solutions).

Run it as ``k15 gen-tests problems.jsonl --out code_rl.jsonl`` (docs/data_gen_tests.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k15_envs.sandbox import CODE_DEFAULTS, RunReport, SandboxConfig
from k15_envs.sandbox.runner import cap_text, run_stdio
from k15_envs.verifiers.code_stdio import normalize_output

from rllib_k15.data.gen_tests_files import (
    SourceProblem,
    default_report_path,
    read_problems,
    resume_entries,
    write_report,
)

__all__ = [
    "GenTestsSettings",
    "SourceProblem",
    "ProblemResult",
    "GeneratorError",
    "read_problems",
    "case_seed",
    "generate_inputs",
    "required_votes",
    "select_cases",
    "judge_problem",
    "process_problem",
    "gen_tests",
]

_ERROR_CHARS = 300  # of a generator's error text in the report
RunStdio = Callable[[str, str, SandboxConfig], RunReport]


@dataclass(frozen=True)
class GenTestsSettings:
    """What decides which cases and problems are kept (all of it is in the report).

    cases: inputs generated per problem (the report: tens of cases).
    case_agreement: fraction of solutions that must print the same output for a case to be
        kept (0.7: 7 of 10). Lower keeps more cases, with a weaker claim about the truth.
    problem_pass: fraction of solutions that must pass every kept case (0.9: 9 of 10).
        Lower keeps problems whose solutions disagree more (flaky or wrong ground truth).
    min_cases: kept cases a problem needs (fewer: too weak a test to reward a program).
    seed: seeds the generators' ``random`` per (seed, problem id, case index).
    sandbox: limits each solution run gets; the grader's defaults, so kept tests fit them.
    workers: sandbox runs at once (at most 2: each run is a few processes).
    generator_timeout_s: wall clock for one problem's generator process.
    """

    cases: int = 20
    case_agreement: float = 0.7
    problem_pass: float = 0.9
    min_cases: int = 5
    seed: int = 0
    sandbox: SandboxConfig = CODE_DEFAULTS
    workers: int = 2
    generator_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("cases", "min_cases", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"GenTestsSettings.{name} ({getattr(self, name)}) must be >= 1")
        for name in ("case_agreement", "problem_pass"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(
                    f"GenTestsSettings.{name} ({getattr(self, name)}) must be in (0, 1]"
                )
        if self.min_cases > self.cases:
            raise ValueError(
                f"GenTestsSettings.min_cases ({self.min_cases}) must be <= cases ({self.cases})"
            )
        if self.workers > 2:
            raise ValueError(f"GenTestsSettings.workers ({self.workers}) must be <= 2")
        if self.generator_timeout_s <= 0:
            raise ValueError(
                f"GenTestsSettings.generator_timeout_s ({self.generator_timeout_s}) must be > 0"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly settings (the sandbox as its fields)."""
        return dataclasses.asdict(self)


@dataclass
class ProblemResult:
    """What happened to one problem (a report entry) and its Code-v0 row when kept."""

    id: str
    kept: bool = False
    reason: str | None = None
    cases_generated: int = 0
    cases_unique: int = 0
    cases_kept: int = 0
    solutions: int = 0
    solutions_passing: int = 0
    failing_solutions: list[int] = field(default_factory=list)
    agreement: list[int] = field(default_factory=list)
    row: dict[str, Any] | None = None

    def entry(self) -> dict[str, Any]:
        """The report entry (everything but the row)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "row"}


class GeneratorError(RuntimeError):
    """A problem's generator failed (its problem is dropped with this message)."""


# ------------------------------------------------------------------------- generation

_WORKER = r"""
import importlib, json, random, sys
request = json.loads(sys.stdin.read())
sys.path[:0] = request["path"]
if request["source"] is not None:
    namespace = {"__name__": "k15_generator"}
    exec(compile(request["source"], "<generator>", "exec"), namespace)
    generate = namespace["generate"]
else:
    module, _, name = request["function"].partition(":")
    generate = getattr(importlib.import_module(module), name)
result, sys.stdout = sys.stdout, sys.stderr  # the generator's prints must not corrupt JSON
inputs = []
for index, seed in enumerate(request["seeds"]):
    random.seed(seed)
    value = generate(index)
    if not isinstance(value, str):
        raise TypeError(f"generate({index}) returned {type(value).__name__}, expected str")
    inputs.append(value)
result.write(json.dumps(inputs))
"""


def case_seed(seed: int, problem_id: str, case_index: int) -> int:
    """``random``'s seed for one case: the first 8 bytes of sha256("seed/id/index")."""
    digest = hashlib.sha256(f"{seed}/{problem_id}/{case_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_inputs(
    problem: SourceProblem, settings: GenTestsSettings, search_path: Sequence[str] = ()
) -> list[str]:
    """``settings.cases`` inputs from the problem's generator, in a child process (module
    docstring); raises :class:`GeneratorError` on a crash, a timeout or a non-str input."""
    request = {
        "source": problem.generator,
        "function": problem.generator_function,
        "seeds": [case_seed(settings.seed, problem.id, i) for i in range(settings.cases)],
        "path": [str(p) for p in search_path],
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=settings.generator_timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise GeneratorError(
            f"generator timed out after {settings.generator_timeout_s:g}s"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise GeneratorError(f"generator failed: {cap_text(last, _ERROR_CHARS)}")
    try:
        inputs = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise GeneratorError("generator process wrote an unreadable result") from None
    if not isinstance(inputs, list) or len(inputs) != settings.cases:
        raise GeneratorError(f"generator returned no list of {settings.cases} inputs")
    return inputs


# -------------------------------------------------------------------------- selection


def required_votes(fraction: float, n: int) -> int:
    """Solutions needed out of ``n``: ``ceil(fraction * n)`` (0.7 of 10 -> 7), at least 1."""
    return max(1, math.ceil(fraction * n - 1e-9))


def _majority(outputs: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common output (ties: the earliest solution's) and how many gave it; failed
    runs (None) never count."""
    counts = Counter(o for o in outputs if o is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    return next(o for o in outputs if o is not None and counts[o] == best), best


def select_cases(
    outputs: Sequence[Sequence[str | None]], case_agreement: float
) -> tuple[list[tuple[int, str]], list[int]]:
    """``outputs[s][c]``: solution ``s``'s normalised output on case ``c`` (None: it failed).
    Returns the kept ``(case, expected output)`` pairs and each case's majority size."""
    need = required_votes(case_agreement, len(outputs))
    kept, agreement = [], []
    for case in range(len(outputs[0])):
        expected, votes = _majority([per_solution[case] for per_solution in outputs])
        agreement.append(votes)
        if expected is not None and votes >= need:
            kept.append((case, expected))
    return kept, agreement


def judge_problem(
    result: ProblemResult,
    outputs: Sequence[Sequence[str | None]],
    settings: GenTestsSettings,
) -> list[tuple[int, str]]:
    """Apply both rules to ``outputs`` (see :func:`select_cases`), filling ``result``;
    returns the kept cases (empty when the problem is dropped)."""
    kept, result.agreement = select_cases(outputs, settings.case_agreement)
    result.cases_kept = len(kept)
    passing = [s for s, per in enumerate(outputs) if all(per[c] == out for c, out in kept)]
    result.solutions, result.solutions_passing = len(outputs), len(passing)
    result.failing_solutions = [s for s in range(len(outputs)) if s not in passing]
    need = required_votes(settings.problem_pass, len(outputs))
    if len(kept) < settings.min_cases:
        result.reason = f"{len(kept)} cases kept, fewer than min_cases={settings.min_cases}"
    elif len(passing) < need:
        result.reason = (
            f"{len(passing)} of {len(outputs)} solutions pass all kept cases, "
            f"fewer than {need} (problem_pass={settings.problem_pass:g})"
        )
    result.kept = result.reason is None
    return kept if result.kept else []


def _run_all(
    solutions: Sequence[str], inputs: Sequence[str], settings: GenTestsSettings, run: RunStdio
) -> list[list[str | None]]:
    """Every solution on every input (``settings.workers`` sandbox runs at once): the
    normalised stdout, or None for a run that did not exit 0. Identical solution texts
    run once; each copy still counts as one solution."""
    programs = list(dict.fromkeys(solutions))

    def one(job: tuple[int, int]) -> str | None:
        report = run(programs[job[0]], inputs[job[1]], settings.sandbox)
        return normalize_output(report.stdout) if report.status == "passed" else None

    jobs = [(p, c) for p in range(len(programs)) for c in range(len(inputs))]
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="k15-gen-tests") as pool:
        flat = list(pool.map(one, jobs))
    by_program = {
        program: flat[p * len(inputs) : (p + 1) * len(inputs)] for p, program in enumerate(programs)
    }
    return [list(by_program[solution]) for solution in solutions]


def process_problem(
    problem: SourceProblem,
    settings: GenTestsSettings,
    *,
    search_path: Sequence[str] = (),
    run: RunStdio = run_stdio,
) -> ProblemResult:
    """Generate, run, judge one problem; ``result.row`` is its Code-v0 row when kept."""
    result = ProblemResult(problem.id, cases_generated=settings.cases)
    try:
        inputs = list(dict.fromkeys(generate_inputs(problem, settings, search_path)))
    except GeneratorError as exc:
        result.reason = str(exc)
        return result
    result.cases_unique = len(inputs)
    outputs = _run_all(problem.solutions, inputs, settings, run)
    kept = judge_problem(result, outputs, settings)
    if result.kept:
        tests = [{"input": inputs[c], "output": out + "\n" if out else ""} for c, out in kept]
        first = min(set(range(len(outputs))) - set(result.failing_solutions))
        result.row = {
            "id": problem.id,
            "prompt": problem.prompt,
            "tests": tests,
            "canonical_solution": problem.solutions[first],
        }
    return result


# ----------------------------------------------------------------------------- driver


def gen_tests(
    dataset: str | Path,
    out: str | Path,
    settings: GenTestsSettings,
    *,
    report: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    run: RunStdio = run_stdio,
) -> dict[str, Any]:
    """Process every problem of ``dataset`` (input rows, :func:`read_problems`), append the
    kept ones to ``out`` (Code-v0 rows) and write the report (returned). An existing
    ``out`` needs ``resume``: finished problems are then skipped."""
    from tqdm.auto import tqdm

    problems = read_problems(dataset)
    out = Path(out)
    report_path = Path(report) if report is not None else default_report_path(out)
    if not resume and (out.exists() or report_path.exists()):
        raise FileExistsError(f"{out if out.exists() else report_path} exists")
    done = resume_entries(out, report_path, settings.as_dict()) if resume else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {"input": str(dataset), "output": str(out), "report": str(report_path)}
    header["settings"] = settings.as_dict()
    search_path = [str(Path(dataset).resolve().parent)]
    entries: list[dict] = []
    bar = tqdm(total=len(problems), desc="gen-tests", unit="problem", disable=not progress)
    with open(out, "a", encoding="utf-8") as fh, bar:
        for problem in problems:
            if problem.id in done:
                entries.append(done[problem.id])
            else:
                result = process_problem(problem, settings, search_path=search_path, run=run)
                if result.row is not None:
                    fh.write(json.dumps(result.row, ensure_ascii=False) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                entries.append(result.entry())
                write_report(report_path, header, entries, len(problems))
            kept = sum(bool(e.get("kept")) for e in entries)
            bar.set_postfix(kept=kept, dropped=len(entries) - kept)
            bar.update(1)
    return write_report(report_path, header, entries, len(problems))
