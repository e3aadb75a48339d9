"""Token-efficiency evaluation: metrics, results files, the plot, and ``k15 eval`` end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams
from rllib_k15.evaluation.evaluate import (
    CSV_COLUMNS,
    EvalResult,
    append_results,
    evaluate,
    make_row,
    pass_at_1,
    read_results,
    sample_and_grade,
    summarize_runs,
    token_percentiles,
)
from rllib_k15.evaluation.intervals import seed_interval
from rllib_k15.evaluation.plots import plot_token_efficiency, token_efficiency_table

gym = pytest.importorskip("gymnasium")
k15_envs = pytest.importorskip("k15_envs")


@pytest.mark.parametrize(
    "correct,expected",
    [
        ([[True, True], [False, False]], 0.5),  # one solved, one not
        ([[True, False, False, False]], 0.25),  # 1 of 4 samples
        ([[True, False], [True, True, True, False]], (0.5 + 0.75) / 2),  # per-problem mean
    ],
)
def test_pass_at_1(correct: list[list[bool]], expected: float) -> None:
    assert pass_at_1(correct) == pytest.approx(expected)


def test_pass_at_1_rejects_empty() -> None:
    with pytest.raises(ValueError):
        pass_at_1([[True], []])


def test_token_percentiles_match_numpy() -> None:
    lengths = [3, 17, 4, 99, 12, 12, 50]
    assert token_percentiles(lengths, (50, 90, 99)) == pytest.approx(
        np.percentile(lengths, [50, 90, 99]).tolist()
    )


class ScriptedEngine(RolloutEngine):
    """Answers problem i correctly on sample j iff (i + j) % 2 == 0; 3-5 tokens each.

    Sample 3 of every problem runs into the token cap (finish "length") with a correct
    answer: truncated responses must count as wrong.
    """

    tokenizer = None

    def __init__(self, env) -> None:
        self.env = env
        self.reseeds: list[int] = []

    def encode_prompt(self, user_message: str) -> list[int]:
        index = next(i for i in range(len(self.env)) if self.env.problem(i).prompt == user_message)
        return [index]

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams):
        out = []
        for (index,) in prompt_token_ids:
            answer = self.env.problem(index).answer
            group = []
            for j in range(params.n):
                wrong = str(int(answer) + 1)
                text = f"\\boxed{{{answer if (index + j) % 2 == 0 else wrong}}}"
                length = 3 + j % 3
                reason = "length" if j == 3 else "stop"
                group.append(Completion([1] * length, [-0.5] * length, text, reason))
            out.append(group)
        return out

    def reseed(self, seed: int) -> None:
        self.reseeds.append(seed)

    def load_weights(self, state_dict) -> None:  # pragma: no cover - not used
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def arithmetic_env():
    env = gym.make("k15/Arithmetic-v0", difficulty=1, size=20, seed=0)
    yield env
    env.close()


def test_evaluate_scores_with_the_env_verifier(arithmetic_env) -> None:
    engine = ScriptedEngine(arithmetic_env.unwrapped)
    result = evaluate(
        engine, arithmetic_env, num_problems=6, samples=4, seed=3, batch_problems=4, progress=False
    )
    assert engine.reseeds == [3]
    # samples 0 and 2 are correct for even problems, sample 1 for odd ones; sample 3 would
    # be correct for odd problems but is truncated -> 6 problems: (2 + 1 + 2 + 1 + 2 + 1) / 24
    assert result.pass_at_1 == pytest.approx(9 / 24)
    assert result.mean_reward == pytest.approx(9 / 24)
    assert result.truncated_fraction == pytest.approx(0.25)
    assert result.reasons == {"correct": 9, "truncated": 6, "wrong": 9}
    assert result.mean_tokens == pytest.approx((3 + 4 + 5 + 3) / 4)
    assert result.generated_tokens == 6 * 15 and result.num_problems == 6
    assert result.tokens_per_second > 0


def test_sample_and_grade_keeps_every_sample_in_problem_order(arithmetic_env) -> None:
    engine = ScriptedEngine(arithmetic_env.unwrapped)
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8)
    out = sample_and_grade(engine, arithmetic_env.unwrapped, params, num_problems=3)
    # problem i, sample j correct iff (i + j) even, except the truncated sample 3
    assert out["correct"] == [
        [True, False, True, False], [False, True, False, False], [True, False, True, False]
    ]  # fmt: skip
    assert out["tokens"] == [[3, 4, 5, 3]] * 3
    assert out["reasons"] == {"correct": 5, "wrong": 4, "truncated": 3}


def test_results_files_roundtrip_and_summary(tmp_path: Path) -> None:
    def result(p1: float, tokens: float) -> EvalResult:
        return EvalResult(4, 2, p1, p1, tokens, tokens, tokens, tokens, 0.0, {"correct": 1},
                          8, 1.0, 8.0, 1.5)  # fmt: skip

    out = tmp_path / "res" / "eval.jsonl"
    task = {"env": "k15/Toy-v0", "env_kwargs": {"a": 1, "size": 4}}
    short_result = dataclasses.replace(result(0.6, 20), pass_at_1_low=0.4, pass_at_1_high=0.8)
    append_results(out, [make_row(result(0.5, 40), label="long", run=0, **task)])
    append_results(out, [make_row(result(0.7, 60), label="long", run=1, **task),
                         make_row(short_result, label="short", run=0, **task)])  # fmt: skip
    rows = read_results([out])
    assert [r["label"] for r in rows] == ["long", "long", "short"]
    assert list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    with (tmp_path / "res" / "eval.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and json.loads(table[0]["env_kwargs"]) == {"a": 1, "size": 4}
    long, short = summarize_runs(rows)
    assert (long.label, long.runs, short.runs) == ("long", 2, 1)
    assert long.pass_at_1_mean == pytest.approx(0.6)
    assert long.pass_at_1_std == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert long.mean_tokens_mean == pytest.approx(50) and short.pass_at_1_std == 0.0
    as_list = tmp_path / "list.json"  # a JSON list of rows reads the same
    as_list.write_text(json.dumps(rows))
    assert read_results([as_list]) == rows

    t_low, t_high = seed_interval([0.5, 0.7])  # rows without intervals: t over runs, clipped
    t_low, t_high = max(0.0, t_low), min(1.0, t_high)
    assert (long.pass_at_1_low, long.pass_at_1_high) == pytest.approx((t_low, t_high))
    assert (short.pass_at_1_low, short.pass_at_1_high) == (0.4, 0.8)  # one run: its row's
    assert long.task == short.task == 'k15/Toy-v0 {"a": 1}'  # the problem count is no task
    assert token_efficiency_table([long, short]).splitlines() == [
        "| method | runs | Pass@1 (%) | 95 % interval | mean tokens | tokens / long |",
        "|---|---|---|---|---|---|",
        f"| long | 2 | 60.0 ± {100 * long.pass_at_1_std:.1f} | [{100 * t_low:.1f}, "
        f"{100 * t_high:.1f}] | 50.0 ± {long.mean_tokens_std:.1f} | 1.00 |",
        f"| short | 1 | {100 * short.pass_at_1_mean:.1f} | [40.0, 80.0] | "
        f"{short.mean_tokens_mean:.1f} | {short.mean_tokens_mean / 50:.2f} |",
    ]
    with pytest.raises(ValueError, match="nothing to tabulate"):
        token_efficiency_table([])

    png = plot_token_efficiency([long, short], tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_token_efficiency([], tmp_path / "empty.png")


def test_token_efficiency_keeps_tasks_apart(tmp_path: Path) -> None:
    def row(label: str, env: str, p1: float, tokens: float) -> dict:
        result = EvalResult(4, 2, p1, p1, tokens, tokens, tokens, tokens, 0.0, {}, 8, 1.0, 8.0,
                            1.5, p1 - 0.1, p1 + 0.1)  # fmt: skip
        return make_row(result, label=label, run=0, env=env, env_kwargs={"split": "test"})

    rows = [row("base", "k15/A-v0", 0.2, 100), row("short", "k15/A-v0", 0.3, 50),
            row("base-b", "k15/B-v0", 0.5, 40), row("inner", "k15/B-v0", 0.4, 10)]  # fmt: skip
    summaries = summarize_runs(rows)
    table = token_efficiency_table(summaries).splitlines()
    # ratios are taken within a task: B's first label, not A's, is B's reference
    assert table[0].startswith("| task | method |") and "first of its task" in table[0]
    assert [line.rsplit("|", 2)[1].strip() for line in table[2:]] == [
        "1.00",
        "0.50",
        "1.00",
        "0.25",
    ]
    png = plot_token_efficiency(summaries, tmp_path / "two_tasks.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(png).size
    assert width > 1.8 * height  # two panels side by side
    # two runs of one label: the mean of their bootstrap intervals over problems
    (twice,) = summarize_runs([row("base", "k15/A-v0", 0.2, 100), row("base", "k15/A-v0", 0.4, 90)])
    assert (twice.pass_at_1_low, twice.pass_at_1_high) == pytest.approx((0.2, 0.4))
    # one label on two tasks is two points, one per task, never averaged together
    base_a, base_b = summarize_runs(
        [row("base", "k15/A-v0", 0.2, 100), row("base", "k15/B-v0", 0.5, 40)]
    )
    assert (base_a.task, base_a.pass_at_1_mean) == ('k15/A-v0 {"split": "test"}', 0.2)
    assert (base_b.task, base_b.runs, base_b.pass_at_1_mean) == (
        'k15/B-v0 {"split": "test"}',
        1,
        0.5,
    )


def test_k15_eval_and_plot_cli_with_hf_engine(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from rllib_k15.commands.k15 import main

    out = tmp_path / "eval.jsonl"
    common = ["eval", "--engine", "hf", "--dtype", "float32", "--model", str(tiny_model_dir),
              "--problems", "2", "--samples", "2", "--max-tokens", "4",
              "--out", str(out)]  # fmt: skip
    assert main([*common, "--runs", "2", "--label", "tiny", "--seed", "5"]) == 0
    assert main([*common, "--label", "tiny-again", "--no-plot"]) == 0
    rows = read_results([out])
    assert [(r["label"], r["run"], r["seed"]) for r in rows] == [
        ("tiny", 0, 5), ("tiny", 1, 6), ("tiny-again", 0, 0)
    ]  # fmt: skip
    # a random model can't finish in 4 tokens: everything is truncated and wrong
    assert all(r["pass_at_1"] == 0.0 and r["truncated_fraction"] == 1.0 for r in rows)
    assert all(r["mean_tokens"] == 4 and r["env"] == "k15/Arithmetic-v0" for r in rows)
    assert out.with_suffix(".png").is_file() and out.with_suffix(".csv").is_file()
    assert "Pass@1 0.0 ± 0.0% over 2 run(s)" in capsys.readouterr().out

    fig = tmp_path / "te.png"
    table = tmp_path / "te.md"
    assert main(["plot", "token-efficiency", str(out), "--out", str(fig),
                 "--table", str(table)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert fig.is_file() and "| tiny-again | 1 | 0.0 | [0.0, 0.0] | 4.0 | 1.00 |" in printed
    expected = "| tiny | 2 | 0.0 ± 0.0 | [0.0, 0.0] | 4.0 ± 0.0 | 1.00 |"
    assert table.read_text().splitlines()[2] == expected
