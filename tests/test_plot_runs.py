"""`k15 plot runs`: training runs side by side (ablation figures and tables)."""

import json
from pathlib import Path

import pytest

from rllib_k15.commands.k15 import main
from rllib_k15.evaluation.plots import comparison_table, read_metrics_rows, series


def _write_run(path: Path, evals: dict[int, float], tokens: list[float]) -> str:
    rows = [{"iteration": 0, "eval_pass@1": evals.get(0)}]
    for it, tok in enumerate(tokens, start=1):
        rows.append({"iteration": it, "tokens": tok, "eval_pass@1": evals.get(it)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_series_averages_seeds_only_where_all_have_values(tmp_path: Path) -> None:
    a = read_metrics_rows(_write_run(tmp_path / "a.jsonl", {0: 0.2, 2: 0.6}, [50, 40]))
    b = read_metrics_rows(_write_run(tmp_path / "b.jsonl", {0: 0.4, 2: 0.8, 1: 0.5}, [30, 20]))
    x, mean, std = series([a, b], "eval_pass@1")
    assert x == [0, 2]  # iteration 1 was evaluated in one seed only
    assert mean == pytest.approx([0.3, 0.7]) and std == pytest.approx([0.1, 0.1])
    assert series([a, b], "tokens") == ([1, 2], [40.0, 30.0], [10.0, 10.0])


def test_table_and_png_from_the_cli(tmp_path: Path, capsys) -> None:
    opmd = _write_run(tmp_path / "opmd.jsonl", {0: 0.25, 2: 0.75}, [60, 12])
    grpo1 = _write_run(tmp_path / "g1.jsonl", {0: 0.25, 2: 0.5}, [60, 40])
    grpo2 = _write_run(tmp_path / "g2.jsonl", {0: 0.25, 2: 0.7}, [60, 30])
    out, table = tmp_path / "cmp.png", tmp_path / "table.md"
    argv = ["plot", "runs", f"OPMD={opmd}", f"GRPO={grpo1}", f"GRPO={grpo2}",
            "--out", str(out), "--table", str(table), "--mark-iteration", "1"]  # fmt: skip
    assert main(argv) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    lines = table.read_text().splitlines()
    assert lines[0] == "| arm | seeds | Pass@1 it 0 | Pass@1 it 2 | tokens (last it) |"
    assert lines[2] == "| OPMD | 1 | 0.25 | 0.75 | 12.0 |"
    # 2 seeds: mean [95 % t-interval], t(0.975, 1) = 12.706, s/√n = 0.1 and 5.0
    assert lines[3] == "| GRPO | 2 | 0.25 [0.25, 0.25] | 0.60 [-0.67, 1.87] | 35.0 [-28.5, 98.5] |"
    assert "| OPMD | 1 |" in capsys.readouterr().out
    assert main([*argv, "--until", "1"]) == 0  # equal budgets: iteration 2 dropped
    short = table.read_text()
    assert "Pass@1 it 2" not in short and "| OPMD | 1 | 0.25 | 60.0 |" in short


def test_bad_run_arguments_name_the_problem(tmp_path: Path, capsys) -> None:
    assert main(["plot", "runs", "no-label.jsonl", "--out", str(tmp_path / "x.png")]) == 2
    assert "must be LABEL=PATH" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iteration": 1}\n{oops\n{"iteration": 2}\n')  # a torn LAST line is skipped
    assert main(["plot", "runs", f"A={bad}", "--out", str(tmp_path / "x.png")]) == 2
    assert f"{bad}:2: not a JSON row" in capsys.readouterr().out


def test_table_of_nothing_evaluated() -> None:
    assert comparison_table({"A": [[{"iteration": 1, "tokens": 5.0}]]}).splitlines()[2] == (
        "| A | 1 | 5.0 |"
    )


def test_arms_with_the_same_seeds_get_their_paired_difference(tmp_path: Path) -> None:
    runs = {
        "OPMD": [{0: 0.2, 2: 0.6}, {0: 0.3, 2: 0.7}, {0: 0.2, 2: 0.65}],
        "ReST": [{0: 0.2, 2: 0.4}, {0: 0.3, 2: 0.5}, {0: 0.2, 2: 0.5}],
    }
    arms = {
        label: [read_metrics_rows(_write_run(tmp_path / f"{label}{s}.jsonl", ev, [10, 9]))
                for s, ev in enumerate(evals)]
        for label, evals in runs.items()
    }  # fmt: skip
    lines = comparison_table(arms).splitlines()
    assert lines[-3] == "| arm − OPMD (paired by seed) | Pass@1 it 2 |"
    # per-seed differences −0.2, −0.2, −0.15: mean −0.183, s/√3 = 0.0167, t(0.975, 2) = 4.303
    assert lines[-1] == "| ReST | -0.18 [-0.26, -0.11] |"
    unpaired = {"OPMD": arms["OPMD"], "ReST": arms["ReST"][:2]}
    assert "paired" not in comparison_table(unpaired)  # different seed counts: no pairing


def test_pass_vs_length_plot_joins_each_arms_evaluations(tmp_path: Path) -> None:
    from rllib_k15.evaluation.plots import plot_pass_vs_length

    def run(name: str, evals: dict[int, tuple[float, float]]) -> list[dict]:
        rows = [
            {"iteration": it, "eval_pass@1": p, "eval_tokens": t} for it, (p, t) in evals.items()
        ]
        rows.append({"iteration": 99, "tokens": 5.0})  # a row without an evaluation
        return read_metrics_rows(_jsonl(tmp_path / name, rows))

    arms = {
        "64 tokens": [run("a.jsonl", {0: (0.1, 60.0), 3: (0.3, 30.0)})],
        "256 tokens": [run("b.jsonl", {0: (0.1, 90.0), 3: (0.2, 70.0)})],
    }
    out = plot_pass_vs_length(arms, tmp_path / "vs_length.png", title="budgets")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    no_tokens = {"x": [read_metrics_rows(_write_run(tmp_path / "c.jsonl", {0: 0.2}, [40]))]}
    with pytest.raises(ValueError, match="held-out Pass@1 and tokens"):
        plot_pass_vs_length(no_tokens, tmp_path / "none.png")


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
