"""``k15 long2short c3ot``: the rule compressor on hand-written CoTs, the conditioning markers
and the chat-template mechanism, the model compressor's choice, and the command end to end
on the tiny model (HF engine)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rllib_k15.commands.k15 import main
from rllib_k15.engine.base import encode_chat
from rllib_k15.env_factory import make_unwrapped_env
from rllib_k15.long2short.c3ot import (
    CONDITIONS,
    CompressedCoT,
    apply_condition,
    c3ot_examples,
    condition_prompt,
    conditioned_chat_template,
    export_condition,
    longest_correct,
    model_compress,
    rule_compress,
    split_segments,
)
from rllib_k15.long2short.data import read_sft_parquet, write_samples_parquet
from rllib_k15.long2short.selection import ProblemSamples, Sample

ENV = "k15/Arithmetic-v0"
TRAIN = {"difficulty": 2, "split": "train", "size": 4}

# --------------------------------------------------------------------------- rule compressor

COLUMN_ADDITION = """To calculate 47 + 25, we need to add the two numbers together.

First, add the ones: 7 + 5 = 12. Write down 2 and carry 1.
Then add the tens: 4 + 2 + 1 = 7.
So, 47 + 25 = 72.

The final answer is \\boxed{72}. I hope this helps!"""

PRECEDENCE = """Let's solve 12 + 34 * 5 step by step.
Multiplication comes first: 34 * 5 = 170.
Then we add: 12 + 170 = 182.
Let me double check: 182 - 12 = 170. Yes!
So 12 + 34 * 5 = 182.
Answer: 182"""


@pytest.mark.parametrize(
    "cot,answer,expected",
    [
        # filler and the column steps go; the equation giving the answer and the answer stay;
        # the text after the answer goes
        (COLUMN_ADDITION, "72", "47 + 25 = 72.\nThe final answer is \\boxed{72}."),
        # a chain is followed back through its numbers; the check and the restatement that
        # derive numbers already on the page go; lead-ins before ": " go
        (PRECEDENCE, "182", "34 * 5 = 170.\n12 + 170 = 182.\nAnswer: 182"),
        # negative results and an unmarked last line (lenient: the last number)
        ("Hmm, subtraction.\n512 - 768 = -256\nSo it is -256", "-256",
         "512 - 768 = -256\nSo it is -256"),
        # no equation at all: the steps sharing the answer's number
        ("We add 3 and 5. Adding them gives 8. So the answer is \\boxed{8}.", "8",
         "Adding them gives 8.\nSo the answer is \\boxed{8}."),
        # thousands separators and decimals are the same numbers
        ("Well, 1,200 + 34.50 = 1,234.5 dollars.\nOkay!\nAnswer: 1234.5", "1234.5",
         "1,200 + 34.50 = 1,234.5 dollars.\nAnswer: 1234.5"),
        # an exact repeat is written once
        ("3 + 4 = 7.\n3 + 4 = 7.\n\\boxed{7}", "7", "3 + 4 = 7.\n\\boxed{7}"),
        # nothing to anchor on: unchanged (the caller's verifier then drops it)
        ("  I don't know.  ", "9", "I don't know."),
    ],
)  # fmt: skip
def test_rule_compress(cot, answer, expected) -> None:
    assert rule_compress(cot, answer) == expected


def test_rule_compressions_stay_correct_and_get_shorter() -> None:
    env = make_unwrapped_env(ENV, {"difficulty": 4, "size": 1})
    problem = env.problem(0)
    expression, answer = problem.metadata["expression"], problem.answer
    cot = (f"Sure! Let me think about {expression}.\nThe order of operations matters here.\n"
           f"Computing everything: {expression} = {answer}.\nThat was fun.\n"
           f"The final answer is \\boxed{{{answer}}}.")  # fmt: skip
    short = rule_compress(cot, answer)
    assert short == f"{expression} = {answer}.\nThe final answer is \\boxed{{{answer}}}."
    assert env.verify(problem, short).correct and len(short) < len(cot)


def test_segments_split_sentences_but_not_decimals() -> None:
    assert split_segments("a 3.5 b. C!  d?\n\n e") == ["a 3.5 b.", "C!", "d?", "e"]


# --------------------------------------------------------------------------- conditioning


def test_condition_prompt_prefixes_one_marker() -> None:
    assert CONDITIONS == {"long": "[LONG]", "short": "[SHORT]"}
    assert condition_prompt("Calculate 1 + 2.", "short") == "[SHORT] Calculate 1 + 2."
    assert condition_prompt("Calculate 1 + 2.", "long") == "[LONG] Calculate 1 + 2."
    assert condition_prompt("[LONG] Q", "short") == "[LONG] Q"  # a marked prompt keeps its own
    with pytest.raises(ValueError, match="unknown condition 'medium'"):
        condition_prompt("Q", "medium")


@pytest.fixture(params=["byte-level", "smollm2"])
def any_tokenizer(request, tokenizer, tiny_model_dir):
    """The test byte-level tokenizer and the SmolLM2 one (a template with a default system
    prompt)."""
    if request.param == "byte-level":
        return tokenizer
    from rllib_k15.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.mark.parametrize("condition", ["short", "long"])
def test_the_template_renders_exactly_the_marked_training_prompt(any_tokenizer, condition):
    prompts = ["Calculate 47 + 25.\nGive the final answer in \\boxed{}.", "[LONG] explicit", ""]
    plain = [encode_chat(any_tokenizer, condition_prompt(p, condition)) for p in prompts]
    apply_condition(any_tokenizer, condition)
    assert [encode_chat(any_tokenizer, p) for p in prompts] == plain
    text = any_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert f"{CONDITIONS[condition]} Q" in text and "Be brief." in text
    assert f"{CONDITIONS[condition]} Be brief." not in text  # only user messages


def test_reconditioning_replaces_the_preamble(tokenizer) -> None:
    original = tokenizer.chat_template
    once = conditioned_chat_template(original, "short")
    twice = conditioned_chat_template(conditioned_chat_template(once, "long"), "short")
    assert twice == once and once.endswith(original)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no single chat template"):
        apply_condition(tokenizer, "short")


def test_the_saved_tokenizer_carries_the_condition(tiny_model_dir, tmp_path) -> None:
    from rllib_k15.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    apply_condition(tok, "short")
    tok.save_pretrained(tmp_path / "short")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "short")
    chat = [{"role": "user", "content": "Calculate 1 + 2."}]
    text = reloaded.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "[SHORT] Calculate 1 + 2." in text
    (tmp_path / "short" / "config.json").write_text("{}")
    long_dir = export_condition(tmp_path / "short", tmp_path / "long", "long")
    text = AutoTokenizer.from_pretrained(long_dir).apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    )
    assert "[LONG] Calculate 1 + 2." in text and "[SHORT]" not in text
    assert (long_dir / "config.json").read_text() == "{}"


# --------------------------------------------------------------------------- data


def _group(pid: str, *samples: tuple[str, int, bool]) -> ProblemSamples:
    return ProblemSamples(pid, f"prompt {pid}", [Sample(*s) for s in samples])


def test_longest_correct_distinct_per_problem() -> None:
    groups = [
        _group("a", ("short", 3, True), ("long", 9, True), ("wrong", 20, False), ("mid", 5, True)),
        _group("b", ("x", 4, False)),  # nothing correct: nothing chosen
        _group("c", ("same", 7, True), ("same", 7, True), ("other", 7, True)),
    ]
    one = longest_correct(groups)
    assert [(g.problem_id, s.response) for g, s in one] == [("a", "long"), ("c", "same")]
    two = longest_correct(groups, per_problem=2)
    assert [s.response for _, s in two] == ["long", "mid", "same", "other"]
    with pytest.raises(ValueError, match=r"`per_problem` \(0\)"):
        longest_correct(groups, 0)


def test_each_example_appears_twice_behind_its_marker() -> None:
    item = CompressedCoT("p", "Q?", "long cot", "short", 9, 2, 8, 5)
    assert [(e.prompt, e.response, e.response_tokens) for e in c3ot_examples([item])] == [
        ("[LONG] Q?", "long cot", 9), ("[SHORT] Q?", "short", 2),
    ]  # fmt: skip
    (only,) = c3ot_examples([item], short_only=True)
    assert (only.prompt, only.response, only.num_samples, only.num_correct) == ("Q?", "short", 8, 5)


@dataclass
class _Completion:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


class _ScriptedEngine:
    """Returns the scripted candidates for each prompt (a unit test of one piece)."""

    def __init__(self, script: list[list[tuple[str, int]]]) -> None:
        self.script, self.prompts = script, []

    def generate_text(self, prompts, params):
        self.prompts.extend(prompts)
        start = len(self.prompts) - len(prompts)
        return [[_Completion([0] * n, [0.0] * n, text, "stop") for text, n in self.script[i]]
                for i in range(start, len(self.prompts))]  # fmt: skip


def test_model_compress_keeps_the_shortest_correct_shorter_candidate() -> None:
    env = make_unwrapped_env(ENV, TRAIN)
    p0, p1 = env.problem(0), env.problem(1)
    cots = [Sample(f"long {p0.answer}", 20, True), Sample(f"long {p1.answer}", 20, True)]
    engine = _ScriptedEngine([
        [("\\boxed{0}", 3), (f"\\boxed{{{p0.answer}}}", 25), (f"so {p0.answer}", 6),
         (f"= {p0.answer}", 9)],  # wrong, longer, shortest correct, correct
        [(f"{p1.answer}", 20), ("no", 2)],  # as long as the CoT / wrong: nothing
    ])  # fmt: skip
    out = model_compress(engine, env, [p0, p1], cots, n=4, progress=False)
    assert out == [f"so {p0.answer}", None]
    assert engine.prompts[0].startswith("Rewrite the solution below")
    assert p0.prompt in engine.prompts[0] and cots[0].response in engine.prompts[0]


# --------------------------------------------------------------------------- the command


def _samples_file(path: Path) -> Path:
    """4 train problems x 3 samples: a long correct CoT, a short correct one, a wrong one."""
    env = make_unwrapped_env(ENV, TRAIN)
    groups = []
    for i in range(len(env)):
        p = env.problem(i)
        expr, a = p.metadata["expression"], p.answer
        long = (f"Let's work this out carefully.\nWe need {expr}.\nAdding: {expr} = {a}.\n"
                f"Double-checking: {a} - {expr.split(' + ')[1]} = {expr.split(' + ')[0]}. Yes.\n"
                f"The final answer is \\boxed{{{a}}}.")  # fmt: skip
        groups.append(ProblemSamples(p.id, p.prompt, [
            Sample(f"\\boxed{{{a}}}", 6, True), Sample(long, 60, True), Sample("7", 2, False),
        ]))  # fmt: skip
    info = {"model": "m", "env": ENV, "env_kwargs": TRAIN, "samples_per_problem": 3,
            "temperature": 1.0, "max_tokens": 128}  # fmt: skip
    return write_samples_parquet(groups, path, info)


def _argv(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "long2short", "c3ot", "--model", str(model), "--out", str(out), "--engine", "hf",
        "--dtype", "float32", "--epochs", "3", "--lr", "3e-3", "--batch-size", "8",
        "--save-dtype", "float32", "--eval-problems", "1", "--eval-samples", "1",
        "--eval-max-tokens", "6", "--no-progress", *extra,
    ]  # fmt: skip


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def _chat(model_dir: Path) -> str:
    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.apply_chat_template([{"role": "user", "content": "Calculate 1 + 2."}],
                                   tokenize=False, add_generation_prompt=True)  # fmt: skip


def test_c3ot_end_to_end_with_both_modes(tiny_model_dir, tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    samples, out = _samples_file(tmp_path / "samples.parquet"), tmp_path / "c3ot"
    assert main(_argv(tiny_model_dir, out, "--from-samples", str(samples),
                      "--condition", "long")) == 0  # fmt: skip
    assert "c3ot-short Pass@1" in capsys.readouterr().out

    rows = read_sft_parquet(out / "c3ot_data.parquet")
    assert len(rows) == 8  # 4 problems x ([LONG], [SHORT])
    longs, shorts = rows[0::2], rows[1::2]
    assert all(r.prompt.startswith("[LONG] ") and "Double-checking" in r.response for r in longs)
    assert all(r.prompt.startswith("[SHORT] ") for r in shorts)
    assert all(r.response.count("\n") == 1 and "\\boxed{" in r.response for r in shorts)
    assert all(s.response_tokens < lg.response_tokens for s, lg in zip(shorts, longs))

    report = json.loads((out / "report.json").read_text())
    data = report["data"]
    assert (data["num_long_cots"], data["num_compressed"], data["num_dropped"]) == (4, 4, 0)
    assert data["compression_ratio"] < 0.6
    losses = report["sft"]["metrics"]["sft/epoch_losses"]
    assert losses[-1] < losses[0] and report["sft"]["loss_after"] < report["sft"]["loss_before"]
    assert set(report["eval"]) == {"base", "c3ot-short", "c3ot-long"}

    # the exported model: loads, was trained, and evaluates the [SHORT] mode as it is
    AutoModelForCausalLM.from_pretrained(out)
    base, tuned = _tensors(tiny_model_dir), _tensors(out)
    assert any(not (base[k] == tuned[k]).all() for k in base), "SFT changed no parameter"
    assert "[SHORT] Calculate 1 + 2." in _chat(out)
    assert "[LONG] Calculate 1 + 2." in _chat(out / "long_mode")
    assert all((tuned[k] == v).all() for k, v in _tensors(out / "long_mode").items())


@pytest.mark.slow
def test_c3ot_short_only_baseline_has_no_markers(tiny_model_dir, tmp_path, capsys) -> None:
    samples, out = _samples_file(tmp_path / "samples.parquet"), tmp_path / "c3ot"
    argv = _argv(tiny_model_dir, out, "--from-samples", str(samples), "--short-only",
                 "--eval-problems", "0")  # fmt: skip
    assert main(argv) == 0
    rows = read_sft_parquet(out / "c3ot_data.parquet")
    assert len(rows) == 4 and not any(r.prompt.startswith("[") for r in rows)
    assert "[SHORT]" not in _chat(out) and "[LONG]" not in _chat(out)
    report = json.loads((out / "report.json").read_text())
    assert report["short_only"] is True
    assert report["eval"] == {"base": None, "c3ot-short-only": None}  # --eval-problems 0


def test_the_model_compressor_drops_what_is_not_correct(tiny_model_dir, tmp_path, capsys) -> None:
    """The random model condenses nothing correctly: a clear error, no model written."""
    samples, out = _samples_file(tmp_path / "samples.parquet"), tmp_path / "c3ot"
    argv = _argv(tiny_model_dir, out, "--from-samples", str(samples), "--compressor", "model",
                 "--compress-samples", "2", "--max-tokens", "8")  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "0 of 4 long CoTs compressed (model)" in captured.out
    assert "error: no compressed CoT to train on (4 correct long CoTs" in captured.err
    assert not (out / "config.json").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--short-only", "--condition", "long"], "--condition long needs the conditioned"),
        (["--per-problem", "0"], r"--per-problem \(0\) must be >= 1"),
        (["--compress-samples", "0"], r"--compress-samples \(0\) must be >= 1"),
        (["--compress-temperature", "-1"], r"--compress-temperature \(-1.0\) must be >= 0"),
    ],
)
def test_bad_flags_are_named(tmp_path, extra, message) -> None:
    argv = ["long2short", "c3ot", "--model", "m", "--env", ENV, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=message):
        main([*argv, *extra])
