"""The files of ``k15 gen-tests``: the input rows, the Code-v0 output rows and the report
(resume reads the last two).

Input (``.jsonl`` / ``.parquet``, read with ``k15_envs.datasets``; :func:`read_problems`
raises :class:`~k15_envs.datasets.DatasetError` naming the file, row and field)::

    {"id": str | int (unique), "prompt": <statement>, "solutions": [<program>, ...] (or a
     JSON string of that list), "generator": <source defining generate(case_index) -> str>
     | "generator_function": "module:function"}

Output (``--out``, JSON lines, appended and fsynced one kept problem at a time)::

    {"id": ..., "prompt": ..., "tests": [{"input": ..., "output": ...}, ...],
     "canonical_solution": <the first solution that passed every kept case>}

Report (``--report``, default ``<out stem>.report.json``; rewritten atomically after every
problem, so it always describes what ``out`` holds)::

    {"input": ..., "output": ..., "settings": {...},
     "summary": {"problems", "done", "kept", "dropped", "cases_kept"},
     "problems": [{"id", "kept", "reason" (why dropped, else null), "cases_generated",
                   "cases_unique", "cases_kept", "solutions", "solutions_passing",
                   "failing_solutions" (indices), "agreement" (majority size per case)}, ...]}
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k15_envs.datasets import DatasetError, read_rows, text_field

from rllib_k15.runs.integrity import write_durably

__all__ = [
    "SourceProblem",
    "read_problems",
    "ResumeError",
    "default_report_path",
    "resume_entries",
    "write_report",
]

_FUNCTION_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class SourceProblem:
    """One input row: a statement, ground-truth programs and an input generator (exactly one
    of ``generator`` source or a ``generator_function`` ``"module:function"``)."""

    id: str
    prompt: str
    solutions: tuple[str, ...]
    generator: str | None = None
    generator_function: str | None = None
    row: int = 0


def _solutions(source: str, lines, index: int, row: dict) -> tuple[str, ...]:
    """``solutions``: a non-empty list of program texts, or a JSON string of one."""
    value = row.get("solutions")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _error(source, lines, index, "solutions", f"not a JSON list: {exc.msg}") from None
    if not isinstance(value, list) or not value:
        got = "null" if value is None else type(value).__name__
        raise _error(source, lines, index, "solutions", f"expected a non-empty list, got {got}")
    for number, program in enumerate(value):
        if not isinstance(program, str) or not program.strip():
            message = f"solution {number} must be non-empty program text"
            raise _error(source, lines, index, "solutions", message)
    return tuple(value)


def _generator(source: str, lines, index: int, row: dict) -> tuple[str | None, str | None]:
    """``generator`` (source defining ``generate``) or ``generator_function`` (a spec)."""
    code, spec = row.get("generator"), row.get("generator_function")
    if (code is None) == (spec is None):
        message = "give exactly one of 'generator' (source) and 'generator_function'"
        raise _error(source, lines, index, "generator", message)
    if spec is not None:
        if not isinstance(spec, str) or not _FUNCTION_SPEC.match(spec):
            message = f"expected 'module:function', got {spec!r:.60}"
            raise _error(source, lines, index, "generator_function", message)
        return None, spec
    code = text_field(source, lines, index, row, "generator")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        message = f"does not compile: line {exc.lineno}: {exc.msg}"
        raise _error(source, lines, index, "generator", message) from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "generate" for n in tree.body):
        message = "defines no top-level generate(case_index) function"
        raise _error(source, lines, index, "generator", message)
    return code, None


def _error(source: str, lines, index: int, name: str, message: str) -> DatasetError:
    line = lines[index] if lines is not None else None
    return DatasetError(source, message, row=index, field=name, line=line)


def read_problems(dataset: str | Path | Sequence[dict]) -> list[SourceProblem]:
    """Validated input rows; a bad one raises :class:`DatasetError` naming file, row, field."""
    source, rows, lines = read_rows(str(dataset) if isinstance(dataset, Path) else dataset)
    problems, seen = [], {}
    for index, row in enumerate(rows):
        raw_id = row.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id):
            raise _error(source, lines, index, "id", f"expected text or an int, got {raw_id!r:.40}")
        problem_id = str(raw_id)
        if problem_id in seen:
            message = f"duplicate id {problem_id!r} (also row {seen[problem_id]})"
            raise _error(source, lines, index, "id", message)
        seen[problem_id] = index
        prompt = text_field(source, lines, index, row, "prompt")
        solutions = _solutions(source, lines, index, row)
        code, spec = _generator(source, lines, index, row)
        problems.append(SourceProblem(problem_id, prompt, solutions, code, spec, index))
    return problems


# ------------------------------------------------------------------------ output, report

_FREE_SETTINGS = ("workers",)  # settings a resumed run may change


class ResumeError(ValueError):
    """An existing report that a run cannot continue (other settings, unreadable)."""


def default_report_path(out: str | Path) -> Path:
    """``code_rl.jsonl`` -> ``code_rl.report.json``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".report.json")


def _read_output_ids(out: Path) -> list[str]:
    """Ids of the rows already in ``out``; a torn last line (a crash mid-write) is cut."""
    ids, good = [], 0
    with open(out, "rb") as fh:
        data = fh.read()
    for line in data.splitlines(keepends=True):
        try:
            ids.append(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            break
        good += len(line)
    if good < len(data):
        with open(out, "r+b") as fh:
            fh.truncate(good)
    return ids


def _changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"name: before -> now"`` for each setting that differs (``workers`` changes no
    result and may differ)."""
    now = json.loads(json.dumps(now))
    names = sorted((set(before) | set(now)) - set(_FREE_SETTINGS))
    return [
        f"{name}: {before.get(name)!r} -> {now.get(name)!r}"
        for name in names
        if before.get(name) != now.get(name)
    ]


def resume_entries(out: Path, report: Path, settings: dict[str, Any]) -> dict[str, dict]:
    """Report entries of the problems a previous run finished, by id. The report's settings
    must equal ``settings`` (``workers`` may differ); a kept entry counts only with its row
    in ``out``; a row in ``out`` without an entry (a crash between the two writes) counts
    as kept."""
    entries: dict[str, dict] = {}
    if report.exists():
        try:
            previous = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResumeError(f"{report}: unreadable report: {exc}") from None
        changed = _changed_settings(previous.get("settings") or {}, settings)
        if changed:
            raise ResumeError(
                f"{report}: written with other settings ({'; '.join(changed)}); "
                "rerun without --resume into a new --out"
            )
        entries = {e["id"]: e for e in previous.get("problems", [])}
    rows = set(_read_output_ids(out)) if out.exists() else set()
    entries = {k: e for k, e in entries.items() if not e.get("kept") or k in rows}
    for problem_id in rows - set(entries):
        entries[problem_id] = {"id": problem_id, "kept": True, "reason": None}
    return entries


def write_report(path: Path, header: dict, entries: list[dict], total: int) -> dict:
    """Write ``header`` + a summary + ``entries`` to ``path`` atomically; returns it."""
    kept = [e for e in entries if e.get("kept")]
    summary = {
        "problems": total,
        "done": len(entries),
        "kept": len(kept),
        "dropped": len(entries) - len(kept),
        "cases_kept": sum(int(e.get("cases_kept", 0)) for e in kept),
    }
    report = {**header, "summary": summary, "problems": entries}
    write_durably(path, json.dumps(report, indent=1) + "\n")
    return report
