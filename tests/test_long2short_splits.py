"""The long2short study on disjoint splits (experiments/long2short_splits.py): the parents'
SFT answers are right and differ only in length, the study's problems never meet its test
problems, the two RL arms differ only in their objective, and the report pairs by seed."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import k15_envs  # noqa: F401  (registers the envs)
import pytest
from support.paths import load_experiment


@pytest.fixture(scope="module")
def study():
    return load_experiment("long2short_splits")


def test_long_and_short_answers_are_correct_and_only_the_long_one_shows_its_work(study) -> None:
    env = gym.make(study.ENV_ID, **study.SFT_ENV).unwrapped
    carried = 0
    for i in range(len(env)):
        problem = env.problem(i)
        a, b = study.operands(problem.metadata["expression"])
        forms = [study.worked_solution(a, b, v) for v in study.VERBOSITY]
        short = study.direct_answer(a, b)
        for long in forms:
            assert env.verify(problem, long).reward == 1.0, long
            assert "Ones:" in long and "Tens:" in long
        assert env.verify(problem, short).reward == 1.0 and "Ones" not in short
        assert [len(f) for f in forms] == sorted(len(f) for f in forms)  # more verbose, longer
        assert len(short) < len(forms[0])
        carried += "carry 1" in forms[0]
    assert 0 < carried < len(env)  # both kinds of column sums are in the data
    levels = [study.verbosity_of(i) for i in range(len(env))]
    assert levels == [study.verbosity_of(i) for i in range(len(env))]  # seeded per problem
    assert {levels.count(v) for v in study.VERBOSITY} <= set(range(40, 90))  # an even mix
    assert "Check: 125 - 67 = 58" in study.worked_solution(58, 67, 3)
    assert study.worked_solution(58, 67).splitlines()[1:3] == [
        "Ones: 8 + 7 = 15. Write 5, carry 1.",
        "Tens: 5 + 6 + 1 = 12. Write 12.",
    ]


def test_operands_refuse_anything_but_a_two_term_sum(study) -> None:
    assert study.operands("47 + 25") == (47, 25)
    for bad in ("47 - 25", "1 + 2 + 3", "x + 1"):
        with pytest.raises(ValueError, match="not a two-term addition"):
            study.operands(bad)


def test_no_training_problem_of_the_study_is_a_test_problem(study) -> None:
    def prompts(kwargs: dict) -> set[str]:
        env = gym.make(study.ENV_ID, **kwargs).unwrapped
        return {env.problem(i).prompt for i in range(len(env))}

    trained = prompts(study.SFT_ENV) | prompts(study.L2S_ENV)
    assert len(trained) > 300
    assert not trained & prompts({**study.EVAL_ENV, "size": 128})


def test_rl_arms_share_start_problems_and_budget_and_differ_in_objective(study) -> None:
    from rllib_k15.runs.experiment import load_experiment_file

    l2s, o1 = (load_experiment_file(study.ROOT / study.RL_CONFIGS[name])
               for name in ("l2s_rl", "o1_pruner"))  # fmt: skip
    assert l2s["sections"]["environment"] == o1["sections"]["environment"]
    env_config = {k: v for k, v in study.L2S_ENV.items() if k != "split"}
    assert l2s["sections"]["environment"]["env_config"] == env_config  # the trainer adds split
    ours, theirs = l2s["sections"]["training"], o1["sections"]["training"]
    shared = ("hf_model", "samples_per_problem", "problems_per_iteration", "minibatch_size",
              "micro_batch_size", "lr", "eval_interval")  # fmt: skip
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert ours["length_penalty_warmup_iters"] == 0 and ours["max_response_tokens"] == 96
    assert theirs["loss"] == "o1_pruner" and theirs["max_response_tokens"] == study.SAMPLE_TOKENS
    assert l2s["stop"] == o1["stop"]


def _row(label: str, seed: int, pass_at_1: float, tokens: float) -> dict:
    return {"label": label, "training_seed": seed, "pass_at_1": pass_at_1,
            "mean_tokens": tokens, "pass_at_1_low": pass_at_1 - 0.1,
            "pass_at_1_high": pass_at_1 + 0.1}  # fmt: skip


def test_report_pairs_methods_by_training_seed(tmp_path: Path) -> None:
    report = load_experiment("long2short_report")
    rows = [_row("long CoT (start)", 0, 0.5, 80.0)]
    rows += [_row("long2short RL", s, p, 40.0 + s) for s, p in enumerate((0.4, 0.5, 0.6))]
    rows += [_row("DPO", s, p, 30.0) for s, p in enumerate((0.3, 0.45, 0.5))]
    results = tmp_path / "eval.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.write_report(results, tmp_path)

    grouped = report.by_label(rows)
    diff, low, high = report.paired(grouped["DPO"], grouped["long2short RL"], "pass_at_1")
    assert diff == pytest.approx(-0.25 / 3) and low < diff < high
    # pairing by seed removes the seed-to-seed spread the two arms share
    unpaired = report.summary("DPO", grouped["DPO"])
    assert high - low < unpaired.pass_at_1_high - unpaired.pass_at_1_low
    assert report.paired(grouped["long CoT (start)"], grouped["DPO"], "pass_at_1") is None
    table = (tmp_path / "table.md").read_text()
    assert "| DPO | 0, 1, 2 | 41.7" in table and "| 0.38 |" in table  # 30 / 80 tokens
    assert "| long CoT (start) | 0 | 50.0 [40.0, 60.0] | 80.0 | 1.00 | — | — |" in table
    assert (tmp_path / "token_efficiency.png").stat().st_size > 0
    with pytest.raises(ValueError, match="two evaluations of 'DPO' at training seed 1"):
        report.by_label([*rows, _row("DPO", 1, 0.1, 1.0)])


def test_dpo_pairs_are_capped_per_problem_with_a_seeded_choice(study, tmp_path: Path) -> None:
    from rllib_k15.long2short.data import read_pairs_parquet, write_pairs_parquet
    from rllib_k15.long2short.selection import PreferencePair

    fields = PreferencePair.__dataclass_fields__
    pairs = [
        PreferencePair(**{name: _pair_value(name, problem, k) for name in fields})
        for problem in ("p0", "p1") for k in range(4)
    ]  # fmt: skip
    write_pairs_parquet(pairs, tmp_path / "pairs.parquet")
    picks = []
    for seed in (0, 0, 1):
        study.cap_pairs(tmp_path / "pairs.parquet", tmp_path / "capped.parquet", 1, seed)
        kept = read_pairs_parquet(tmp_path / "capped.parquet")
        assert sorted(p.problem_id for p in kept) == ["p0", "p1"]
        picks.append([p.rejected for p in kept])
    assert picks[0] == picks[1]  # the same seed keeps the same pairs
    study.cap_pairs(tmp_path / "pairs.parquet", tmp_path / "all.parquet", 9, 0)
    assert len(read_pairs_parquet(tmp_path / "all.parquet")) == len(pairs)


def _pair_value(name: str, problem: str, k: int):
    if name == "problem_id":
        return problem
    if name in ("prompt", "chosen", "rejected"):
        return f"{name} {problem} {k}"
    if name == "rejected_correct":
        return k % 2 == 0
    return 10 + k  # token counts


def test_each_written_form_is_recognised_in_a_sample(study, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    responses = [study.worked_solution(47, 38, v) for v in study.VERBOSITY]
    assert [study.written_form(r) for r in responses] == list(study.VERBOSITY)
    assert study.written_form(study.direct_answer(47, 38)) == 0
    table = {"response": responses * 2, "correct": [True, False] * 4,
             "token_length": [10, 20, 30, 40] * 2}  # fmt: skip
    pq.write_table(pa.table(table), tmp_path / "samples.parquet")
    study.form_profile([tmp_path / "samples.parquet"], tmp_path)
    profile = (tmp_path / "form_profile.md").read_text()
    assert "| 0 terse | 2 | 0.25 | 1.00 | 10.0 |" in profile
    assert "| 3 + check | 2 | 0.25 | 0.00 | 40.0 |" in profile
