"""Reading user datasets (``.jsonl`` / ``.json`` lines / ``.parquet``) with pyarrow, and
validating their fields.

Every problem fails at construction, never mid-training: a missing file, an unreadable or
empty one, a missing column, a null or wrongly typed value all raise
:class:`DatasetError`, whose message names the file, the row (0-based; for JSON lines also
the line number) and the field, e.g.::

    DatasetError: data/gsm8k.jsonl: row 17 (line 18): field 'answer': expected text or a
    number, got list

JSON lines are read with ``pyarrow.json``; when pyarrow rejects a file (a malformed line,
a column whose type changes between rows) it is re-read line by line with the standard
library, which either pinpoints the bad line or accepts mixed types (``42`` and ``"42"``
in one column are both fine answers).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DatasetError",
    "read_rows",
    "pick_column",
    "text_field",
    "answer_field",
    "number_field",
    "list_field",
]

DatasetSource = str | os.PathLike | Sequence[Mapping[str, Any]]
_NUMBER_IN_TEXT = re.compile(r"[-+]?\d+(?:\.\d+)?")


class DatasetError(ValueError):
    """A dataset problem, with ``source`` (file), ``row`` and ``field`` attributes."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        row: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source, self.row, self.field, self.line = source, row, field, line
        where = [source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where + [message]))


def _read_jsonl_stdlib(path: Path) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    str(path), f"invalid JSON: {exc.msg}", row=len(rows), line=line_no
                ) from None
            if not isinstance(row, dict):
                raise DatasetError(
                    str(path),
                    f"expected a JSON object, got {type(row).__name__}",
                    row=len(rows),
                    line=line_no,
                )
            rows.append(row)
            lines.append(line_no)
    return rows, lines


def _read_jsonl(path: Path) -> tuple[list[dict], list[int] | None]:
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        return pa_json.read_json(str(path)).to_pylist(), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _read_jsonl_stdlib(path)


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(str(path)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(str(path), f"unreadable parquet file: {exc}") from None


def read_rows(dataset: DatasetSource) -> tuple[str, list[dict], list[int] | None]:
    """``(source_name, rows, line_numbers_or_None)`` from a path or in-memory rows."""
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        source = str(path)
        if not path.is_file():
            raise DatasetError(source, "file not found" if not path.exists() else "not a file")
        suffix = path.suffix.lower()
        try:
            if suffix in (".jsonl", ".json", ".ndjson"):
                rows, lines = _read_jsonl(path)
            elif suffix in (".parquet", ".pq"):
                rows, lines = _read_parquet(path), None
            else:
                raise DatasetError(
                    source, f"unsupported file type {suffix!r} (use .jsonl or .parquet)"
                )
        except UnicodeDecodeError as exc:
            raise DatasetError(source, f"not UTF-8 text: {exc.reason}") from None
        except PermissionError as exc:
            raise DatasetError(source, f"unreadable file: {exc.strerror}") from None
        except OSError as exc:
            raise DatasetError(source, f"unreadable file: {exc}") from None
    elif isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, str)):
        source, rows, lines = "<rows>", [], None
        for index, row in enumerate(dataset):
            if not isinstance(row, Mapping):
                raise DatasetError(
                    source, f"expected a mapping, got {type(row).__name__}", row=index
                )
            rows.append(dict(row))
    else:
        raise DatasetError(repr(dataset)[:80], "dataset must be a file path or a list of row dicts")
    if not rows:
        raise DatasetError(source, "no rows (empty dataset)")
    return source, rows, lines


def pick_column(
    source: str, rows: list[dict], wanted: str | None, candidates: Sequence[str], *, required: bool
) -> str | None:
    """``wanted`` if given (must exist), else the first of ``candidates`` present in row 0."""
    columns = sorted({key for row in rows[:100] for key in row})
    if wanted is not None:
        if not any(wanted in row for row in rows[:100]):
            raise DatasetError(source, f"missing column; columns are {columns}", field=wanted)
        return wanted
    for name in candidates:
        if name in rows[0]:
            return name
    if required:
        raise DatasetError(
            source,
            f"missing column (looked for {list(candidates)}); columns are {columns}",
            field=candidates[0],
        )
    return None


def _fail(
    source: str, rows_lines: list[int] | None, index: int, field: str, message: str
) -> DatasetError:
    line = rows_lines[index] if rows_lines is not None else None
    return DatasetError(source, message, row=index, field=field, line=line)


def text_field(source: str, lines: list[int] | None, index: int, row: dict, field: str) -> str:
    """A non-empty string."""
    value = row.get(field)
    if value is None:
        raise _fail(source, lines, index, field, "missing or null")
    if not isinstance(value, str):
        raise _fail(source, lines, index, field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise _fail(source, lines, index, field, "empty text")
    return value


def answer_field(source: str, lines: list[int] | None, index: int, row: dict, field: str) -> str:
    """Text, or a finite int/float rendered as text (``42.0`` -> ``"42"``)."""
    value = row.get(field)
    if isinstance(value, bool) or value is None:
        raise _fail(source, lines, index, field, "missing or null" if value is None else "got bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(source, lines, index, field, f"not a finite number: {value}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise _fail(source, lines, index, field, "empty text")
        return value.strip()
    raise _fail(
        source, lines, index, field, f"expected text or a number, got {type(value).__name__}"
    )


def number_field(source: str, lines: list[int] | None, index: int, row: dict, field: str) -> float:
    """A number, or text containing one (``"Level 3"`` -> 3.0)."""
    value = row.get(field)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        found = _NUMBER_IN_TEXT.search(value)
        if found:
            return float(found.group())
    raise _fail(source, lines, index, field, f"expected a number, got {value!r:.40}")


def list_field(
    source: str, lines: list[int] | None, index: int, row: dict, field: str
) -> list[str]:
    """A non-empty list of non-empty strings (a dict's values in key order also work)."""
    value = row.get(field)
    if isinstance(value, Mapping):
        value = [value[key] for key in sorted(value)]
    if not isinstance(value, list) or not value:
        raise _fail(
            source, lines, index, field, f"expected a non-empty list, got {type(value).__name__}"
        )
    if not all(isinstance(item, (str, int, float)) and str(item).strip() for item in value):
        raise _fail(source, lines, index, field, "every option must be non-empty text")
    return [str(item) for item in value]
