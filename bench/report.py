"""The results page of :mod:`bench.run_all`: the summary rows of the per-benchmark JSON
files, where each set of rows came from, and the text of ``bench/results/README.md`` (one
table, the targets, the rollout profile, the runs).

Pure functions of already-loaded JSON documents, shared by a full run and by
``python -m bench.run_all --render-only`` (which re-renders the page from the files on
disk without running anything).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from bench.common import Row, describe_machine, format_number, markdown_table, rows_from

__all__ = [
    "doc_rows",
    "origin",
    "parse_date",
    "provenance_note",
    "readme_text",
    "short_date",
    "target_lines",
]

NO_ROWS = "no summary rows in its JSON"


def doc_rows(name: str, doc: Mapping[str, Any]) -> list[Row]:
    """The summary rows of a benchmark's JSON (its ``rows``, :class:`Row` fields). A JSON
    without such rows gives ONE row saying so: raw numbers are never flattened into the
    table."""
    try:
        rows = rows_from(doc)
    except (TypeError, AttributeError):  # rows missing, not a list, or not Row fields
        rows = []
    return rows or [Row(name, NO_ROWS, None, note=f"see {name}.json")]


def parse_date(text: Any) -> dt.datetime | None:
    """A result file's ``date`` as an aware datetime (ISO; a naive one such as
    "2026-11-25 06:32" is taken as local time), or None if there is none."""
    try:
        date = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return date if date.tzinfo else date.astimezone()


def short_date(text: Any) -> str:
    """Any parseable date as "2026-11-25 06:47" (in its own time zone), else "-"."""
    date = parse_date(text)
    return date.strftime("%Y-%m-%d %H:%M") if date else "-"


def origin(measured: Any, run_end: Any, run_minutes: float, slack_s: float = 90.0) -> str:
    """When a JSON was measured relative to the last ``run_all``, which ran ``run_minutes``
    up to ``run_end``: "run" (during it), "before" (earlier: that run wrote none), "after"
    (re-measured separately since) or "unknown" (a date is missing). ``slack_s`` absorbs
    dates written with minute resolution."""
    when, end = parse_date(measured), parse_date(run_end)
    if when is None or end is None:
        return "unknown"
    slack = dt.timedelta(seconds=slack_s)
    if when > end + slack:
        return "after"
    if when < end - dt.timedelta(minutes=run_minutes) - slack:
        return "before"
    return "run"


def provenance_note(name: str, entry: Mapping[str, Any], where: str) -> str:
    """One sentence for the notes under the table when ``name``'s rows are not simply the
    output of a clean run in the last ``run_all`` (``entry``: its status there), else ""."""
    status = entry.get("status", "not run")
    when = short_date(entry.get("measured"))
    minutes = f" after {entry['seconds'] / 60:.1f} min" if entry.get("seconds") else ""
    if status == "not run":
        return f"{name}: not part of the last run_all; rows measured {when}."
    if where == "after":
        there = f" (there: {status}{minutes})" if status != "ok" else ""
        return (f"{name}: rows from a separate run on {when}, after the last run_all{there}; "
                "the next `make bench` replaces them.")  # fmt: skip
    if where == "before":
        return (f"{name}: STALE rows from {when}: the last run_all wrote no result "
                f"({status}{minutes}); the next successful run replaces them.")  # fmt: skip
    if status != "ok":
        return f"{name}: {status}{minutes} in the last run_all; rows are what it wrote before."
    return ""


def target_lines(rows: Sequence[Row]) -> list[str]:
    """One line per row that has a target: where we stand against it."""
    lines = []
    for r in rows:
        if r.target is None:
            continue
        measured = r.ratio if r.ratio is not None else r.value
        kind = "ratio" if r.ratio is not None else "value"
        op = ">=" if r.higher_is_better else "<="
        lines.append(f"- {r.benchmark}, {r.metric.strip()}: {kind} {format_number(measured)} "
                     f"(target {op} {format_number(r.target)}) — {r.status}")  # fmt: skip
    return lines


def profile_lines(engine_doc: Mapping[str, Any] | None, top: int = 5) -> list[str]:
    """The rollout engines' top ops by self CPU time (``engine_throughput --profile``)."""
    lines = []
    for name, run in (engine_doc or {}).get("results", {}).items():
        ops = run.get("profile_top_ops")
        if ops:
            shares = ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops[:top])
            lines.append(f"- {name}: {shares}")
    return lines


def _header(summary: Mapping[str, Any]) -> list[str]:
    machine = summary["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    command = "python -m bench.run_all" + (" --quick" if summary.get("quick") else "")
    if summary.get("date"):
        last = (f"Last `make bench` (`{command}`): **{summary['date']}**, "
                f"{summary['total_minutes']:.1f} min, commit `{machine.get('git_commit')}`; "
                f"load average {summary['loadavg_start']} at start, "
                f"{summary['loadavg_end']} at end.")  # fmt: skip
    else:
        last = "No `run_all` has completed yet: the rows are read from the JSON files."
    lines = ["# Benchmark results", "", last]
    if summary.get("rendered") and summary.get("rendered") != summary.get("date"):
        lines.append(f"Page re-rendered {summary['rendered']} from the per-benchmark JSON "
                     "files (`python -m bench.run_all --render-only`); each benchmark's "
                     "measurement date and commit are under Runs.")  # fmt: skip
    return lines + [
        "",
        f"Machine: {describe_machine(machine)} (shared: absolute numbers move with the load, "
        "ratios measured side by side much less).",
        f"Versions: Python {machine.get('python')}, {versions}.",
    ]


def readme_text(
    summary: Mapping[str, Any],
    rows: Sequence[Row],
    notes: Sequence[str],
    engine_doc: Mapping[str, Any] | None,
    budgets: Mapping[str, tuple[float, float]],
) -> str:
    """The page: header, ONE table of ``rows``, ``notes`` on where rows came from, targets,
    profile, and the runs (``budgets``: name -> (expected, limit) minutes)."""
    lines = _header(summary) + [
        "",
        "Ratios are ours ÷ the alternative, measured in the same run. `status` compares the "
        "ratio (or the value when there is no alternative) with the issue's target.",
        "",
        markdown_table(rows),
        "",
    ]
    if notes:
        lines += ["Notes on the table:", "", *(f"- {n}" for n in notes), ""]
    lines += [
        "## Targets",
        "",
        *(target_lines(rows) or ["- (no row has a target)"]),
        "",
        "## Where the rollout time goes (torch profiler, self CPU time)",
        "",
        *(profile_lines(engine_doc) or ["- (engine_throughput did not profile)"]),
        "",
        "## Runs",
        "",
        "| benchmark | last run_all | minutes | expected / limit | measured | commit | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in summary["benchmarks"].items():
        minutes = f"{b['seconds'] / 60:.1f}" if b.get("seconds") else "-"
        expected, limit = budgets.get(name, (None, None))
        budget = f"{expected:g} / {limit:g}" if expected is not None else "-"
        lines.append(f"| {name} | {b.get('status', 'not run')} | {minutes} | {budget} | "
                     f"{short_date(b.get('measured'))} | {b.get('commit') or '-'} | "
                     f"{b.get('note', '')} |")  # fmt: skip
    lines += ["", "Per-benchmark JSON (configs, raw numbers, machine) next to this file."]
    return "\n".join(lines) + "\n"
