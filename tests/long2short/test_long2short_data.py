"""Parquet round trips of the SFT and DPO-pair files, and clear schema errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rllib_k15.long2short.data import (
    read_pairs_parquet,
    read_parquet_info,
    read_sft_parquet,
    write_pairs_parquet,
    write_sft_parquet,
)
from rllib_k15.long2short.selection import PreferencePair, SFTExample

SFT_ROWS = [
    SFTExample("p1", "What is 2+2?", "4", 2, 8, 3),
    SFTExample("p2", "Ünïcode ✓", "The answer is \\boxed{7}.", 11, 8, 1),
]
PAIRS = [
    PreferencePair("p1", "2+2?", "4", "It is 5", 2, 4, False),
    PreferencePair("p1", "2+2?", "4", "Let me think... 4", 2, 7, True),
]


def test_sft_round_trip_with_info(tmp_path):
    path = write_sft_parquet(
        SFT_ROWS,
        tmp_path / "sub" / "sft.parquet",
        info={"problems_without_correct": ["p9"], "samples_per_problem": 8},
    )
    assert read_sft_parquet(path) == SFT_ROWS
    assert read_parquet_info(path) == {"problems_without_correct": ["p9"], "samples_per_problem": 8}


def test_pairs_round_trip(tmp_path):
    path = write_pairs_parquet(PAIRS, tmp_path / "pairs.parquet")
    assert read_pairs_parquet(path) == PAIRS
    assert read_parquet_info(path) == {}


def test_empty_files_round_trip(tmp_path):
    assert read_sft_parquet(write_sft_parquet([], tmp_path / "e.parquet")) == []


def test_missing_column_is_named(tmp_path):
    table = pa.table({"problem_id": ["p"], "prompt": ["q"], "answer": ["a"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['response', 'response_tokens'"):
        read_sft_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"not a DPO pairs file: missing column\(s\) \['chosen'"):
        read_pairs_parquet(tmp_path / "bad.parquet")


def test_sft_file_is_not_a_pairs_file(tmp_path):
    path = write_sft_parquet(SFT_ROWS, tmp_path / "sft.parquet")
    with pytest.raises(ValueError, match="chosen"):
        read_pairs_parquet(path)


def test_wrong_column_type_is_reported(tmp_path):
    rows = {name: [getattr(SFT_ROWS[0], name)] for name in SFTExample.__dataclass_fields__}
    rows["response_tokens"] = ["many"]
    pq.write_table(pa.table(rows), tmp_path / "typed.parquet")
    with pytest.raises(ValueError, match="schema"):
        read_sft_parquet(tmp_path / "typed.parquet")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="SFT data file not found"):
        read_sft_parquet(tmp_path / "nope.parquet")
