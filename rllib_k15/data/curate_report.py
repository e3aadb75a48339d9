"""The files of ``k15 curate``: the inputs it reads, the curated rows, the report, the cache.

- inputs (:func:`load_rows`): ``.jsonl`` / ``.parquet`` files read with
  ``k15_envs.datasets.read_rows``; the problem text is ``problem`` | ``question`` | ``prompt``,
  optional ``answer``, an id (``id`` | ``unique_id`` | ``task_id``, else ``<stem>#<row>``) and a
  domain (``domain`` | ``subject`` | ``type`` | ``category``, else the file stem). An empty
  file or a missing/empty problem text raises ``DatasetError`` naming file, row and field.
- the curated set (:func:`write_rows`): the kept rows unchanged, plus ``source`` (the input
  file) and, when the difficulty step ran, ``difficulty`` = 1 − pass rate; ``.jsonl`` (one
  JSON object a line) or ``.parquet`` (pyarrow; the columns are the union over the rows).
- ``curate_report.json`` (:func:`build_report`): the inputs and settings, then every step in
  order with ``status`` (ran / off / skipped), ``in``, ``dropped``, ``out``, a ``note`` and
  ``dropped_rows`` (id, source, row, reason and the step's detail, e.g. ``duplicate_of``,
  ``eval_id``, ``rules``, ``correct_attempts``); then the kept set's domains and difficulty.
- ``curate_report.md``: the same as tables; ``curate_report.png``: the kept set's
  difficulty histogram and domain bar chart (matplotlib).
- ``curate_cache.jsonl`` (:class:`ResultCache`): the model steps' per-row results, appended
  per batch, so a rerun after a kill resamples only the unfinished rows.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from k15_envs.datasets import DatasetError, pick_column, read_rows, text_field

from rllib_k15.data.curate import CurateResult, CurateRow, StepResult

__all__ = [
    "ANSWER_COLUMNS",
    "DOMAIN_COLUMNS",
    "ID_COLUMNS",
    "TEXT_COLUMNS",
    "OUTPUT_SUFFIXES",
    "REPORT_NAMES",
    "ResultCache",
    "build_report",
    "curated_rows",
    "load_rows",
    "write_report",
    "write_rows",
]

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
REPORT_NAMES = ("curate_report.json", "curate_report.md", "curate_report.png")
_BINS = 10  # difficulty histogram bins over [0, 1]
TEXT_COLUMNS = ("problem", "question", "prompt")  # Math-v0, MultipleChoice-v0, Code-v0
ANSWER_COLUMNS = ("answer",)
ID_COLUMNS = ("id", "unique_id", "task_id")
DOMAIN_COLUMNS = ("domain", "subject", "type", "category")


# ---------------------------------------------------------------------------- reading


def _column(source: str, rows: list[dict], lines, wanted, candidates, *, required: bool):
    """:func:`pick_column`, but a required column missing from the first row names row 0."""
    try:
        return pick_column(source, rows, wanted, candidates, required=required)
    except DatasetError as err:
        if wanted is not None:
            raise
        raise DatasetError(
            source,
            f"missing (looked for {list(candidates)}); the row has {sorted(rows[0])}",
            row=0,
            field=candidates[0],
            line=lines[0] if lines else None,
        ) from err


def load_rows(
    path: str | Path,
    *,
    text_column: str | None = None,
    answer_column: str | None = None,
    id_column: str | None = None,
) -> list[CurateRow]:
    """The rows of one ``.jsonl`` / ``.parquet`` file (``k15_envs.datasets.read_rows``).

    Raises ``DatasetError`` naming the file, row and field for an empty file, a missing or
    empty problem text. The answer, id and domain columns are optional here (the env checks
    its own schema when it is built on the file).
    """
    source, rows, lines = read_rows(str(path))
    text_col = _column(source, rows, lines, text_column, TEXT_COLUMNS, required=True)
    answer_col = pick_column(source, rows, answer_column, ANSWER_COLUMNS, required=False)
    id_col = pick_column(source, rows, id_column, ID_COLUMNS, required=False)
    domain_col = pick_column(source, rows, None, DOMAIN_COLUMNS, required=False)
    stem = Path(source).stem
    out = []
    for i, row in enumerate(rows):
        text = text_field(source, lines, i, row, text_col)
        answer = row.get(answer_col) if answer_col else None
        row_id = row.get(id_col) if id_col else None
        domain = row.get(domain_col) if domain_col else None
        out.append(
            CurateRow(
                source=str(path),
                index=i,
                id=str(row_id) if row_id not in (None, "") else f"{stem}#{i}",
                text=text,
                answer=None if answer is None else str(answer),
                domain=str(domain) if domain not in (None, "") else stem,
                data=row,
            )
        )
    return out


# ---------------------------------------------------------------------------- writing


def write_rows(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` in the format of ``path``'s suffix (:data:`OUTPUT_SUFFIXES`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(dict.fromkeys(key for row in rows for key in row))
        try:
            table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(
                f"{path}: rows do not fit one parquet schema ({err}); write .jsonl instead"
            ) from None
        pq.write_table(table, str(path))
    else:
        raise ValueError(f"{path}: unknown suffix {suffix!r}, expected one of {OUTPUT_SUFFIXES}")


def curated_rows(result: CurateResult) -> list[dict[str, Any]]:
    """The kept rows as written: each row unchanged plus ``source``, and ``difficulty`` =
    1 − pass rate when the difficulty step ran (an input ``difficulty`` is then replaced)."""
    rows = [{**row.data, "source": row.source} for row in result.kept]
    if result.pass_rates is not None:
        for row, rate in zip(rows, result.pass_rates, strict=True):
            row["difficulty"] = 1.0 - float(rate)
    return rows


def _difficulties(rows: Sequence[dict[str, Any]]) -> list[float]:
    """The finite numeric ``difficulty`` values of ``rows``."""
    values = [row.get("difficulty") for row in rows]
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def _histogram(values: Sequence[float]) -> dict[str, list[float] | list[int]]:
    """Counts of ``values`` in :data:`_BINS` equal bins over [0, 1] (1.0 in the last)."""
    counts = [0] * _BINS
    for v in values:
        counts[min(max(int(v * _BINS), 0), _BINS - 1)] += 1
    return {"edges": [i / _BINS for i in range(_BINS + 1)], "counts": counts}


def _step_record(step: StepResult) -> dict[str, Any]:
    return {
        "name": step.name,
        "title": step.title,
        "status": step.status,
        "in": step.n_in,
        "dropped": len(step.drops),
        "out": len(step.kept),
        "note": step.note,
        **step.extra,
        "dropped_rows": [drop.as_record() for drop in step.drops],
    }


def build_report(
    *,
    inputs: dict[str, int],
    eval_sets: dict[str, int],
    settings: dict[str, Any],
    steps: Sequence[StepResult],
    kept_rows: Sequence[dict[str, Any]],
    domains: Sequence[str],
    difficulty_ran: bool,
) -> dict[str, Any]:
    """The report as JSON-ready data (the module docstring lists its fields)."""
    values = _difficulties(kept_rows)
    difficulty = None
    if values:
        difficulty = {
            "source": "1 - pass rate, this run" if difficulty_ran else "the input column",
            "mean": sum(values) / len(values),
            "histogram": _histogram(values),
        }
    return {
        "inputs": inputs,
        "eval_sets": eval_sets,
        "settings": settings,
        "steps": [_step_record(step) for step in steps],
        "kept": len(kept_rows),
        "domains": dict(Counter(domains).most_common()),
        "difficulty": difficulty,
    }


def _markdown(report: dict[str, Any]) -> str:
    """``curate_report.md``: the steps table, the format rules, the domains."""
    total = sum(report["inputs"].values())
    lines = [
        "# k15 curate report",
        "",
        f"{total} input rows from {len(report['inputs'])} file(s) -> **{report['kept']} kept**.",
        "",
        "| step | status | in | dropped | out | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for s in report["steps"]:
        note = s["note"].replace("|", "\\|")
        lines.append(
            f"| {s['title']} | {s['status']} | {s['in']} | {s['dropped']} | {s['out']} | {note} |"
        )
    for s in report["steps"]:
        if s.get("rules"):
            lines += [
                "",
                "## Format rules",
                "",
                "| rule | field | rows matched |",
                "|---|---|---:|",
            ]
            lines += [f"| {n} | {r['field']} | {r['matched']} |" for n, r in s["rules"].items()]
    lines += ["", "## Domains of the kept set", "", "| domain | rows |", "|---|---:|"]
    lines += [f"| {d} | {n} |" for d, n in report["domains"].items()]
    if report["difficulty"]:
        d = report["difficulty"]
        lines += ["", f"Mean difficulty of the kept set: {d['mean']:.3f} ({d['source']})."]
    lines += ["", "Dropped rows with their reasons: `curate_report.json`."]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    """``curate_report.png``: difficulty histogram (left), domain bar chart (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    d = report["difficulty"]
    if d:
        edges, counts = d["histogram"]["edges"], d["histogram"]["counts"]
        left.bar(edges[:-1], counts, width=1 / _BINS, align="edge", edgecolor="black")
        left.set_xlim(0, 1)
        left.set_xlabel("difficulty = 1 − pass rate" if "pass" in d["source"] else "difficulty")
        left.set_ylabel("problems")
        left.set_title(f"difficulty of the kept set (mean {d['mean']:.2f})")
    else:
        left.text(0.5, 0.5, "no difficulty\n(step off or skipped)", ha="center", va="center")
        left.set_axis_off()
    domains = list(report["domains"].items())[:30]
    if domains:
        right.bar(range(len(domains)), [n for _, n in domains], color="tab:green")
        right.set_xticks(
            range(len(domains)), [name for name, _ in domains], rotation=45, ha="right"
        )
        right.set_ylabel("problems")
    right.set_title(f"domains of the kept set ({report['kept']} problems)")
    for ax in (left, right):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report_dir: str | Path, report: dict[str, Any]) -> list[Path]:
    """Write :data:`REPORT_NAMES` into ``report_dir``; returns their paths."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = [report_dir / name for name in REPORT_NAMES]
    paths[0].write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")
    paths[1].write_text(_markdown(report), encoding="utf-8")
    _plot(report, paths[2])
    return paths


class ResultCache:
    """Per-row results of the model steps, one JSON line ``{"key", "value"}`` each, appended
    (and flushed) per batch; ``path=None`` keeps them in memory only. A line cut by a kill is
    skipped on reading (that row is simply recomputed)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._values: dict[str, Any] = {}
        self._needs_newline = False
        if self.path is not None and self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            self._needs_newline = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self._values[str(record["key"])] = record["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store ``items`` and append them to the file (durable before the next batch)."""
        self._values.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            if self._needs_newline:
                fh.write("\n")
                self._needs_newline = False
            fh.writelines(json.dumps({"key": k, "value": v}) + "\n" for k, v in items.items())
            fh.flush()
            os.fsync(fh.fileno())
