"""Pass@1 intervals from a bootstrap over problems (samples of one problem are clustered)."""

import csv
import json

import numpy as np
import pytest

from rllib_k15.evaluation.evaluate import CSV_COLUMNS, append_results
from rllib_k15.evaluation.intervals import (
    paired_difference_interval,
    pass_at_1_interval,
    per_problem_rates,
)


def test_clustered_samples_give_the_width_of_the_problem_count_not_of_the_sample_count():
    # 40 problems, 8 samples each, every problem's samples agree (solved or not): the
    # information is 40 draws, not 320
    correct = [[i % 2 == 0] * 8 for i in range(40)]
    low, high = pass_at_1_interval(correct)
    assert low < 0.5 < high
    naive = 2 * 1.96 * np.sqrt(0.25 / 320)  # Wald width as if 320 independent samples
    by_problem = 2 * 1.96 * np.sqrt(0.25 / 40)
    assert high - low > 2 * naive
    assert high - low == pytest.approx(by_problem, rel=0.25)


def test_more_problems_narrow_the_interval_and_it_is_reproducible():
    rng = np.random.default_rng(0)
    small = [list(rng.random(4) < 0.3) for _ in range(20)]
    large = [list(rng.random(4) < 0.3) for _ in range(400)]
    w_small = np.subtract(*pass_at_1_interval(small)[::-1])
    w_large = np.subtract(*pass_at_1_interval(large)[::-1])
    assert w_large < w_small / 3
    assert pass_at_1_interval(small) == pass_at_1_interval(small)  # seeded


def test_degenerate_evaluations_get_the_point_and_bad_input_is_refused():
    assert pass_at_1_interval([[True, True], [True, True]]) == (1.0, 1.0)
    assert pass_at_1_interval([[False, True]]) == (0.5, 0.5)  # one problem: no spread
    with pytest.raises(ValueError, match="at least one sample"):
        per_problem_rates([[True], []])


def test_a_paired_difference_on_the_same_problems_excludes_zero_when_one_policy_is_better():
    rng = np.random.default_rng(1)
    base = rng.random((60, 4)) < 0.3
    better = base | (rng.random((60, 4)) < 0.4)  # solves all the base did, and more
    diff, low, high = paired_difference_interval(better.tolist(), base.tolist())
    assert 0 < low < diff < high
    with pytest.raises(ValueError, match="same problems"):
        paired_difference_interval(better.tolist(), base.tolist()[:-1])


def test_an_existing_csv_keeps_its_columns_when_rows_gain_new_ones(tmp_path):
    jsonl = tmp_path / "eval.jsonl"
    old_columns = [c for c in CSV_COLUMNS if not c.startswith("pass_at_1_")]
    with open(jsonl.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerow(old_columns)  # a file written by an older version
    row = {c: 1 for c in CSV_COLUMNS} | {"label": "x", "pass_at_1_low": 0.1}
    append_results(jsonl, [row])
    with open(jsonl.with_suffix(".csv"), newline="") as f:
        header, values = list(csv.reader(f))
    assert header == old_columns and len(values) == len(old_columns)
    assert json.loads(jsonl.read_text())["pass_at_1_low"] == 0.1  # the JSONL keeps everything
