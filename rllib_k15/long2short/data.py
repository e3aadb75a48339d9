"""Parquet files of the long2short data sets (SFT examples and DPO pairs).

Schemas (one row per example; all columns required when reading):

SFT data (``k15 long2short shortest-rs`` writes it, ``k15 sft`` reads it)
    problem_id: string, prompt: string (the user message, no chat template),
    response: string, response_tokens: int64, num_samples: int64, num_correct: int64

DPO pairs (``k15 long2short dpo-pairs`` writes it, ``k15 dpo`` reads it)
    problem_id: string, prompt: string, chosen: string, rejected: string,
    chosen_tokens: int64, rejected_tokens: int64, rejected_correct: bool

Raw samples (``--save-samples`` of the sampling commands; ``--from-samples`` reuses them, so
one sampling run can feed both shortest-rs and dpo-pairs)
    problem_id: string, prompt: string, sample_index: int64, response: string,
    token_length: int64, correct: bool

Run statistics (problems without a correct response, model, env, n …) are stored as JSON
under the schema metadata key ``k15.long2short`` and read back with
:func:`read_parquet_info`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from rllib_k15.long2short.selection import PreferencePair, ProblemSamples, Sample, SFTExample

__all__ = [
    "METADATA_KEY",
    "PAIR_SCHEMA",
    "SAMPLES_SCHEMA",
    "SFT_SCHEMA",
    "read_pairs_parquet",
    "read_parquet_info",
    "read_samples_parquet",
    "read_sft_parquet",
    "write_pairs_parquet",
    "write_samples_parquet",
    "write_sft_parquet",
]

METADATA_KEY = b"k15.long2short"

SFT_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("response_tokens", pa.int64()),
        ("num_samples", pa.int64()),
        ("num_correct", pa.int64()),
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_tokens", pa.int64()),
        ("rejected_tokens", pa.int64()),
        ("rejected_correct", pa.bool_()),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("prompt", pa.string()),
        ("sample_index", pa.int64()),
        ("response", pa.string()),
        ("token_length", pa.int64()),
        ("correct", pa.bool_()),
    ]
)


@dataclasses.dataclass(frozen=True)
class _SampleRow:
    problem_id: str
    prompt: str
    sample_index: int
    response: str
    token_length: int
    correct: bool


_Row = TypeVar("_Row", SFTExample, PreferencePair, _SampleRow)


def _write(
    rows: Sequence[Any], schema: pa.Schema, path: str | Path, info: Mapping[str, Any] | None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {METADATA_KEY: json.dumps(dict(info or {}), sort_keys=True).encode()}
    table = pa.Table.from_pylist(
        [dataclasses.asdict(r) for r in rows], schema=schema.with_metadata(meta)
    )
    pq.write_table(table, path)
    return path


def _read(path: str | Path, schema: pa.Schema, row_type: type[_Row], what: str) -> list[_Row]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    table = pq.read_table(path)
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(
            f"{path} is not a {what} file: missing column(s) {missing}; "
            f"found {table.column_names}; expected {schema.names}"
        )
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{path}: columns do not match the {what} schema {schema}: {err}") from err
    return [row_type(**row) for row in table.to_pylist()]


def write_sft_parquet(
    examples: Sequence[SFTExample], path: str | Path, info: Mapping[str, Any] | None = None
) -> Path:
    """Write SFT examples (and optional JSON-able run info) to ``path``."""
    return _write(examples, SFT_SCHEMA, path, info)


def read_sft_parquet(path: str | Path) -> list[SFTExample]:
    """Read SFT examples; a clear ``ValueError`` names any missing column."""
    return _read(path, SFT_SCHEMA, SFTExample, "SFT data")


def write_pairs_parquet(
    pairs: Sequence[PreferencePair], path: str | Path, info: Mapping[str, Any] | None = None
) -> Path:
    """Write DPO preference pairs (and optional JSON-able run info) to ``path``."""
    return _write(pairs, PAIR_SCHEMA, path, info)


def read_pairs_parquet(path: str | Path) -> list[PreferencePair]:
    """Read DPO preference pairs; a clear ``ValueError`` names any missing column."""
    return _read(path, PAIR_SCHEMA, PreferencePair, "DPO pairs")


def read_parquet_info(path: str | Path) -> dict[str, Any]:
    """The run info stored with :func:`write_sft_parquet` / :func:`write_pairs_parquet`."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_samples_parquet(
    groups: Sequence[ProblemSamples], path: str | Path, info: Mapping[str, Any] | None = None
) -> Path:
    """Write every sampled response (one row per sample) to ``path``."""
    rows = [
        _SampleRow(g.problem_id, g.prompt, i, s.response, int(s.token_length), bool(s.correct))
        for g in groups
        for i, s in enumerate(Sample(*s) for s in g.samples)
    ]
    return _write(rows, SAMPLES_SCHEMA, path, info)


def read_samples_parquet(path: str | Path) -> list[ProblemSamples]:
    """Read raw samples back, grouped per problem (first-seen order, by ``sample_index``)."""
    grouped: dict[str, list[_SampleRow]] = {}
    for row in _read(path, SAMPLES_SCHEMA, _SampleRow, "samples"):
        grouped.setdefault(row.problem_id, []).append(row)
    out = []
    for problem_id, rows in grouped.items():
        rows.sort(key=lambda r: r.sample_index)
        samples = [Sample(r.response, r.token_length, r.correct) for r in rows]
        out.append(ProblemSamples(problem_id, rows[0].prompt, samples))
    return out
