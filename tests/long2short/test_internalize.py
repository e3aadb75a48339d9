"""k15 long2short internalize: the CoT generator and split, the removal schedule, the
smoothing distribution, front removal, the optimiser-reset points, and a tiny end-to-end run
(with an interrupted-and-resumed twin that must end with the very same weights)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from support.l2s_tiny import save_tiny, tiny_model

from rllib_k15.long2short.internalize import (
    Encoded,
    InternalizeError,
    MulProblem,
    RemovalLoss,
    ResettableAdamW,
    final_answer,
    generate_problems,
    multiplication_cot,
    removal_epochs,
    removal_schedule,
    remove_front,
    reset_steps,
    sample_offsets,
    smoothing_pmf,
    write_problems_jsonl,
)
from rllib_k15.long2short.internalize_run import InternalizeSettings, run_internalize


# --- data --------------------------------------------------------------------------------
def test_multiplication_cot_partial_products_then_running_sums():
    assert multiplication_cot(47, 86) == "47*6=282 47*80=3760 282+3760=4042"
    assert multiplication_cot(123, 405) == (
        "123*5=615 123*0=0 123*400=49200 615+0=615 615+49200=49815"
    )


@pytest.mark.parametrize("a,b", [(10, 10), (99, 99), (305, 7002), (9999, 1001), (12, 345)])
def test_multiplication_cot_ends_on_the_product(a, b):
    parts = multiplication_cot(a, b).split()
    assert len(parts) == 2 * len(str(b)) - 1
    assert parts[-1].rsplit("=", 1)[1] == str(a * b)
    for part in parts:  # every step is true arithmetic
        lhs, rhs = part.split("=")
        x, op, y = lhs.partition("*") if "*" in lhs else lhs.partition("+")
        assert (int(x) * int(y) if op == "*" else int(x) + int(y)) == int(rhs)


def test_generate_problems_is_seeded_sized_distinct_and_split_by_content_hash():
    from k15_envs.splits import content_key, split_of

    train, test = generate_problems([(2, 2), (3, 3)], 60, 20, seed=3)
    assert (train, test) == generate_problems([(2, 2), (3, 3)], 60, 20, seed=3)
    assert (train, test) != generate_problems([(2, 2), (3, 3)], 60, 20, seed=4)
    assert len(train) == 60 and len(test) == 20
    questions = [p.question for p in train + test]
    assert len(set(questions)) == 80  # distinct, so train and test are disjoint
    assert {(len(str(p.a)), len(str(p.b))) for p in train} == {(2, 2), (3, 3)}
    assert all(split_of(content_key(p.question), 0.1) == "test" for p in test)
    assert all(split_of(content_key(p.question), 0.1) == "train" for p in train)


def test_generate_problems_says_when_the_space_is_too_small():
    with pytest.raises(InternalizeError, match="distinct problems"):
        generate_problems([(1, 1)], 200, 5)  # 81 products of one-digit numbers


def test_problems_jsonl_math_env_test_split_is_exactly_the_test_set(tmp_path):
    from rllib_k15.env_factory import make_unwrapped_env

    train, test = generate_problems([(2, 2)], 40, 6)
    path = write_problems_jsonl(train, test, tmp_path / "problems.jsonl")
    env = make_unwrapped_env("k15/Math-v0", {"dataset": str(path), "instruction": "",
                                             "split": "test"})  # fmt: skip
    try:
        assert [env.problem(i).prompt for i in range(len(env))] == [p.question for p in test]
        p = env.problem(0)
        verdicts = env.verify_batch([p, p], [f"{test[0].cot}\n#### {test[0].answer}", "#### 1"])
        assert [v.correct for v in verdicts] == [True, False]
    finally:
        env.close()


@pytest.mark.parametrize(
    "text,answer",
    [
        ("47*6=282 282+3760=4042\n#### 4042", "4042"),
        ("#### 12 because", "12"),
        ("#### 1\n#### 2", "2"),  # the last delimiter
        ("4042", None),
        ("####", None),
    ],
)
def test_final_answer(text, answer):
    assert final_answer(text) == answer


# --- the removal rule --------------------------------------------------------------------
@pytest.mark.parametrize(
    "t,steps_per_epoch,delta,s",
    [
        (0, 10, 8, 0),
        (1, 10, 8, 0),  # ⌊8/10⌋
        (2, 10, 8, 1),
        (9, 10, 8, 7),
        (10, 10, 8, 8),  # one epoch later: Δ tokens
        (25, 10, 8, 20),
        (3, 4, 4, 3),  # Δ = S: one token per step
        (3, 2, 8, 12),  # Δ > S: several tokens per step
    ],
)
def test_removal_schedule_removes_delta_tokens_per_epoch(t, steps_per_epoch, delta, s):
    assert removal_schedule(t, steps_per_epoch, delta) == s


def test_removal_epochs_until_the_longest_cot_is_gone():
    assert [removal_epochs(n, 8) for n in (1, 8, 9, 33)] == [1, 1, 2, 5]


def test_reset_steps_are_where_s_grows_while_cot_remains():
    assert reset_steps(12, 4, 2, 100) == [2, 4, 6, 8, 10]  # s = 0 0 1 1 2 2 ...
    assert reset_steps(6, 2, 8, 30) == [1, 2, 3, 4, 5]  # s = 0 4 8 12 16 20, all < 30
    assert reset_steps(6, 2, 8, 10) == [1, 2, 3]  # s(3) = 12 >= 10: the CoT is gone
    assert reset_steps(10, 1, 8, 20) == [1, 2, 3]  # s(3)=24 >= 20: no CoT left to reset for
    steps, s = 40, [removal_schedule(t, 7, 3) for t in range(40)]
    expected = [t for t in range(1, steps) if s[t] != s[t - 1] and s[t - 1] < 9]
    assert reset_steps(steps, 7, 3, 9) == expected and expected


# --- removal smoothing -------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.5, 1.0, 4.0])
def test_smoothing_pmf_is_normalised_exponential(lam):
    assert sum(smoothing_pmf(o, lam) for o in range(400)) == pytest.approx(1.0)
    assert smoothing_pmf(0, lam) == pytest.approx(1 - math.exp(-lam))
    assert smoothing_pmf(3, lam) / smoothing_pmf(2, lam) == pytest.approx(math.exp(-lam))


@pytest.mark.parametrize("lam", [1.0, 4.0])
def test_sampled_offsets_follow_the_pmf(lam):
    n = 200_000
    draws = sample_offsets(n, lam, np.random.default_rng(7))
    assert draws.min() == 0 and draws.dtype.kind == "i"
    for o in range(3):  # empirical frequency within 5 standard errors of P(o)
        p = smoothing_pmf(o, lam)
        assert abs(np.mean(draws == o) - p) < 5 * math.sqrt(p * (1 - p) / n), o
    q = math.exp(-lam)
    assert draws.mean() == pytest.approx(q / (1 - q), rel=0.05)  # E[o] of the geometric
    again = sample_offsets(n, lam, np.random.default_rng(7))
    assert np.array_equal(draws, again)  # seeded


def test_smoothing_off_and_invalid_lambda():
    assert not sample_offsets(100, math.inf, np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="lambda"):
        sample_offsets(3, 0.0, np.random.default_rng(0))


# --- front removal -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "k,expected",
    [
        (0, [1, 2, 3, 4, 90, 91, 258]),
        (1, [2, 3, 4, 90, 91, 258]),
        (3, [4, 90, 91, 258]),
        (4, [90, 91, 258]),  # no CoT left: delimiter + answer + EOS only
        (99, [90, 91, 258]),  # more than the CoT: the tail is never cut
        (-2, [1, 2, 3, 4, 90, 91, 258]),
    ],
)
def test_remove_front_cuts_cot_from_the_front_only(k, expected):
    assert remove_front([1, 2, 3, 4], [90, 91, 258], k) == expected


# --- the optimiser and the mini-batch loss -------------------------------------------------
def test_resettable_adamw_reset_clears_state_keeps_hyperparameters():
    model = tiny_model(0)
    step = ResettableAdamW(model, lr=1e-3, weight_decay=0.01, max_grad_norm=1.0)
    step(sum(p.sum() for p in model.parameters()))
    assert step.optimizer.state
    step.reset()
    assert not step.optimizer.state
    assert step.optimizer.defaults["lr"] == 1e-3 and step.optimizer.defaults["weight_decay"] == 0.01


class _SpyStep:
    def __init__(self) -> None:
        self.resets: list[int] = []
        self.loss: RemovalLoss | None = None

    def reset(self) -> None:
        self.resets.append(self.loss.t)


def test_removal_loss_resets_at_the_schedule_and_trains_on_kept_cot_plus_tail():
    items = [Encoded([1, 2, 3], list(range(10, 10 + n)), [40, 41, 258]) for n in (12, 7)]
    spy = _SpyStep()
    loss = RemovalLoss(tiny_model(0), 256, spy, math.inf, False, steps_per_epoch=3, delta=4,
                       max_cot=12)  # fmt: skip
    spy.loss = loss
    full_tokens = loss(items)[1]["sft/num_response_tokens"]  # not removing yet: full CoT
    assert full_tokens == 12 + 7 + 2 * 3
    loss.removing = True
    tokens = []
    for _ in range(12):
        _, metrics = loss(items)
        s = metrics["internalize/scheduled_removed"]
        tokens.append(metrics["sft/num_response_tokens"])
        assert tokens[-1] == max(0, 12 - s) + max(0, 7 - s) + 2 * 3  # λ = ∞: exactly s
    assert spy.resets == reset_steps(12, 3, 4, 12)
    assert tokens[-1] == 6  # the delimiter, answer and EOS of each example remain


def test_removal_loss_smoothing_removes_extra_tokens():
    items = [Encoded([1], list(range(10, 50)), [258])] * 64
    loss = RemovalLoss(tiny_model(0), 256, _SpyStep(), 1.0, False, 100, 1, 40)
    loss.removing, loss.rng = True, np.random.default_rng(0)
    metrics = loss(items)[1]  # s(0) = 0: all removal comes from the offsets
    assert metrics["internalize/scheduled_removed"] == 0
    assert metrics["internalize/mean_removed"] == pytest.approx(1 / (math.e - 1), abs=0.35)


# --- end to end --------------------------------------------------------------------------
class _Interrupting:
    """The HF engine, stopping the run at the ``stop_at``-th weight load (after training)."""

    def __init__(self, model: str, stop_at: int | None) -> None:
        from rllib_k15.engine import make_engine

        self.engine, self.stop_at, self.loads = make_engine("hf", model), stop_at, 0

    def load_weights(self, state):
        self.loads += 1
        if self.loads == self.stop_at:
            raise RuntimeError("interrupted")
        self.engine.load_weights(state)

    def generate_text(self, prompts, params):
        return self.engine.generate_text(prompts, params)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.engine.close()


@pytest.mark.slow
def test_internalize_end_to_end_removes_all_cot_and_resumes_exactly(tmp_path):
    from rllib_k15.models import load_hf_model

    base_dir = save_tiny(tmp_path / "base", seed=0)
    sft = {"lr": 1e-2, "batch_size": 8}
    settings = InternalizeSettings(model=str(base_dir), out=str(tmp_path / "a"),
                                   num_train=8, num_test=2, cot_epochs=3, remove_per_epoch=16,
                                   final_epochs=1, engine="hf", sft=sft, save_dtype="float32",
                                   progress=False)  # fmt: skip
    report = run_internalize(settings, lambda m: _Interrupting(m, None), log=lambda _: None)
    stages, max_cot = report["stages"], report["max_cot_tokens"]
    assert report["steps_per_epoch"] == 1
    assert [r["phase"] for r in stages] == (
        ["cot"] * 3 + ["removal"] * removal_epochs(max_cot, 16) + ["final"]
    )
    cot_losses = [r["loss"] for r in stages[:3]]
    assert cot_losses == sorted(cot_losses, reverse=True)  # stage 0 learns the full CoT
    assert cot_losses[-1] < 0.9 * cot_losses[0], cot_losses
    removed = [r["scheduled_removed"] for r in stages]
    assert removed == sorted(removed) and removed[-1] == max_cot
    assert stages[-1]["train_cot_tokens"] == 0
    removal_steps = len(stages) - 3
    assert report["optimizer_resets"] == reset_steps(removal_steps, 1, 16, max_cot)
    out = tmp_path / "a"
    trained = load_hf_model(out, dtype="float32").state_dict()
    base = load_hf_model(base_dir, dtype="float32").state_dict()
    assert sum(not torch.equal(trained[k], base[k]) for k in base) == len(base)
    assert (out / "internalize.png").stat().st_size > 5000
    assert not (out / "checkpoint").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(stages) and sum(r["internalize/optimizer_reset"] for r in rows) == len(
        report["optimizer_resets"]
    )
    logs: list[str] = []
    assert run_internalize(settings, log=logs.append) == report and "done already" in logs[0]
    with pytest.raises(InternalizeError, match="other settings"):
        run_internalize(dataclasses.replace(settings, smoothing_lambda=1.0), log=logs.append)

    # the twin: stopped while the 5th epoch is evaluated, then resumed from epoch 4
    twin = dataclasses.replace(settings, out=str(tmp_path / "b"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run_internalize(twin, lambda m: _Interrupting(m, 5), log=lambda _: None)
    assert json.loads((tmp_path / "b/checkpoint/state.json").read_text())["epochs_done"] == 4
    logs.clear()
    resumed = run_internalize(twin, lambda m: _Interrupting(m, None), log=logs.append)
    assert "resuming after epoch 4" in logs[0]
    twin_rows = [
        json.loads(line) for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in twin_rows] == [r["epoch"] for r in rows]  # no duplicate epoch
    assert resumed["stages"] == report["stages"]
    again = load_hf_model(tmp_path / "b", dtype="float32").state_dict()
    assert all(torch.equal(again[k], trained[k]) for k in trained)


def test_cli_rejects_bad_flags_naming_them(tmp_path):
    from rllib_k15.commands.k15 import main

    base = ["long2short", "internalize", "--model", "m", "--out", str(tmp_path)]
    for extra, flag in ((["--sizes", "2y2"], "--sizes"), (["--sizes", "2x1"], "--sizes"),
                        (["--remove-per-epoch", "0"], "--remove-per-epoch"),
                        (["--smoothing-lambda", "0"], "--smoothing-lambda"),
                        (["--test-fraction", "1"], "--test-fraction"),
                        (["--cot-epochs", "-1"], "--cot-epochs")):  # fmt: skip
        with pytest.raises(SystemExit, match=flag):
            main(base + extra)


def test_mul_problem_fields():
    p = MulProblem(47, 86)
    assert (p.question, p.answer, p.cot) == ("What is 47 * 86?", "4042", multiplication_cot(47, 86))
