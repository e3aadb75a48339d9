"""Bad datasets fail at construction, naming the file, the row and the field."""

# ruff: noqa: E501  (the error table reads best as one case per line)

from __future__ import annotations

import json

import gymnasium as gym
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from k15_envs import DatasetError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def materialize(tmp_path, name, content):
    """Create ``name`` under tmp_path: None = nothing, "<dir>" = a directory, str/bytes =
    raw content, list = JSON lines."""
    path = tmp_path / name
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        write_jsonl(path, content)
    return path


GOOD = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": 4}]
MATH, MC, CODE = "k15/Math-v0", "k15/MultipleChoice-v0", "k15/Code-v0"
CODE_ROW = {"prompt": "def f(): ...", "test": "def check(c): pass"}


@pytest.mark.parametrize(
    "env_id,name,content,row,field,message",
    [
        # the file does not exist
        (MATH, "missing.jsonl", None, None, None, "file not found"),
        # a directory is not a dataset
        (MATH, "dir.jsonl", "<dir>", None, None, "not a file"),
        # an empty file has no rows
        (MATH, "empty.jsonl", "", None, None, "no rows"),
        # an unsupported extension
        (MATH, "data.csv", "a,b\n", None, None, "unsupported file type"),
        # a malformed JSON line: row and line are named
        (MATH, "bad.jsonl", '{"problem": "x", "answer": "1"}\n{"problem": \n', 1, None, "invalid JSON"),
        # a JSON line that is not an object
        (MATH, "list.jsonl", "[1, 2]\n", 0, None, "expected a JSON object"),
        # a corrupt parquet file
        (MATH, "corrupt.parquet", b"not parquet", None, None, "unreadable parquet"),
        # no answer column at all
        (MATH, "noanswer.jsonl", [{"problem": "x"}], None, "answer", "missing column"),
        # no problem/question column
        (MATH, "noproblem.jsonl", [{"text": "x", "answer": "1"}], None, "problem", "missing column"),
        # a null answer in row 2
        (MATH, "null.jsonl", GOOD + [{"problem": "x", "answer": None}], 2, "answer", "missing or null"),
        # a list where an answer should be
        (MATH, "list_answer.jsonl", GOOD + [{"problem": "x", "answer": [1]}], 2, "answer", "got list"),
        # a number where the problem text should be
        (MATH, "int_problem.jsonl", [{"problem": 7, "answer": "1"}], 0, "problem", "expected text, got int"),
        # an empty problem
        (MATH, "blank.jsonl", [{"problem": "  ", "answer": "1"}], 0, "problem", "empty text"),
        # a GSM8K answer with nothing after ####
        (MATH, "gsm.jsonl", [{"problem": "x", "answer": "work ####"}], 0, "answer", "no final answer"),
        # a difficulty that is not a number
        (MATH, "level.jsonl", [{"problem": "x", "answer": "1", "level": "hard"}], 0, "level", "expected a number"),
        # multiple choice: answer letter beyond the options
        (MC, "letter.jsonl", [{"question": "q", "options": ["a", "b"], "answer": "E"}], 0, "answer", "neither an option letter"),
        # multiple choice: options is not a list
        (MC, "options.jsonl", [{"question": "q", "options": "a,b", "answer": "A"}], 0, "options", "non-empty list"),
        # code: an entry point that is not a Python name
        (CODE, "entry.jsonl", [{**CODE_ROW, "entry_point": "f()"}], 0, "entry_point", "not a Python name"),
        # code: the test column is missing
        (CODE, "notest.jsonl", [{"prompt": "def f(): ...", "entry_point": "f"}], None, "test", "missing column"),
    ],
)  # fmt: skip
def test_bad_dataset_fails_at_construction(tmp_path, env_id, name, content, row, field, message):
    path = materialize(tmp_path, name, content)
    with pytest.raises(DatasetError) as caught:
        gym.make(env_id, dataset=str(path))
    error = caught.value
    assert str(path) in str(error) and error.source == str(path)
    assert message in str(error)
    assert error.row == row
    if row is not None:
        assert f"row {row}" in str(error)
    if field is not None:
        assert error.field == field and repr(field) in str(error)


def test_unreadable_file(tmp_path, monkeypatch):
    import os

    import k15_envs.datasets as datasets

    path = write_jsonl(tmp_path / "secret.jsonl", GOOD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: simulate the permission error

        def deny(p):
            raise PermissionError(13, "Permission denied", str(p))

        monkeypatch.setattr(datasets, "_read_jsonl", deny)
    with pytest.raises(DatasetError, match=r"secret.jsonl: unreadable file"):
        gym.make("k15/Math-v0", dataset=str(path))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="latin1.jsonl"):
        gym.make("k15/Math-v0", dataset=str(path))


def test_parquet_with_renamed_columns(tmp_path):
    path = tmp_path / "gsm.parquet"
    table = pa.table(
        {"q": ["Tom has 3 apples and buys 4. How many?"], "a": ["3 + 4 = 7\n#### 7"], "lvl": [2]}
    )
    pq.write_table(table, path)
    env = gym.make(
        "k15/Math-v0",
        dataset=str(path),
        problem_column="q",
        answer_column="a",
        difficulty_column="lvl",
    )
    problem = env.unwrapped.problem(0)
    assert problem.id == "math/gsm/00000" and problem.difficulty == 2.0
    assert problem.metadata["gold"] == "7"
    env.close()


def test_mixed_answer_types_and_question_column(tmp_path):
    # pyarrow rejects a column that changes type; the line-by-line reader accepts it
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"question": "a?", "answer": 3}, {"question": "b?", "answer": "x+1"}],
    )
    env = gym.make("k15/Math-v0", dataset=str(path))
    assert [env.unwrapped.problem(i).answer for i in range(2)] == ["3", "x+1"]
    env.close()


def test_in_memory_rows_name_the_row():
    with pytest.raises(DatasetError, match=r"<rows>: row 1: field 'answer'"):
        gym.make("k15/Math-v0", dataset=[{"problem": "x", "answer": "1"}, {"problem": "y"}])
