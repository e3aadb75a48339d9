"""Difficulty files: per-problem pass rates from a model-based assessment.

The report assesses difficulty with the model itself: sample each problem n times at
temperature 1; the pass rate is the fraction verified correct, and difficulty =
1 − pass rate (so larger = harder, 0 = always solved, 1 = never solved). The
``k15 difficulty`` command writes such a file; :func:`load_difficulty_file` reads it for
:class:`~rllib_k15.sampling.problem_buffer.ProblemBuffer`.

Format (chosen by the file suffix). Every record has ``pass_rate`` in [0, 1] and names its
problem with ``index`` (0-based position in the env's problem list) or ``problem_id``
(matched against ``problem_ids`` when given, otherwise it must be an integer index).
Other fields (e.g. ``n_samples``) are ignored.

- ``.json``: a list of records, or an object ``{"problems": [records], ...metadata}``;
- ``.jsonl``: one record object per line (blank lines skipped);
- ``.csv``: a header row with ``index`` or ``problem_id``, and ``pass_rate``.

Errors raise :class:`DifficultyFileError` naming the file and the row (CSV/JSONL: the
1-based line number; JSON: the 0-based record number).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DifficultyFileError", "load_difficulty_file", "pass_rates", "write_difficulty_file"]

_SUFFIXES = (".json", ".jsonl", ".csv")


class DifficultyFileError(ValueError):
    """A difficulty file that cannot be used; the message names the file and row."""


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (row label, record) pairs from a difficulty file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DifficultyFileError(f"{path}: cannot read difficulty file: {err}") from err
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise DifficultyFileError(f"{path}: empty CSV, expected a header row")
        for row in reader:
            yield f"line {reader.line_num}", row
    elif suffix == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield f"line {line_no}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise DifficultyFileError(
                        f"{path}: line {line_no}: invalid JSON: {err}"
                    ) from err
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DifficultyFileError(f"{path}: invalid JSON: {err}") from err
        if isinstance(data, dict):
            if "problems" not in data:
                raise DifficultyFileError(f'{path}: a JSON object needs a "problems" list')
            data = data["problems"]
        if not isinstance(data, list):
            raise DifficultyFileError(f"{path}: expected a list of records")
        for number, record in enumerate(data):
            yield f"record {number}", record
    else:
        raise DifficultyFileError(f"{path}: unknown suffix {suffix!r}, expected one of {_SUFFIXES}")


def _index_of(
    record: dict[str, Any], problem_ids: dict[str, int] | None, where: str, num_problems: int
) -> int:
    """``problem_id`` looked up in ``problem_ids`` when both exist (robust to reordering of
    the problem list); otherwise ``index``, or an integer ``problem_id``."""
    has_id = record.get("problem_id") not in (None, "")
    if problem_ids is not None and has_id:
        if str(record["problem_id"]) not in problem_ids:
            raise DifficultyFileError(f"{where}: unknown problem_id {record['problem_id']!r}")
        return problem_ids[str(record["problem_id"])]
    if record.get("index") not in (None, ""):
        raw, field = record["index"], "index"
    elif has_id:
        raw, field = record["problem_id"], "problem_id"
    else:
        raise DifficultyFileError(f'{where}: needs an "index" or "problem_id" field')
    try:
        if isinstance(raw, (bool, float)):
            raise ValueError
        index = int(str(raw).strip())
    except ValueError:
        raise DifficultyFileError(
            f"{where}: {field} {raw!r} is not an integer index (pass problem_ids to match ids)"
        ) from None
    if not 0 <= index < num_problems:
        raise DifficultyFileError(f"{where}: {field} {index} not in [0, {num_problems})")
    return index


def _pass_rate_of(record: dict[str, Any], where: str) -> float:
    if "pass_rate" not in record or record["pass_rate"] in (None, ""):
        raise DifficultyFileError(f'{where}: missing "pass_rate"')
    raw = record["pass_rate"]
    try:
        rate = float(raw)
    except (TypeError, ValueError):
        raise DifficultyFileError(f"{where}: pass_rate {raw!r} is not a number") from None
    if isinstance(raw, bool) or not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise DifficultyFileError(f"{where}: pass_rate {raw!r} must be a number in [0, 1]")
    return rate


def load_difficulty_file(
    path: str | Path,
    num_problems: int,
    *,
    problem_ids: Sequence[str] | None = None,
    default_pass_rate: float | None = None,
) -> np.ndarray:
    """Difficulty per problem, ``1 − pass_rate``, as a (num_problems,) float64 array.

    Every problem must have exactly one record unless ``default_pass_rate`` is given, in
    which case problems without a record get ``1 − default_pass_rate``. A problem listed
    twice is an error (both rows are named).
    """
    path = Path(path)
    ids = None if problem_ids is None else {str(p): i for i, p in enumerate(problem_ids)}
    if ids is not None and len(ids) != len(problem_ids or ()):
        raise ValueError("problem_ids contains duplicates")
    pass_rate = np.full(num_problems, np.nan, dtype=np.float64)
    seen_at: dict[int, str] = {}
    for where_row, record in _records(path):
        where = f"{path}: {where_row}"
        if not isinstance(record, dict):
            raise DifficultyFileError(f"{where}: expected an object, got {type(record).__name__}")
        index = _index_of(record, ids, where, num_problems)
        if index in seen_at:
            raise DifficultyFileError(f"{where}: problem {index} already given at {seen_at[index]}")
        seen_at[index] = where_row
        pass_rate[index] = _pass_rate_of(record, where)
    missing = np.flatnonzero(np.isnan(pass_rate))
    if missing.size:
        if default_pass_rate is None:
            shown = ", ".join(str(i) for i in missing[:10]) + (" …" if missing.size > 10 else "")
            raise DifficultyFileError(
                f"{path}: no pass_rate for {missing.size} of {num_problems} problems "
                f"(indices {shown}); pass default_pass_rate to fill them"
            )
        pass_rate[missing] = default_pass_rate
    return 1.0 - pass_rate


def write_difficulty_file(
    path: str | Path,
    pass_rates: Sequence[float],
    *,
    problem_ids: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write pass rates in the format of ``path``'s suffix (``metadata``: JSON only)."""
    path = Path(path)
    if any(not (math.isfinite(float(r)) and 0.0 <= float(r) <= 1.0) for r in pass_rates):
        raise ValueError("pass rates must be numbers in [0, 1]")
    rows = []
    for i, rate in enumerate(pass_rates):
        row: dict[str, Any] = {"index": i, "pass_rate": float(rate)}
        if problem_ids is not None:
            row["problem_id"] = str(problem_ids[i])
        rows.append(row)
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps({**(metadata or {}), "problems": rows}, indent=1) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            fields = ["index", "pass_rate"] + (["problem_id"] if problem_ids is not None else [])
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f"{path}: unknown suffix {suffix!r}, expected one of {_SUFFIXES}")


def sample_verdicts(engine: Any, reasoning_env: Any, problems: Sequence[Any], params: Any):
    """``params.n`` responses per problem from ``engine``, graded in one batch by the env's
    verifier (a truncated response is wrong): (completion groups, verdict groups), both in
    ``problems`` order."""
    from rllib_k15.rollout.prompts import encode_problems, generate_for

    groups = generate_for(engine, encode_problems(engine, problems), params)
    flat = [(p, c) for p, group in zip(problems, groups, strict=True) for c in group]
    verdicts = reasoning_env.verify_batch(
        [p for p, _ in flat],
        [c.text for _, c in flat],
        truncated=[c.finish_reason == "length" for _, c in flat],
    )
    k = params.n
    return groups, [verdicts[i * k : (i + 1) * k] for i in range(len(problems))]


def pass_rates(
    engine: Any,
    reasoning_env: Any,
    indices: Sequence[int],
    params: Any,
    *,
    batch_problems: int = 32,
) -> list[float]:
    """Pass rate of each problem in ``indices``: #correct / ``params.n`` responses sampled by
    ``engine`` with ``params`` (a truncated response is wrong), in ``indices`` order."""
    rates: list[float] = []
    for start in range(0, len(indices), batch_problems):
        problems = [reasoning_env.problem(int(i)) for i in indices[start : start + batch_problems]]
        _, verdict_groups = sample_verdicts(engine, reasoning_env, problems, params)
        rates += [sum(bool(v.correct) for v in group) / params.n for group in verdict_groups]
    return rates
