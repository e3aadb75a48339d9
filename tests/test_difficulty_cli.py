"""``k15 difficulty`` on the tiny model: per-problem pass rates in a file the buffer reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rllib_k15.commands.k15 import main
from rllib_k15.sampling.difficulty import load_difficulty_file
from rllib_k15.sampling.problem_buffer import ProblemBuffer


@pytest.fixture
def toy_env():
    from support import toy_env  # registers k15test/FirstLetter-v0 (first letter n-z is "correct")

    return toy_env


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "difficulty", "--env", "k15test/FirstLetter-v0", "--env-kwargs", '{"size": 8}',
        "--model", str(model), "--engine", "hf", "--dtype", "float32",
        "--max-tokens", "3", "--out", str(out), *extra,
    ]  # fmt: skip


def test_greedy_pass_rates_match_the_model(toy_env, tiny_model_dir, tmp_path, capsys) -> None:
    """At temperature 0 every sample is the greedy response: the pass rate of problem i is
    1 exactly when the greedy response starts with n-z (checked here independently)."""
    from rllib_k15.engine import HFEngine, SamplingParams

    out = tmp_path / "diff.json"
    assert main(_args(tiny_model_dir, out, "--samples", "2", "--temperature", "0")) == 0
    assert "8 problems × 2 samples" in capsys.readouterr().out

    env = toy_env.FirstLetterEnv(size=8)
    engine = HFEngine(tiny_model_dir, dtype="float32")
    prompts = [engine.encode_prompt(env.problem(i).prompt) for i in range(8)]
    greedy = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=3))
    expected = [float(env.verify(None, g[0].text).correct) for g in greedy]

    difficulty = load_difficulty_file(out, 8, problem_ids=[f"toy/{i}" for i in range(8)])
    np.testing.assert_array_equal(1.0 - difficulty, expected)
    meta = json.loads(out.read_text())
    assert (meta["samples"], meta["temperature"], meta["model"]) == (2, 0.0, str(tiny_model_dir))
    assert [r["problem_id"] for r in meta["problems"]] == [f"toy/{i}" for i in range(8)]


def test_sampled_pass_rates_feed_the_problem_buffer(toy_env, tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "diff.csv"
    assert main(_args(tiny_model_dir, out, "--samples", "4", "--problems", "6")) == 0
    rates = 1.0 - load_difficulty_file(out, 6)
    assert np.all((rates >= 0) & (rates <= 1))
    np.testing.assert_array_equal(rates * 4, np.round(rates * 4))  # k of 4 samples correct
    buffer = ProblemBuffer.from_difficulty_file(out, 6)
    np.testing.assert_array_equal(buffer.difficulty, 1.0 - rates)
    with pytest.raises(ValueError, match="no pass_rate for 2 of 8 problems"):
        load_difficulty_file(out, 8)  # only the first 6 were assessed


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--samples", "0"], r"--samples \(0\) must be >= 1"),
        (["--samples", "2", "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
    ],
)
def test_bad_arguments_name_the_option(toy_env, tiny_model_dir, tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        main([*_args(tiny_model_dir, tmp_path / "d.json"), *extra])


def test_bad_suffix_is_rejected(tiny_model_dir, tmp_path) -> None:
    with pytest.raises(SystemExit, match=r"--out .* must end in .json, .jsonl or .csv"):
        main(_args(tiny_model_dir, tmp_path / "d.txt", "--samples", "2"))
