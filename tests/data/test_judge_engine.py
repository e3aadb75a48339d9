"""The in-process judge backend (``EngineJudge`` on the HF engine) and the agreement script.

``tiny-random-llama`` is a random model: its replies carry no verdict, so these tests check
the mechanism (templating, greedy determinism, laziness, pickling, the verifier's
accounting, the script's files), never the judge's quality.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import k15_envs  # noqa: F401  (registers the envs)
import pytest
from k15_envs.verifiers.judge import JudgeVerifier
from support.paths import load_experiment

from rllib_k15.data.judge import EngineJudge
from rllib_k15.engine import SamplingParams, make_engine

ROWS = [
    {"problem": "What is 1 divided by 2?", "answer": "\\frac{1}{2}"},
    {"problem": "How many legs does a spider have?", "answer": "8"},
]
PROMPTS = ["Is 0.5 equal to 1/2? End with VERDICT: CORRECT.", "Is eight 8?"]


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir: Path):
    engine = make_engine("hf", str(tiny_model_dir), seed=0, dtype="float32")
    yield engine
    engine.close()


def test_replies_are_the_engines_greedy_completions_of_the_chat_templated_prompts(
    hf_engine,
) -> None:
    judge = EngineJudge.wrap(hf_engine, max_tokens=6)
    replies = judge.complete(PROMPTS)
    direct = hf_engine.generate_text(PROMPTS, SamplingParams(temperature=0.0, max_tokens=6))
    assert replies == [c[0].text for c in direct]
    assert all(isinstance(r, str) for r in replies) and replies == judge.complete(PROMPTS)
    assert judge.complete([]) == []
    judge.close()  # a wrapped engine belongs to the caller: still usable
    assert hf_engine.generate_text(PROMPTS[:1], SamplingParams(max_tokens=2))[0][0].num_tokens


def test_a_model_built_judge_grades_through_math_env_and_pickles_without_its_engine(
    tiny_model_dir: Path,
) -> None:
    judge = EngineJudge(str(tiny_model_dir), max_tokens=6, engine_kwargs={"dtype": "float32"})
    assert judge._engine is None  # built on first use
    env = gym.make("k15/Math-v0", dataset=ROWS, verifier="judge", judge={"backend": judge})
    verifier = env.unwrapped.verifier
    assert isinstance(verifier, JudgeVerifier) and verifier.backend is judge
    problems = [env.unwrapped.problem(i) for i in range(2)]
    verdicts = env.unwrapped.verify_batch(problems, ["\\boxed{0.5}", "eight legs"])
    assert judge._engine is not None
    assert all(v.reward == float(v.correct) for v in verdicts)
    assert {v.reason for v in verdicts} <= {"correct", "wrong", "judge_unparseable"}
    stats = verifier.stats
    assert stats["cache_misses"] == 2
    assert stats.get("judge_unparseable", 0) + stats.get("judged_correct", 0) + stats.get(
        "judged_incorrect", 0) == 2  # fmt: skip
    copy = pickle.loads(pickle.dumps(verifier))
    assert copy.backend._engine is None and copy.backend.cache_id == judge.cache_id
    assert copy.backend.complete(PROMPTS[:1]) == judge.complete(PROMPTS[:1])  # rebuilt, greedy
    copy.close()
    env.close()
    assert judge._engine is None  # closed with the env: it built its engine


def test_a_config_names_the_backend_by_module_and_class(tiny_model_dir: Path) -> None:
    judge = {"backend": "rllib_k15.data.judge:EngineJudge",
             "backend_kwargs": {"model": str(tiny_model_dir), "max_tokens": 4}}  # fmt: skip
    env = gym.make("k15/Math-v0", dataset=ROWS, verifier="judge", judge=judge)
    backend = env.unwrapped.verifier.backend
    assert isinstance(backend, EngineJudge) and backend.params.max_tokens == 4
    assert backend.model == str(tiny_model_dir) and backend._engine is None  # nothing loaded
    env.close()


def test_a_wrapped_engine_judge_refuses_to_be_pickled(hf_engine) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(EngineJudge.wrap(hf_engine))


def test_the_agreement_script_writes_per_row_verdicts_and_the_table(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    script = load_experiment("judge_agreement")
    out = tmp_path / "agreement"
    argv = ["--model", str(tiny_model_dir), "--engine", "hf", "--limit", "5", "--out", str(out),
            "--max-tokens", "6", "--resamples", "200", "--dtype", "float32"]  # fmt: skip
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert len(rows) == 5 and len({r["category"] for r in rows}) >= 4  # spread over the set
    for row in rows:
        assert isinstance(row["math_verify"]["correct"], bool) and row["judge"]["reason"]
    overall = results["summary"]["all"]
    truth = [r["label"] == "correct" for r in rows]
    hits = [r["math_verify"]["correct"] == t for r, t in zip(rows, truth)]
    assert overall["n"] == 5 and overall["math_verify_accuracy"][0] == sum(hits) / 5
    low, high = overall["judge_accuracy"][1:]
    assert low <= overall["judge_accuracy"][0] <= high
    readme = (out / "README.md").read_text()
    assert "| category | n | labeled correct | math-verify accuracy | judge accuracy |" in readme
    assert "| **all** | 5 |" in readme and "SmolLM2-135M-Instruct is weak" in readme
    assert results["settings"]["judge_stats"]["cache_misses"] == 5


def test_the_labeled_set_is_checked_row_by_row(tmp_path: Path) -> None:
    script = load_experiment("judge_agreement")
    shipped = script.load_labeled(script.DEFAULT_DATA)
    categories = {r["category"] for r in shipped}
    assert len(shipped) >= 120 and {"units", "words", "percent", "intervals", "sets"} <= categories
    assert {r["label"] for r in shipped} == {"correct", "incorrect"}
    bad = tmp_path / "bad.jsonl"
    row = {**shipped[0], "label": "maybe"}
    bad.write_text(json.dumps(shipped[1]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl: line 2: field 'label' must be 'correct'"):
        script.load_labeled(bad)
    bad.write_text(json.dumps({**shipped[0], "response": 3}) + "\n")
    with pytest.raises(SystemExit, match=r"line 1: field 'response' must be a non-empty string"):
        script.load_labeled(bad)
    with pytest.raises(SystemExit, match="--limit must be >= 1"):
        script.main(["--model", "x", "--limit", "0"])
