"""Every reader of metrics.jsonl treats a half-written last line the same way: skipped, one
warning; a bad line before the last one is an error naming the file and line."""

import json
import logging
from pathlib import Path

import pytest
from support.paths import load_experiment

from rllib_k15.evaluation.plots import read_metrics_rows
from rllib_k15.runs.run_files import read_metrics

finished_iterations = load_experiment("ablation").finished_iterations


def _write(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_a_torn_last_line_is_skipped_by_every_reader_with_one_warning(tmp_path, caplog):
    rows = [{"iteration": i, "eval_pass@1": 0.1 * i} for i in range(3)]
    path = _write(tmp_path / "metrics.jsonl", rows, tail='{"iteration": 3, "eval_pa')
    with caplog.at_level(logging.WARNING, logger="rllib_k15.runs.run_files"):
        assert read_metrics(path) == rows
        assert read_metrics_rows(path) == rows
        assert finished_iterations(path) == 2  # the ablation runner resumes from here
    warnings = [r for r in caplog.records if "half-written last line" in r.getMessage()]
    assert len(warnings) == 1 and f"{path}:4" in warnings[0].getMessage()


def test_a_bad_line_before_the_last_is_corruption_and_names_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\nnot json\n{"iteration": 2}\n')
    for reader in (read_metrics, read_metrics_rows, finished_iterations):
        with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON row"):
            reader(path)


def test_missing_and_empty_files(tmp_path):
    assert read_metrics(tmp_path / "none.jsonl") == []
    assert finished_iterations(tmp_path / "none.jsonl") == 0
    with pytest.raises(ValueError, match="no such metrics file"):
        read_metrics_rows(tmp_path / "none.jsonl")
    with pytest.raises(ValueError, match="no metrics rows"):
        read_metrics_rows(_write(tmp_path / "empty.jsonl", []))
