"""The CLI subcommands (long2short merge/shortest-rs/dpo-pairs, sft, dpo), end to end on
tiny models, with a scripted engine and env standing in for vLLM and k15_envs."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from support.l2s_tiny import save_tiny
from transformers import AutoModelForCausalLM

from rllib_k15.commands import dpo as dpo_cmd
from rllib_k15.commands import long2short as l2s_cmd
from rllib_k15.commands import sft as sft_cmd
from rllib_k15.long2short.data import (
    read_pairs_parquet,
    read_parquet_info,
    read_samples_parquet,
    read_sft_parquet,
)


def k15(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="k15")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (l2s_cmd, sft_cmd, dpo_cmd):
        module.add_parser(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


# --- a scripted engine and env (the real ones are tested in their own folders) ----------


@dataclass
class FakeCompletion:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


@dataclass
class FakeProblem:
    id: str
    prompt: str
    answer: str


# per problem: the responses the "model" gives, in sample order
SCRIPT = {
    "1+1": ["The answer is 2", "2", "Let me think step by step... 1+1 is 2", "3"],
    "2+2": ["5", "I am not sure, maybe 5", "6", "7"],  # nothing correct
    "3+3": ["After careful thought, 6", "6", "Hmm, 7", "6!"],
}


class FakeEnv:
    problems = [FakeProblem(f"add-{k}", k, str(eval(k))) for k in SCRIPT]

    def __len__(self) -> int:
        return len(self.problems)

    def problem(self, i: int) -> FakeProblem:
        return self.problems[i]

    def verify_batch(self, problems, responses, truncated=None):
        assert truncated is not None and len(truncated) == len(responses)
        return [
            argparse.Namespace(correct=r.rstrip("!").endswith(p.answer) and not t)
            for p, r, t in zip(problems, responses, truncated, strict=True)
        ]


class FakeEngine:
    def __init__(self, model, **kwargs):
        self.kwargs = kwargs

    def generate_text(self, user_messages, params):
        return [
            [
                FakeCompletion(list(range(len(text))), [0.0] * len(text), text, "stop")
                for text in SCRIPT[m][: params.n]
            ]
            for m in user_messages
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.fixture
def fake_rollouts(monkeypatch):
    import rllib_k15.engine
    import rllib_k15.env_factory

    monkeypatch.setattr(
        rllib_k15.engine, "make_engine", lambda kind, model, **kw: FakeEngine(model)
    )
    monkeypatch.setattr(rllib_k15.env_factory, "make_unwrapped_env", lambda env_id, kw: FakeEnv())


# --- tests -------------------------------------------------------------------------------


def test_k15_main_discovers_the_commands():
    cli = pytest.importorskip("rllib_k15.commands.k15")
    parser = cli.build_parser()
    merge = parser.parse_args(["long2short", "merge", "L", "S", "--out", "O"])
    assert merge.func is l2s_cmd.run_merge and merge.alpha == 0.5
    pairs = parser.parse_args(["long2short", "dpo-pairs", "--from-samples", "x", "--out", "y"])
    assert pairs.func is l2s_cmd.run_dpo_pairs and pairs.length_ratio == 1.5
    assert (
        parser.parse_args(["sft", "--model", "m", "--data", "d", "--out", "o"]).func is sft_cmd.run
    )
    dpo = parser.parse_args(["dpo", "--model", "m", "--pairs", "p", "--out", "o"])
    assert dpo.func is dpo_cmd.run and dpo.beta == 0.1


def test_merge_command(tmp_path, capsys):
    long_dir, short_dir = save_tiny(tmp_path / "l", seed=1), save_tiny(tmp_path / "s", seed=2)
    assert (
        k15(
            "long2short",
            "merge",
            str(long_dir),
            str(short_dir),
            "--out",
            str(tmp_path / "m"),
            "--alpha",
            "1.5",
        )
        == 0
    )
    assert "alpha=1.5" in capsys.readouterr().out
    name = "model.norm.weight"
    with (
        safe_open(long_dir / "model.safetensors", "pt") as fl,
        safe_open(short_dir / "model.safetensors", "pt") as fs,
        safe_open(tmp_path / "m" / "model.safetensors", "pt") as fm,
    ):
        long, short, merged = fl.get_tensor(name), fs.get_tensor(name), fm.get_tensor(name)
    torch.testing.assert_close(merged, short + 1.5 * (long - short))
    AutoModelForCausalLM.from_pretrained(tmp_path / "m")  # a loadable HF directory


def test_merge_command_reports_mismatch(tmp_path, capsys):
    long_dir = save_tiny(tmp_path / "l", seed=1)
    short_dir = save_tiny(tmp_path / "s", seed=2, hidden_size=48)
    assert (
        k15("long2short", "merge", str(long_dir), str(short_dir), "--out", str(tmp_path / "m")) == 2
    )
    assert "`hidden_size` is 32 in LONG but 48 in SHORT" in capsys.readouterr().err


def test_shortest_rs_and_dpo_pairs_commands(tmp_path, fake_rollouts):
    sft_path, pairs_path, raw = (
        tmp_path / "sft.parquet",
        tmp_path / "pairs.parquet",
        tmp_path / "raw.parquet",
    )
    common = ["--model", "m", "--env", "k15/Fake-v0", "--samples", "4", "--no-progress"]
    assert (
        k15(
            "long2short", "shortest-rs", *common, "--out", str(sft_path), "--save-samples", str(raw)
        )
        == 0
    )
    sft = read_sft_parquet(sft_path)
    assert [(e.problem_id, e.response, e.response_tokens) for e in sft] == [
        ("add-1+1", "2", 1),
        ("add-3+3", "6", 1),
    ]
    info = read_parquet_info(sft_path)
    assert info["problems_without_correct"] == ["add-2+2"] and info["num_without_correct"] == 1
    assert info["samples_per_problem"] == 4 and info["mean_tokens_selected"] == 1.0
    assert len(read_samples_parquet(raw)) == 3

    # DPO pairs from the saved samples, no sampling. Token length = characters here.
    # 1+1: chosen "2" (1); rejected: the longer correct ones; "3" is wrong but not longer.
    # 3+3: chosen "6" (1); rejected: every longer one ("6!" has 2 >= 1.5 x 1 tokens).
    assert (
        k15(
            "long2short",
            "dpo-pairs",
            "--from-samples",
            str(raw),
            "--out",
            str(pairs_path),
            "--no-progress",
        )
        == 0
    )
    pairs = read_pairs_parquet(pairs_path)
    got = {(p.problem_id, p.rejected, p.rejected_correct) for p in pairs}
    assert got == {
        ("add-1+1", "The answer is 2", True),
        ("add-1+1", "Let me think step by step... 1+1 is 2", True),
        ("add-3+3", "After careful thought, 6", True),
        ("add-3+3", "Hmm, 7", False),
        ("add-3+3", "6!", True),  # 2 tokens >= 1.5 x 1
    }
    pinfo = read_parquet_info(pairs_path)
    assert pinfo["num_pairs"] == 5 and pinfo["problems_without_correct"] == ["add-2+2"]
    assert pinfo["model"] == "m"  # provenance carried over from the samples file


def test_o1_reference_command_writes_the_learners_statistics(tmp_path, fake_rollouts, capsys):
    """Per-problem mean tokens and accuracy over ALL K samples, keyed by env index, from a
    fresh sampling run and, identically, from a saved samples file."""
    from rllib_k15.algorithm.o1_reference import ReferenceStats

    out, raw = tmp_path / "ref.json", tmp_path / "raw.parquet"
    common = ["--model", "m", "--env", "k15/Fake-v0", "--samples", "4", "--no-progress"]
    assert k15("long2short", "o1-reference", *common, "--out", str(out),
               "--save-samples", str(raw)) == 0  # fmt: skip
    stats = ReferenceStats.load(out)
    # token length = characters here; 1+1: 15, 1, 37, 1 tokens, 3 of 4 correct
    assert stats.mean_length == {0: 13.5, 1: 6.25, 2: 8.25}
    assert stats.accuracy == {0: 0.75, 1: 0.0, 2: 0.75}
    assert stats.samples == 4 and stats.env == "k15/Fake-v0" and stats.model == "m"
    assert "3 problems x 4 samples" in capsys.readouterr().out
    again = tmp_path / "again.json"
    assert k15("long2short", "o1-reference", "--from-samples", str(raw), "--out", str(again)) == 0
    assert ReferenceStats.load(again) == stats


def test_sampling_commands_need_model_and_env(tmp_path, capsys):
    assert k15("long2short", "shortest-rs", "--out", str(tmp_path / "x.parquet")) == 2
    assert "--model and --env are required" in capsys.readouterr().err


@pytest.fixture
def bf16_model_dir(tmp_path):
    path = save_tiny(tmp_path / "base", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path).to(torch.bfloat16)
    model.save_pretrained(path)  # the input checkpoint is bf16, like the registry's models
    return path


def test_sft_command_trains_and_saves_plain_hf_dir(tmp_path, bf16_model_dir, fake_rollouts):
    data = tmp_path / "sft.parquet"
    assert (
        k15(
            "long2short",
            "shortest-rs",
            "--model",
            "m",
            "--env",
            "e",
            "--out",
            str(data),
            "--no-progress",
        )
        == 0
    )
    out = tmp_path / "sft-out"
    assert (
        k15(
            "sft",
            "--model",
            str(bf16_model_dir),
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--batch-size",
            "2",
            "--no-progress",
        )
        == 0
    )
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all("sft/loss" in s for s in steps)
    summary = json.loads((out / "k15_sft.json").read_text())
    losses = summary["metrics"]["sft/epoch_losses"]
    assert losses[-1] < losses[0]
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(bf16_model_dir)
    assert trained.dtype == torch.bfloat16 and summary["saved_dtype"] == "bfloat16"
    assert not torch.equal(trained.lm_head.weight, base.lm_head.weight)
    assert (out / "tokenizer.json").is_file()


def test_dpo_command_trains(tmp_path, bf16_model_dir, fake_rollouts):
    pairs = tmp_path / "pairs.parquet"
    assert (
        k15(
            "long2short",
            "dpo-pairs",
            "--model",
            "m",
            "--env",
            "e",
            "--out",
            str(pairs),
            "--no-progress",
        )
        == 0
    )
    out = tmp_path / "dpo-out"
    assert (
        k15(
            "dpo",
            "--model",
            str(bf16_model_dir),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--beta",
            "0.1",
            "--epochs",
            "3",
            "--lr",
            "2e-3",
            "--batch-size",
            "5",
            "--save-dtype",
            "float32",
            "--no-progress",
        )
        == 0
    )
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 3
    assert steps[-1]["dpo/loss"] < steps[0]["dpo/loss"]
    assert steps[-1]["dpo/rewards_margin"] > 0
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float32


def test_training_commands_report_missing_columns(tmp_path, bf16_model_dir, capsys):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["q"], "answer": ["a"]}), bad)
    assert (
        k15("sft", "--model", str(bf16_model_dir), "--data", str(bad), "--out", str(tmp_path / "o"))
        == 2
    )
    assert "missing column(s)" in capsys.readouterr().err
    assert (
        k15(
            "dpo", "--model", str(bf16_model_dir), "--pairs", str(bad), "--out", str(tmp_path / "o")
        )
        == 2
    )
    assert "missing column(s) ['problem_id', 'chosen'" in capsys.readouterr().err


class ParityEnv(FakeEnv):
    """Grades by the parity of the response's length: a random model gets about half."""

    def verify_batch(self, problems, responses, truncated=None):
        return [argparse.Namespace(correct=len(r) % 2 == 0) for r in responses]


def test_shortest_rs_with_the_real_hf_engine(tmp_path, monkeypatch):
    import rllib_k15.env_factory

    monkeypatch.setattr(rllib_k15.env_factory, "make_unwrapped_env", lambda env_id, kw: ParityEnv())
    model_dir = save_tiny(tmp_path / "tiny", seed=0)
    outs = []
    for run in ("a", "b"):
        out, raw = tmp_path / f"{run}.parquet", tmp_path / f"{run}-raw.parquet"
        argv = ["--model", str(model_dir), "--env", "e", "--engine", "hf", "--samples", "4"]
        argv += ["--max-tokens", "12", "--seed", "3", "--no-progress", "--save-samples", str(raw)]
        assert k15("long2short", "shortest-rs", *argv, "--out", str(out)) == 0
        outs.append((read_sft_parquet(out), read_samples_parquet(raw)))
    (sft, groups), (sft_again, _) = outs
    assert sft == sft_again  # engine-wide seed: reproducible selection
    assert sft, "the scripted parity verifier should accept some random responses"
    by_id = {g.problem_id: g for g in groups}
    assert all(len(g.samples) == 4 for g in groups)
    assert all(1 <= s.token_length <= 12 for g in groups for s in g.samples)
    for example in sft:  # the kept response is the shortest correct of its group
        correct = [s for s in by_id[example.problem_id].samples if s.correct]
        assert example.response_tokens == min(s.token_length for s in correct)
