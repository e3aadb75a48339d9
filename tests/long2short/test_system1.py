"""``k15 long2short system1``: the majority vote and confidence filter, the answer-only
response, the selection against the real Arithmetic verifier, and the command end to end on
the tiny model (HF engine)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from k15_envs.extract import extract_answer

from rllib_k15.commands.k15 import main
from rllib_k15.env_factory import make_unwrapped_env
from rllib_k15.long2short.data import read_sft_parquet, write_samples_parquet
from rllib_k15.long2short.selection import ProblemSamples, Sample
from rllib_k15.long2short.system1 import (
    ANSWER_FORMATS,
    Majority,
    StepCache,
    extract_answers,
    format_answer,
    is_confident,
    majority_vote,
    select_system1,
)

ENV = "k15/Arithmetic-v0"
TRAIN = {"difficulty": 2, "split": "train", "size": 6}

# --------------------------------------------------------------------------- the vote


@pytest.mark.parametrize(
    "answers,expected",
    [
        # a clear winner; None counts in the total only
        (["42", "42", "7", None], Majority("42", 2, 4)),
        # numbers vote by value: 42.0 and 42 agree; the first-seen spelling represents them
        (["42.0", "42", "1,234"], Majority("42.0", 2, 3)),
        # the most frequent spelling wins inside the class
        (["42", "42.0", "42.0"], Majority("42.0", 3, 3)),
        # a tie for the top keeps nothing
        (["3", "4"], Majority(None, 1, 2, tied=True)),
        (["3", "4", "4", "3", None, None, None], Majority(None, 2, 7, tied=True)),
        # answers without a winner among them: None is never a candidate
        ([None, None, "3"], Majority("3", 1, 3)),
        ([None, None], Majority(None, 0, 2)),
        ([], Majority(None, 0, 0)),
        # text answers: whitespace and $...$ wrappers do not split a class
        (["cat  dog", "cat dog", "$cat dog$", "dog"], Majority("cat  dog", 3, 4)),
    ],
)
def test_majority_vote(answers, expected) -> None:
    assert majority_vote(answers) == expected


def test_confidence_is_an_inclusive_exact_share() -> None:
    assert majority_vote(["1", "1", "1", "2", None]).share == Fraction(3, 5)
    assert is_confident(majority_vote(["1", "1", "1", "2", None]), 0.6)  # 3/5 == 0.6
    assert not is_confident(majority_vote(["1", "1", "2", None]), 0.6)  # 2/4
    assert is_confident(majority_vote(["1", "1", "2", None]), 0.5)
    assert not is_confident(majority_vote(["1", "2"]), 0.5)  # a tie is never confident
    assert not is_confident(majority_vote([None, None]), 0.1)
    with pytest.raises(ValueError, match=r"`confidence` \(0\) must be in \(0, 1\]"):
        is_confident(Majority("1", 1, 1), 0)


@pytest.mark.parametrize("style", sorted(ANSWER_FORMATS))
def test_the_answer_only_response_is_read_back_by_the_extractor(style) -> None:
    response = format_answer(" -17 ", style)
    assert response == ANSWER_FORMATS[style] % "-17"
    assert "\n" not in response
    assert extract_answer(response, "boxed_or_line").answer == "-17"


def test_format_answer_rejects_an_unknown_style() -> None:
    assert format_answer("42") == "\\boxed{42}"
    with pytest.raises(ValueError, match="unknown answer format 'latex'"):
        format_answer("42", "latex")


# --------------------------------------------------------------------------- selection


def _env(**overrides):
    return make_unwrapped_env(ENV, {**TRAIN, **overrides})


def _groups(env, texts_per_problem) -> list[ProblemSamples]:
    """Hand-written samples for the env's first problems; ``{a}`` is the gold answer and
    ``{w}`` a wrong one; a sample ``(text, tokens)`` sets its length."""
    groups = []
    for i, texts in enumerate(texts_per_problem):
        p = env.problem(i)
        verdicts = []
        for text in texts:
            text, tokens = text if isinstance(text, tuple) else (text, 10)
            text = text.format(a=p.answer, w=int(p.answer) + 1)
            verdicts.append(Sample(text, tokens, env.verify(p, text).correct and tokens < 32))
        groups.append(ProblemSamples(p.id, p.prompt, verdicts))
    return groups


def test_selection_keeps_confident_majorities_and_measures_them_against_gold() -> None:
    env = _env()
    script = [
        ["so {a}", "\\boxed{{{a}}}", "{a}", "{w}"],  # confident and right
        ["{w}", "\\boxed{{{w}}}", "{w}", "{a}"],  # confident and wrong: kept, counted wrong
        ["{a}", "{w}", "{a}", "{w}"],  # tie
        ["no idea", "hmm", "{a}", "{w}"],  # 1 vs 1 -> tie as well
        ["{a}", "{w}", "no", "none"],  # tie of singletons
        [("{a}", 32), ("{a}", 32), "{a}", "none"],  # two were cut at the cap: 1/4 votes
    ]
    groups = _groups(env, script)
    problems = [env.problem(i) for i in range(len(groups))]
    answers = extract_answers(env, problems, groups, max_tokens=32)
    assert answers[5][:2] == [None, None]  # truncated: no answer, as in sampling
    examples, stats = select_system1(
        groups, problems, answers, env.verify_batch, len, confidence=0.6
    )
    assert [e.problem_id for e in examples] == [groups[0].problem_id, groups[1].problem_id]
    assert examples[0].response == f"\\boxed{{{problems[0].answer}}}"
    assert examples[1].response == f"\\boxed{{{int(problems[1].answer) + 1}}}"
    assert examples[0].response_tokens == len(examples[0].response)
    assert (examples[0].num_samples, examples[0].num_correct) == (4, 3)
    d = stats.to_dict()
    assert (d["num_problems"], d["num_kept"], d["num_kept_correct"]) == (6, 2, 1)
    assert (d["num_tied"], d["num_below_confidence"], d["num_no_answer"]) == (3, 1, 0)
    assert d["majority_accuracy_kept"] == 0.5
    assert d["sample_pass_at_1"] == pytest.approx(sum(s.correct for g in groups
                                                      for s in g.samples) / 24)  # fmt: skip
    # a lower bar keeps the 1-of-4 problem; never the ties
    low, low_stats = select_system1(groups, problems, answers, env.verify_batch, len, 0.25)
    assert len(low) == 3 and low_stats.num_tied == 3


def test_a_format_the_env_does_not_read_drops_the_problem() -> None:
    env = _env(extract="boxed")  # reads \boxed{} only
    groups = _groups(env, [["\\boxed{{{a}}}"] * 3])
    problems = [env.problem(0)]
    answers = extract_answers(env, problems, groups, None)
    kept, stats = select_system1(groups, problems, answers, env.verify_batch, len,
                                 style="answer-line")  # fmt: skip
    assert kept == [] and stats.num_format_mismatch == 1 and stats.num_kept == 0
    kept, _ = select_system1(groups, problems, answers, env.verify_batch, len, style="boxed")
    assert len(kept) == 1


def test_the_step_cache_reuses_only_unchanged_outputs_whose_inputs_did_not_rerun(
    tmp_path,
) -> None:
    out = tmp_path / "o.txt"
    steps = StepCache(tmp_path / "steps.json")
    assert not steps.reuse("a", {"x": 1}, [out])
    steps.start("a")
    out.write_text("done")
    steps.done("a", {"x": 1, "p": Path("/p")})
    again = StepCache(tmp_path / "steps.json")
    assert again.reuse("a", {"x": 1, "p": Path("/p")}, [out])
    assert not again.reuse("a", {"x": 2, "p": Path("/p")}, [out])
    assert not again.reuse("a", {"x": 1, "p": Path("/p")}, [tmp_path / "missing"])
    again.done("b", {})
    assert not again.reuse("a", {"x": 1, "p": Path("/p")}, [out], after=("b",))
    again.start("a")  # a step that starts forgets its record
    assert not StepCache(tmp_path / "steps.json").reuse("a", {"x": 1, "p": "/p"}, [out])


# --------------------------------------------------------------------------- the command


def _samples_file(path: Path) -> Path:
    """6 train problems x 4 samples: 5 confident majorities (4 right, 1 wrong), 1 tie."""
    env = _env()
    script = [["{a}", "The sum is {a}.", "\\boxed{{{a}}}", "{w}"]] * 4
    script += [["{w}", "{w}", "\\boxed{{{w}}}", "{a}"], ["{a}", "{w}", "x", "y"]]
    groups = _groups(env, script)
    info = {"model": "m", "env": ENV, "env_kwargs": TRAIN, "samples_per_problem": 4,
            "temperature": 1.0, "max_tokens": 32}  # fmt: skip
    return write_samples_parquet(groups, path, info)


def _argv(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "long2short", "system1", "--model", str(model), "--out", str(out), "--engine", "hf",
        "--dtype", "float32", "--epochs", "4", "--lr", "3e-3", "--batch-size", "5",
        "--save-dtype", "float32", "--eval-problems", "2", "--eval-samples", "1",
        "--eval-max-tokens", "6", "--no-progress", *extra,
    ]  # fmt: skip


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def test_system1_end_to_end(tiny_model_dir, tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    samples, out = _samples_file(tmp_path / "samples.parquet"), tmp_path / "s1"
    assert main(_argv(tiny_model_dir, out, "--from-samples", str(samples))) == 0
    first = capsys.readouterr().out
    assert "skipped" not in first and "System 2 Pass@1" in first

    rows = read_sft_parquet(out / "system1_data.parquet")
    env = _env()
    gold = {env.problem(i).id: env.problem(i).answer for i in range(6)}
    assert len(rows) == 5 and all(r.response.startswith("\\boxed{") for r in rows)
    assert sum(r.response == f"\\boxed{{{gold[r.problem_id]}}}" for r in rows) == 4

    report = json.loads((out / "report.json").read_text())
    sel = report["selection"]
    assert (sel["num_problems"], sel["num_kept"], sel["num_tied"]) == (6, 5, 1)
    assert sel["majority_accuracy_kept"] == pytest.approx(0.8)
    losses = report["sft"]["metrics"]["sft/epoch_losses"]
    assert losses[-1] < losses[0] and report["sft"]["loss_after"] < report["sft"]["loss_before"]
    for which in ("system2", "system1"):
        assert report["eval"][which]["num_problems"] == 2
        assert report["eval"][which]["samples"] == 1
    labels = [json.loads(line)["label"] for line in (out / "eval.jsonl").read_text().splitlines()]
    assert labels == ["base", "system1"]

    model = AutoModelForCausalLM.from_pretrained(out)  # a plain HF directory
    assert model.config.vocab_size > 0
    base, tuned = _tensors(tiny_model_dir), _tensors(out)
    assert base.keys() == tuned.keys()
    assert any(not (base[k] == tuned[k]).all() for k in base), "SFT changed no parameter"


@pytest.mark.slow
def test_system1_resumes_and_redoes_only_what_changed(tiny_model_dir, tmp_path, capsys) -> None:
    samples, out = _samples_file(tmp_path / "samples.parquet"), tmp_path / "s1"
    argv = _argv(tiny_model_dir, out, "--from-samples", str(samples))
    assert main(argv) == 0
    assert "skipped" not in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    second = capsys.readouterr().out
    for step in ("data", "sft", "eval base", "eval system1", "report"):
        assert f"{step}: skipped" in second, step
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # another answer format redoes the data and everything after it, not the base eval
    assert main([*argv, "--answer-format", "answer-line"]) == 0
    third = capsys.readouterr().out
    assert "eval base: skipped" in third and "data: skipped" not in third
    assert "sft: skipped" not in third and "eval system1: skipped" not in third
    rows = read_sft_parquet(out / "system1_data.parquet")
    assert len(rows) == 5 and all(r.response.startswith("Answer: ") for r in rows)
    assert json.loads((out / "report.json").read_text())["answer_format"] == "answer-line"


def test_sampling_with_the_engine_and_nothing_confident_is_a_clear_error(
    tiny_model_dir, tmp_path, capsys
) -> None:
    """The random model writes no \\boxed{} answer in 4 tokens: nothing reaches 0.6."""
    out = tmp_path / "s1"
    kwargs = json.dumps({**TRAIN, "extract": "boxed"})
    argv = _argv(tiny_model_dir, out, "--env", ENV, "--env-kwargs", kwargs,
                 "--samples", "2", "--max-tokens", "4", "--num-problems", "3")  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "k15 long2short system1: error: no problem reached --confidence 0.6" in err
    import pyarrow.parquet as pq

    assert pq.read_table(out / "samples.parquet").num_rows == 6  # 3 problems x 2 samples
    assert not (out / "config.json").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--env", ENV, "--samples", "0"], r"--samples \(0\) must be >= 1"),
        (["--env", ENV, "--confidence", "1.5"], r"--confidence \(1.5\) must be in \(0, 1\]"),
        (["--env", ENV, "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
        (["--env", ENV, "--env-kwargs", "{oops"], "--env-kwargs is not JSON"),
        (["--env", ENV, "--lr", "0"], r"--lr \(0.0\) must be > 0"),
        (["--env", ENV, "--eval-problems", "-1"], r"--eval-problems \(-1\) must be >= 0"),
        ([], "--env is required unless --from-samples"),
        (["--env", ENV, "--from-samples", "s.parquet"], "--from-samples uses the env"),
    ],
)
def test_bad_flags_are_named(tmp_path, extra, message) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["long2short", "system1", "--model", "m", "--out", str(tmp_path / "o"), *extra])


def test_a_missing_or_foreign_samples_file_is_named(tiny_model_dir, tmp_path, capsys) -> None:
    missing = tmp_path / "nope.parquet"
    assert main(_argv(tiny_model_dir, tmp_path / "o", "--from-samples", str(missing))) == 2
    assert f"samples file not found: {missing}" in capsys.readouterr().err
    env = _env()
    groups = [ProblemSamples("arithmetic/d9/00001", "?", [Sample("1", 1, False)])]
    info = {"env": ENV, "env_kwargs": TRAIN}
    foreign = write_samples_parquet(groups, tmp_path / "f.parquet", info)
    assert env.problem(0).id != "arithmetic/d9/00001"
    assert main(_argv(tiny_model_dir, tmp_path / "o", "--from-samples", str(foreign))) == 2
    err = capsys.readouterr().err
    assert f"{foreign}: problem_id 'arithmetic/d9/00001'" in err and "is not a problem" in err
