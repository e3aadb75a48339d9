"""Result files written by evaluations and benchmarks carry no machine's absolute paths."""

import dataclasses

from rllib_k15.evaluation.evaluate import EvalResult, make_row
from rllib_k15.runs.run_files import portable_path


def test_paths_under_the_working_directory_become_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "a" / "model") == "runs/a/model"
    assert portable_path(str(tmp_path)) == "."
    assert portable_path("runs/rel") == "runs/rel"  # relative stays as given


def test_paths_under_home_use_a_tilde_and_others_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert portable_path(tmp_path / "home" / ".cache" / "m") == "~/.cache/m"
    assert portable_path(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")


def test_eval_rows_write_the_model_path_portably(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zeros = {f.name: ({} if f.name == "reasons" else 0) for f in dataclasses.fields(EvalResult)}
    row = make_row(EvalResult(**zeros), model=str(tmp_path / "runs" / "m"), label="x", seed=0)
    assert row["model"] == "runs/m" and row["label"] == "x" and row["seed"] == 0
    assert not any(isinstance(v, str) and v.startswith(str(tmp_path)) for v in row.values())
