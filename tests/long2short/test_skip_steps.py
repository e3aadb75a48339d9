"""k15 long2short skip-steps: the solution generator, the step parser, the data mixer, the
acceptance rule, and the rounds end to end on a tiny random Llama with the HF engine."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from support.l2s_tiny import save_tiny

from rllib_k15.engine.base import Completion
from rllib_k15.long2short.selection import ProblemSamples, Sample
from rllib_k15.long2short.skip_steps import (
    Chain,
    SkipStepsError,
    StepSolution,
    TrainExample,
    accept_solutions,
    chain_of,
    chain_solution,
    count_steps,
    merge_solutions,
    mix_data,
    parse_chain,
    step_groups,
    steps_prompt,
    steps_valid,
    summarize_answers,
)
from rllib_k15.long2short.skip_steps_run import SkipStepsSettings, run_skip_steps

CONFIG = {"min_terms": 3, "max_terms": 5, "min_digits": 1, "max_digits": 1}


# --- the solution generator --------------------------------------------------------------
@pytest.mark.parametrize(
    "num_ops,steps,sizes",
    [
        (4, 4, [1, 1, 1, 1]),  # full: one operation per step
        (4, 3, [2, 1, 1]),  # larger groups first
        (4, 2, [2, 2]),
        (4, 1, [4]),  # everything in one step
        (5, 2, [3, 2]),
        (2, 1, [2]),
    ],
)
def test_step_groups_split_the_operations_as_evenly_as_possible(num_ops, steps, sizes):
    assert step_groups(num_ops, steps) == sizes


@pytest.mark.parametrize("steps", [0, 5])
def test_step_groups_rejects_impossible_step_counts(steps):
    with pytest.raises(ValueError, match="must be in"):
        step_groups(4, steps)


def test_chain_solution_exact_text_full_and_merged():
    chain = parse_chain("2 - 9 + 9 - 2 - 5")
    assert chain == Chain((2, 9, 9, 2, 5), ("-", "+", "-", "-"))
    assert chain_solution(chain, 4) == (
        "Step 1: 2 - 9 = -7\nStep 2: -7 + 9 = 2\nStep 3: 2 - 2 = 0\nStep 4: 0 - 5 = -5\n\\boxed{-5}"
    )
    assert chain_solution(chain, 2) == "Step 1: 2 - 9 + 9 = 2\nStep 2: 2 - 2 - 5 = -5\n\\boxed{-5}"
    assert chain_solution(chain, 1) == "Step 1: 2 - 9 + 9 - 2 - 5 = -5\n\\boxed{-5}"


@pytest.mark.parametrize(
    "expression", ["3 + 4 + 5", "2 - 9 + 9 - 2 - 5", "7 - 8", "10 + 3 - 4 + 22 - 1 + 6"]
)
def test_chain_solution_at_every_step_count_is_valid_and_merges_consecutive_steps(expression):
    chain = parse_chain(expression)
    full = chain_solution(chain, chain.full_steps)
    full_values = [int(line.rsplit("= ", 1)[1]) for line in full.splitlines()[:-1]]
    for steps in range(1, chain.full_steps + 1):
        text = chain_solution(chain, steps)
        assert count_steps(text) == steps
        assert steps_valid(text)
        assert text.endswith(f"\\boxed{{{chain.value()}}}")
        values = [int(line.rsplit("= ", 1)[1]) for line in text.splitlines()[:-1]]
        ends = [sum(step_groups(chain.full_steps, steps)[: j + 1]) for j in range(steps)]
        assert values == [full_values[e - 1] for e in ends]  # each step ends on a partial sum


def test_env_problems_parse_and_every_step_count_is_graded_correct_by_the_env():
    from rllib_k15.env_factory import make_unwrapped_env

    kwargs = {"dataset": "chain_sum", "size": 6, "split": "train",
              "config": {**CONFIG, "max_digits": 2, "allow_negation": True}}  # fmt: skip
    env = make_unwrapped_env("k15/ReasoningGym-v0", kwargs)
    try:
        problems = [env.problem(i) for i in range(len(env))]
        chains = [chain_of(p) for p in problems]
        assert [str(c.value()) for c in chains] == [p.answer for p in problems]
        pairs = [(p, chain_solution(c, s)) for p, c in zip(problems, chains)
                 for s in range(1, c.full_steps + 1)]  # fmt: skip
        verdicts = env.verify_batch([p for p, _ in pairs], [text for _, text in pairs])
        assert all(v.correct for v in verdicts)
        wrong = env.verify_batch(problems[:1], [chain_solution(chains[0], 1).replace("{", "{1")])
        assert not wrong[0].correct  # the grader does look at the boxed value
    finally:
        env.close()


@pytest.mark.parametrize("bad", ["3", "3 +", "3 * 4", "3 + x", "+ 3 4"])
def test_parse_chain_rejects_what_is_not_a_chain(bad):
    with pytest.raises(ValueError):
        parse_chain(bad)


# --- the step parser ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,steps,valid",
    [
        ("Step 1: 2 + 3 = 5\n\\boxed{5}", 1, True),
        ("Step 1: 2 + 3 = 5\nStep 2: 5 - 7 = -2\n\\boxed{-2}", 2, True),
        ("  Step 2 : 2 + 3 = 5\nStep 1: 5 + 1 = 6", 2, True),  # indented, any numbering
        ("Step 1: 2 + 3 = 6\n\\boxed{6}", 1, False),  # wrong sum
        ("Step 1: 2 + 3\n\\boxed{5}", 1, False),  # no "= result"
        ("Step 1: two plus three = 5", 1, False),  # not arithmetic
        ("2 + 3 = 5\n\\boxed{5}", 0, False),  # no step line
        ("First, Step 1: 2 + 3 = 5", 0, False),  # "Step" must start the line
        ("", 0, False),
    ],
)
def test_count_steps_and_steps_valid(text, steps, valid):
    assert count_steps(text) == steps
    assert steps_valid(text) is valid


def test_steps_prompt_asks_for_the_count():
    assert steps_prompt("Q?", 3) == "Q?\nSolve in 3 steps."
    assert steps_prompt("Q?", 1) == "Q?\nSolve in 1 step."


# --- the data mixer ----------------------------------------------------------------------
def _sol(pid: str, steps: int, origin: str, response: str | None = None) -> StepSolution:
    return StepSolution(pid, f"prompt {pid}", response or f"{pid}/{steps}/{origin}", steps, 3,
                        origin)  # fmt: skip


def test_merge_solutions_keeps_the_first_per_problem_and_step_count():
    merged = merge_solutions([_sol("a", 3, "full")], [_sol("a", 2, "round1"), _sol("b", 3, "full")],
                             [_sol("a", 2, "round2"), _sol("a", 1, "round2")])  # fmt: skip
    assert [(s.problem_id, s.steps, s.origin) for s in merged] == [
        ("a", 3, "full"), ("a", 2, "round1"), ("b", 3, "full"), ("a", 1, "round2"),
    ]  # fmt: skip


def test_mix_data_gives_controlled_and_plain_views_warm_only_controlled():
    originals = [_sol("a", 3, "full"), _sol("b", 3, "full")]
    accepted = [_sol("a", 1, "round1"), _sol("a", 3, "round1")]  # the 2nd duplicates a full one
    warm = [_sol("b", 2, "warm")]
    data = mix_data(originals, accepted, warm)
    assert data == [
        TrainExample("prompt a\nSolve in 3 steps.", "a/3/full"),
        TrainExample("prompt b\nSolve in 3 steps.", "b/3/full"),
        TrainExample("prompt a\nSolve in 1 step.", "a/1/round1"),
        TrainExample("prompt b\nSolve in 2 steps.", "b/2/warm"),
        TrainExample("prompt a", "a/3/full"),
        TrainExample("prompt b", "b/3/full"),
        TrainExample("prompt a", "a/1/round1"),
    ]
    assert mix_data(originals) == [data[0], data[1], data[4], data[5]]


# --- the acceptance rule -----------------------------------------------------------------
def test_accept_solutions_needs_correct_exact_count_and_valid_steps():
    full = StepSolution("p", "Q", "...", 3, 3, "full")
    chain = parse_chain("1 + 2 + 3 + 4")
    two, one = chain_solution(chain, 2), chain_solution(chain, 1)
    bad_sum = "Step 1: 1 + 2 + 3 = 7\nStep 2: 7 + 3 = 10\n\\boxed{10}"
    requests = [(full, 2), (full, 2), (full, 1), (full, 2)]
    groups = [
        ProblemSamples("p@2", "", [Sample(one, 9, True), Sample(two, 9, True)]),  # 2nd fits
        ProblemSamples("p@2", "", [Sample(two, 9, False)]),  # graded wrong
        ProblemSamples("p@1", "", [Sample(two, 9, True)]),  # 2 steps for a 1-step request
        ProblemSamples("p@2", "", [Sample(bad_sum, 9, True)]),  # a step's sum is wrong
    ]
    accepted, stats = accept_solutions(requests, groups, "round1")
    assert [(a.steps, a.response, a.origin) for a in accepted] == [(2, two, "round1")]
    assert stats["by_steps_skipped"] == {
        "1": {"requests": 3, "correct": 3, "step_count_matched": 3, "accepted": 1},
        "2": {"requests": 1, "correct": 1, "step_count_matched": 0, "accepted": 0},
    }
    unchecked, _ = accept_solutions(requests, groups, "round1", check_arithmetic=False)
    assert [a.response for a in unchecked] == [two, bad_sum]


def test_test_summary():
    chain = parse_chain("1 + 2 + 3")
    groups = [
        ProblemSamples("a", "", [Sample(chain_solution(chain, 2), 20, True)]),
        ProblemSamples("b", "", [Sample(chain_solution(chain, 1), 10, True)]),
        ProblemSamples("c", "", [Sample("no idea", 30, False)]),
    ]
    summary = summarize_answers(groups)
    assert summary["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["mean_steps_correct"] == 1.5
    assert summary["steps_histogram_correct"] == {"1": 1, "2": 1}
    assert summary["mean_tokens"] == 20 and summary["mean_tokens_correct"] == 15


# --- the rounds --------------------------------------------------------------------------
class ScriptedEngine:
    """Answers like a model that has learned the task: the plain prompt gets the full
    solution, "Solve in k steps." gets a k-step one when k is even and a (k+1)-step one
    otherwise (so only even requests are accepted)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def generate_text(self, prompts, params):
        out = []
        for prompt in prompts:
            chain = parse_chain(re.search(r"problem: (.*?) =", prompt).group(1))
            asked = re.search(r"Solve in (\d+) step", prompt)
            k = chain.full_steps if asked is None else int(asked.group(1))
            k = k if k % 2 == 0 or k == chain.full_steps else k + 1
            text = chain_solution(chain, k)
            out.append([Completion(list(range(len(text) // 4)), [], text, "stop")] * params.n)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _settings(tmp_path, **kw) -> SkipStepsSettings:
    """A tiny byte-level random Llama (fast on a busy CPU) on 6 train / 3 test chain sums."""
    model = tmp_path / "base"
    if not model.exists():
        save_tiny(model, seed=0, max_position_embeddings=512)
    sft = {"epochs": 1, "lr": 2e-3, "batch_size": 8, "max_length": 512}
    base = dict(model=str(model), out=str(tmp_path / "out"), config=CONFIG, num_train=6,
                num_test=3, rounds=1, max_tokens=24, engine="hf", sft=sft, save_dtype="float32",
                progress=False)  # fmt: skip
    return SkipStepsSettings(**{**base, **kw})


@pytest.mark.slow
def test_rounds_mix_accepted_shorter_solutions_into_the_next_round(tmp_path):
    from rllib_k15.env_factory import make_unwrapped_env

    settings = _settings(tmp_path)
    report = run_skip_steps(settings, engine_factory=ScriptedEngine, log=lambda _: None)
    env = make_unwrapped_env("k15/ReasoningGym-v0", settings.env_kwargs("train"))
    full = [chain_of(env.problem(i)).full_steps for i in range(len(env))]
    env.close()
    r0, r1 = report["rounds"]
    assert r0["test"]["accuracy"] == 1.0
    assert r0["test"]["mean_steps_correct"] > 1  # the plain prompt gets the full solution
    assert r0["generation"]["requests"] == sum(n - 1 for n in full)
    assert r0["generation"]["accepted"] == sum(k % 2 == 0 for n in full for k in range(1, n))
    assert r0["generation"]["accepted"] > 0
    # round 1 trains on the originals (2 views) plus every accepted solution (2 views)
    assert r1["skipped_solutions"] == r0["generation"]["accepted"]
    assert r1["train_examples"] == r0["train_examples"] + 2 * r0["generation"]["accepted"]
    stored = json.loads((tmp_path / "out/rounds/r0/round.json").read_text())
    assert all(a["steps"] % 2 == 0 and a["steps"] < a["full_steps"] for a in stored["accepted"])


@pytest.mark.slow
def test_skip_steps_end_to_end_trains_saves_and_resumes(tmp_path):
    from rllib_k15.long2short.sft import SFT_EPOCH_LOSSES
    from rllib_k15.models import load_hf_model

    logs: list[str] = []
    sft = {"epochs": 3, "lr": 1e-2, "batch_size": 8, "max_length": 512}
    settings = _settings(tmp_path, num_train=4, num_test=2, max_tokens=16, sft=sft)
    report = run_skip_steps(settings, log=logs.append)
    out = tmp_path / "out"
    trained = load_hf_model(out, dtype="float32").state_dict()
    base = load_hf_model(tmp_path / "base", dtype="float32").state_dict()
    assert sum(not torch.equal(trained[k], base[k]) for k in base) == len(base)
    losses = report["rounds"][0]["sft"][SFT_EPOCH_LOSSES]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.9 * losses[0], losses
    assert {"accuracy", "mean_steps_correct", "mean_tokens"} <= set(report["rounds"][1]["test"])
    assert (out / "skip_steps.png").stat().st_size > 5000
    assert json.loads((out / "report.json").read_text())["rounds"] == report["rounds"]
    logs.clear()
    again = run_skip_steps(settings, log=logs.append)  # same settings: nothing is retrained
    assert sum("skipped" in line for line in logs) == 2 and again["rounds"] == report["rounds"]
    with pytest.raises(SkipStepsError, match="other settings"):
        run_skip_steps(dataclasses.replace(settings, sft={**sft, "lr": 1e-3}), log=logs.append)


def test_cli_rejects_bad_flags_naming_them(tmp_path, capsys):
    from rllib_k15.commands.k15 import main

    base = ["long2short", "skip-steps", "--model", "m", "--out", str(tmp_path)]
    for extra, flag in ((["--num-train", "0"], "--num-train"), (["--rounds", "-1"], "--rounds"),
                        (["--config", "[1]"], "--config"), (["--config", "{"], "--config"),
                        (["--samples", "4"], "--temperature")):  # fmt: skip
        with pytest.raises(SystemExit, match=flag):
            main(base + extra)


def test_a_non_chain_sum_env_config_is_a_clear_error(tmp_path, capsys):
    from rllib_k15.commands.k15 import main

    argv = ["long2short", "skip-steps", "--model", "tiny-random-llama", "--out", str(tmp_path),
            "--config", '{"no_such_field": 1}', "--engine", "hf"]  # fmt: skip
    assert main(argv) == 2
    assert "--config" in capsys.readouterr().err
