"""Difficulty files: formats, id matching, and errors that name the file and row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rllib_k15.sampling import DifficultyFileError, load_difficulty_file, write_difficulty_file

PASS_RATES = [0.0, 0.125, 1.0, 0.5]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_written_files_load_back_as_one_minus_pass_rate(tmp_path, suffix: str) -> None:
    path = tmp_path / f"difficulty{suffix}"
    write_difficulty_file(path, PASS_RATES, problem_ids=["a", "b", "c", "d"])
    np.testing.assert_array_equal(load_difficulty_file(path, 4), [1.0, 0.875, 0.0, 0.5])


@pytest.mark.parametrize(
    "name,text",
    [
        # JSON list of records, in any order, keyed by index
        ("d.json", json.dumps([{"index": 1, "pass_rate": 0.25}, {"index": 0, "pass_rate": 1}])),
        # JSON object with metadata and a "problems" list, integer problem_id as index
        (
            "d.json",
            json.dumps(
                {
                    "n_samples": 8,
                    "problems": [
                        {"problem_id": 0, "pass_rate": 1.0},
                        {"problem_id": "1", "pass_rate": 0.25},
                    ],
                }
            ),
        ),
        # JSONL with a blank line and an ignored extra field
        ("d.jsonl", '{"index": 0, "pass_rate": 1.0}\n\n{"index": 1, "pass_rate": 0.25, "n": 8}\n'),
        # CSV keyed by problem_id, extra column ignored
        ("d.csv", "problem_id,pass_rate,n_samples\n0,1.0,8\n1,0.25,8\n"),
    ],
)
def test_accepted_layouts(tmp_path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    np.testing.assert_array_equal(load_difficulty_file(path, 2), [0.0, 0.75])


def test_string_ids_are_matched_against_problem_ids(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("problem_id,pass_rate\ngsm8k-7,0.0\ngsm8k-3,0.75\n")
    got = load_difficulty_file(path, 2, problem_ids=["gsm8k-3", "gsm8k-7"])
    np.testing.assert_array_equal(got, [0.25, 1.0])


def test_missing_problems_need_a_default(tmp_path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"index": 2, "pass_rate": 0.5}]))
    with pytest.raises(
        DifficultyFileError, match=r"no pass_rate for 2 of 3 problems \(indices 0, 1\)"
    ):
        load_difficulty_file(path, 3)
    np.testing.assert_array_equal(
        load_difficulty_file(path, 3, default_pass_rate=0.0), [1.0, 1.0, 0.5]
    )


@pytest.mark.parametrize(
    "name,text,where,problem",
    [
        ("d.csv", "index,pass_rate\n0,0.5\n1,abc\n", "line 3", "pass_rate 'abc' is not a number"),
        (
            "d.csv",
            "index,pass_rate\n0,1.5\n",
            "line 2",
            r"pass_rate '1.5' must be a number in \[0, 1\]",
        ),
        ("d.csv", "index,pass_rate\n0,\n", "line 2", 'missing "pass_rate"'),
        ("d.csv", "pass_rate\n0.5\n", "line 2", 'needs an "index" or "problem_id"'),
        ("d.csv", "index,pass_rate\n0,0.5\n0,0.5\n", "line 3", "problem 0 already given at line 2"),
        ("d.csv", "index,pass_rate\n7,0.5\n", "line 2", r"index 7 not in \[0, 2\)"),
        (
            "d.csv",
            "problem_id,pass_rate\nabc,0.5\n",
            "line 2",
            "problem_id 'abc' is not an integer",
        ),
        (
            "d.json",
            '[{"index": 0, "pass_rate": 0.5}, {"index": 1, "pass_rate": -0.1}]',
            "record 1",
            "must be a number in",
        ),
        ("d.json", '[{"index": 0, "pass_rate": true}]', "record 0", "must be a number in"),
        ("d.json", "[3]", "record 0", "expected an object, got int"),
        ("d.jsonl", '{"index": 0, "pass_rate": 0.5}\n{oops\n', "line 2", "invalid JSON"),
    ],
)
def test_errors_name_the_file_and_row(
    tmp_path, name: str, text: str, where: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DifficultyFileError, match=problem) as info:
        load_difficulty_file(path, 2)
    assert str(info.value).startswith(f"{path}: {where}: ")


def test_unknown_problem_id_and_whole_file_errors(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("problem_id,pass_rate\nx,0.5\n")
    with pytest.raises(DifficultyFileError, match="line 2: unknown problem_id 'x'"):
        load_difficulty_file(path, 1, problem_ids=["y"])
    for name, text, problem in [
        ("d.txt", "", "unknown suffix '.txt'"),
        ("d.json", "{}", 'needs a "problems" list'),
        ("d.json", "{nope", "invalid JSON"),
        ("d.csv", "", "empty CSV"),
    ]:
        bad = tmp_path / name
        bad.write_text(text)
        with pytest.raises(DifficultyFileError, match=problem) as info:
            load_difficulty_file(bad, 1)
        assert str(bad) in str(info.value)
    with pytest.raises(DifficultyFileError, match="cannot read"):
        load_difficulty_file(tmp_path / "absent.json", 1)
