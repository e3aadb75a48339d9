"""The long-CoT warm-up (``k15 warmup``): template, selection rule, structure markers, and the
command end to end on a tiny model (HF engine) and the first-letter toy env."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rllib_k15.commands.k15 import main
from rllib_k15.data.warmup import (
    PLACEHOLDER,
    REASONING_TEMPLATE,
    WarmupError,
    WarmupSample,
    load_template,
    read_samples,
    render_template,
    sample_with_template,
    select_longest_correct,
)
from rllib_k15.data.warmup_report import structure_counts, structure_summary
from rllib_k15.engine import SamplingParams

# --------------------------------------------------------------------------- templates


def test_template_replaces_every_placeholder_and_keeps_other_braces() -> None:
    text = render_template("Q: {problem}\nAgain: {problem}\nAnswer in \\boxed{}.", "2 + 2?")
    assert text == "Q: 2 + 2?\nAgain: 2 + 2?\nAnswer in \\boxed{}."


def test_default_template_asks_for_the_four_behaviours_then_the_env_format() -> None:
    text = render_template(REASONING_TEMPLATE, "Calculate 1 + 2.\nGive the answer in \\boxed{}.")
    lowered = text.lower()
    for word in ("plan", "step by step", "check", "verify", "wait", "alternatively", "format"):
        assert word in lowered, word
    assert text.endswith("Calculate 1 + 2.\nGive the answer in \\boxed{}.")
    assert load_template("reasoning") == REASONING_TEMPLATE


def test_a_template_without_placeholder_is_an_error_naming_the_file(tmp_path) -> None:
    with pytest.raises(WarmupError, match="no \\{problem\\} placeholder"):
        render_template("Think hard.", "1 + 1")
    bad = tmp_path / "bad.txt"
    bad.write_text("Think hard about {question}.")
    with pytest.raises(WarmupError, match=f"--template file {bad} has no"):
        load_template(str(bad))
    with pytest.raises(WarmupError, match="neither a built-in template"):
        load_template(str(tmp_path / "missing.txt"))
    good = tmp_path / "good.txt"
    good.write_text(f"Reason, then answer.\n{PLACEHOLDER}")
    assert load_template(str(good)).endswith(PLACEHOLDER)


def test_the_cli_rejects_a_template_file_without_placeholder(tmp_path) -> None:
    bad = tmp_path / "t.txt"
    bad.write_text("no placeholder here")
    argv = ["warmup", "--model", "m", "--env", "e", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=f"--template file {bad} has no"):
        main([*argv, "--template", str(bad)])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--samples", "0"], r"--samples \(0\) must be >= 1"),
        (["--keep-per-problem", "0"], r"--keep-per-problem \(0\) must be >= 1"),
        (["--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
        (["--eval-env-kwargs", "{oops"], "--eval-env-kwargs is not JSON"),
    ],
)
def test_bad_flags_are_named(tmp_path, extra, message) -> None:
    argv = ["warmup", "--model", "m", "--env", "e", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=message):
        main([*argv, *extra])


# --------------------------------------------------------------------------- selection


def _rec(pid: str, i: int, n: int, ok: bool, truncated: bool = False, text: str = ""):
    """A hand-made sample: problem ``pid``, sample ``i``, ``n`` tokens."""
    reason = "correct" if ok else "wrong"
    return WarmupSample(pid, f"plain {pid}", i, text or f"{pid}-{i}", n, ok, truncated, reason)


def test_selection_keeps_correct_untruncated_longest_first_capped_per_problem() -> None:
    records = [
        _rec("a", 0, 10, True),
        _rec("a", 1, 50, True, truncated=True),  # longest, but cut by the token limit
        _rec("a", 2, 30, True),
        _rec("a", 3, 40, False),  # wrong
        _rec("a", 4, 30, True),  # ties with sample 2: the earlier sample wins
        _rec("a", 5, 20, True),
        _rec("b", 0, 5, False),  # no correct response: contributes nothing
        _rec("c", 0, 7, True, text="same"),
        _rec("c", 1, 7, True, text="same"),  # an exact repeat is not kept twice
    ]
    examples, summary = select_longest_correct(records, keep_per_problem=2)
    assert [(e.problem_id, e.response) for e in examples] == [
        ("a", "a-2"), ("a", "a-4"), ("c", "same"),
    ]  # fmt: skip
    assert [e.response_tokens for e in examples] == [30, 30, 7]
    assert all(e.prompt == f"plain {e.problem_id}" for e in examples)
    assert [(e.num_samples, e.num_correct) for e in examples] == [(6, 4), (6, 4), (2, 2)]
    assert summary.to_dict() == {
        "num_problems": 3, "num_sampled": 9, "num_correct": 7, "num_truncated": 1,
        "num_accepted": 6, "num_kept": 3, "num_problems_kept": 2, "acceptance_rate": 6 / 9,
    }  # fmt: skip
    one, _ = select_longest_correct(records, keep_per_problem=1)
    assert [e.response for e in one] == ["a-2", "same"]
    with pytest.raises(WarmupError, match=r"--keep-per-problem \(0\)"):
        select_longest_correct(records, keep_per_problem=0)


@dataclass
class _Completion:
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class _Problem:
    id: str
    prompt: str


class _FakeEngine:
    """Answers problem k's j-th sample with a scripted text; records the prompts it saw."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate_text(self, prompts, params):
        self.prompts += prompts
        return [
            [_Completion([1] * (j + 1), f"ans {j}", "length" if j == 2 else "stop")
             for j in range(params.n)]
            for _ in prompts
        ]  # fmt: skip


class _FakeEnv:
    def problem(self, i: int) -> _Problem:
        return _Problem(f"p{i}", f"What is {i}?")

    def verify_batch(self, problems, responses, truncated):
        return [
            type("V", (), {"correct": r != "ans 1", "reason": "x"})()
            for r in responses
        ]  # fmt: skip


def test_templated_sampling_records_the_plain_prompt_and_truncation() -> None:
    engine = _FakeEngine()
    params = SamplingParams(n=3, max_tokens=3)
    records = sample_with_template(
        engine, _FakeEnv(), range(2), "Think.\n{problem}", params, batch_problems=1,
        progress=False,
    )  # fmt: skip
    assert engine.prompts == ["Think.\nWhat is 0?", "Think.\nWhat is 1?"]
    assert [(r.problem_id, r.prompt, r.sample_index) for r in records[:3]] == [
        ("p0", "What is 0?", 0), ("p0", "What is 0?", 1), ("p0", "What is 0?", 2),
    ]  # fmt: skip
    assert [(r.token_length, r.correct, r.truncated) for r in records[:3]] == [
        (1, True, False), (2, False, False), (3, True, True),
    ]  # fmt: skip
    examples, _ = select_longest_correct(records, keep_per_problem=2)
    assert [e.response for e in examples] == ["ans 0", "ans 0"]  # the truncated one is out


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer is 4.", {"planning": 0, "verification": 0, "reflection": 0, "exploration": 0}),
        # "First" and "let me" plan, "check" verifies: "let me check" counts in both
        ("First, let me check: 2+2=4.", {"planning": 2, "verification": 1, "reflection": 0,
                                          "exploration": 0}),
        # case-insensitive, whole words only: "waiter" and "checkout" are no markers
        ("WAIT. The waiter's checkout. Wait, a mistake! Alternatively, try again.",
         {"planning": 0, "verification": 0, "reflection": 3, "exploration": 2}),
        ("Step 1: plan. Step 2: verify, then double-check. Another approach: instead ...",
         {"planning": 3, "verification": 2, "reflection": 0, "exploration": 2}),
    ],
)  # fmt: skip
def test_structure_counts(text, expected) -> None:
    assert structure_counts(text) == {**expected, "total": sum(expected.values())}


def test_structure_summary_is_per_response_and_share() -> None:
    summary = structure_summary(["Wait, wait.", "The answer is 3.", "Let me verify."])
    assert summary["per_response"]["reflection"] == pytest.approx(2 / 3)
    assert summary["per_response"]["total"] == pytest.approx(4 / 3)
    assert summary["share"]["reflection"] == pytest.approx(1 / 3)
    assert summary["share"]["total"] == pytest.approx(2 / 3)
    assert structure_summary([])["per_response"]["total"] == 0.0


# --------------------------------------------------------------------------- eval env


def test_the_default_eval_env_is_the_test_split_sized_to_fit(tmp_path) -> None:
    """Arithmetic level 2 has 816 test problems, fewer than its default size 1000: without a
    "size", the eval env holds ``--eval-problems`` of them; a "size" given is kept."""
    from rllib_k15.data.warmup import WarmupSettings
    from rllib_k15.data.warmup_steps import open_eval_env
    from rllib_k15.env_factory import make_unwrapped_env

    train = {"difficulty": 2, "split": "train"}
    s = WarmupSettings("m", "k15/Arithmetic-v0", tmp_path, train, eval_problems=8)
    env, kwargs = open_eval_env(s)
    assert kwargs == {"difficulty": 2, "split": "test", "size": 8} and len(env) == 8
    sampled = make_unwrapped_env("k15/Arithmetic-v0", {**train, "size": 200})
    held_out = {env.problem(i).prompt for i in range(8)}
    assert held_out.isdisjoint(sampled.problem(i).prompt for i in range(200))
    too_big = WarmupSettings("m", "k15/Arithmetic-v0", tmp_path, train,
                             {"difficulty": 2, "split": "test", "size": 900})  # fmt: skip
    with pytest.raises(WarmupError, match="--eval-env-kwargs: env 'k15/Arithmetic-v0'.*size"):
        open_eval_env(too_big)


def test_an_env_without_splits_needs_explicit_eval_kwargs(toy_env, tmp_path, capsys) -> None:
    argv = _argv(Path("unused-model"), tmp_path / "o")
    argv.remove("--eval-env-kwargs")
    argv.remove('{"size": 3}')
    assert main(argv) == 2
    assert (
        "--eval-env-kwargs: env 'k15test/FirstLetter-v0' cannot be made" in capsys.readouterr().err
    )
    assert not (tmp_path / "o" / "warmup_samples.parquet").exists()  # failed before sampling


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def toy_env():
    from support import toy_env  # registers k15test/FirstLetter-v0 (first letter n-z is correct)

    return toy_env


@pytest.fixture(scope="module")
def eos_prone_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """tiny-random-llama, untied, with the output row of EOS pushed along the mean final
    hidden state: it ends a response after a few tokens, as a real model does, so some
    responses finish within the token cap (the random model itself practically never
    emits EOS). Saved in fp32, so the SFT's updates survive saving."""
    import torch

    from rllib_k15.engine.base import encode_chat
    from rllib_k15.models import load_hf_model, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    model = load_hf_model(tiny_model_dir, dtype="float32")
    with torch.no_grad():
        hidden = torch.cat([
            model(input_ids=torch.tensor([encode_chat(tok, f"Say a word number {i}.")]),
                  output_hidden_states=True).hidden_states[-1][0]
            for i in range(4)
        ])  # fmt: skip
        mean = hidden.mean(0)
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.clone())
        model.lm_head.weight[tok.eos_token_id] += 4.0 * mean / mean.norm()
    out = tmp_path_factory.mktemp("eos-prone-tiny")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _argv(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "warmup", "--model", str(model), "--env", "k15test/FirstLetter-v0",
        "--env-kwargs", '{"size": 4}', "--eval-env-kwargs", '{"size": 3}',
        "--problems", "4", "--samples", "4", "--max-tokens", "16", "--engine", "hf",
        "--dtype", "float32", "--epochs", "1", "--lr", "1e-3", "--batch-size", "4",
        "--eval-samples", "2", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_warmup_end_to_end_then_resumes(toy_env, eos_prone_model_dir, tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    from rllib_k15.long2short.data import read_sft_parquet

    out = tmp_path / "warmup"
    assert main(_argv(eos_prone_model_dir, out)) == 0
    first = capsys.readouterr()
    assert "skipped" not in first.out
    records, info = read_samples(out / "warmup_samples.parquet")
    assert len(records) == 16 and info["samples"] == 4 and info["template"] == REASONING_TEMPLATE
    rows = read_sft_parquet(out / "warmup_sft.parquet")
    assert rows, "the EOS-prone model should give some finished correct responses"
    # plain prompts (no template), and exactly what the selection rule picks from the samples
    assert {r.prompt for r in rows} <= {f"Say a word number {i}." for i in range(4)}
    assert rows == select_longest_correct(records, keep_per_problem=2)[0]
    by_text = {(r.problem_id, r.response): r for r in records}
    assert all(by_text[(e.problem_id, e.response)].correct for e in rows)
    assert not any(by_text[(e.problem_id, e.response)].truncated for e in rows)

    model = AutoModelForCausalLM.from_pretrained(out / "model")  # a plain HF directory
    assert model.config.vocab_size > 0
    base, warmed = _tensors(eos_prone_model_dir), _tensors(out / "model")
    assert base.keys() == warmed.keys()
    assert any(not (base[k] == warmed[k]).all() for k in base), "SFT changed no parameter"

    report = json.loads((out / "warmup_report.json").read_text())
    assert report["selection"]["num_kept"] == len(rows)
    assert report["selection"]["num_sampled"] == 16
    for which in ("base", "warmed"):
        result = report["eval"][which]["result"]
        assert result["num_problems"] == 3 and result["samples"] == 2
        assert report["eval"][which]["structure"]["per_response"].keys() >= {"total"}
    assert report["delta"]["pass_at_1"] == pytest.approx(
        report["eval"]["warmed"]["result"]["pass_at_1"]
        - report["eval"]["base"]["result"]["pass_at_1"]
    )
    md = (out / "warmup_report.md").read_text()
    assert "| warmed − base |" in md and "acceptance rate" in md

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(_argv(eos_prone_model_dir, out)) == 0
    second = capsys.readouterr().out
    for step in ("1/4] sampling", "2/4] rejection sampling", "3/4] SFT", "4/4] eval base",
                 "4/4] eval warmed", "4/4] report"):  # fmt: skip
        assert f"[{step}: skipped" in second, step
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # a redone step makes the steps that depend on it rerun; the base eval depends on none
    (out / "warmup_sft.parquet").unlink()
    assert main(_argv(eos_prone_model_dir, out)) == 0
    third = capsys.readouterr().out
    assert "[1/4] sampling: skipped" in third and "[4/4] eval base: skipped" in third
    for step in ("[3/4] SFT", "[4/4] eval warmed", "[4/4] report"):
        assert f"{step}: skipped" not in third and step in third, step
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns > stamps[
        out / "model" / "model.safetensors"
    ]
    assert not list(out.glob(".*tmp*")), "a temp output was left behind"


def test_nothing_kept_stops_before_sft_and_other_settings_are_refused(
    toy_env, tiny_model_dir, tmp_path, capsys
) -> None:
    """The random model practically never emits EOS: every response is cut at 4 tokens."""
    out = tmp_path / "warmup"
    argv = _argv(tiny_model_dir, out, "--max-tokens", "4")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "kept 0 of 16 responses" in err and "stopping before SFT" in err
    assert pq.read_table(out / "warmup_sft.parquet").num_rows == 0
    assert not (out / "model").exists() and not (out / "warmup_report.json").exists()

    assert main([*argv, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "warmup_samples.parquet was made with other settings" in err
    assert "samples: 4 -> 2" in err
