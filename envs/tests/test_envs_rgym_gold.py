"""Every reasoning-gym dataset: its own gold answer, written the way the prompt asks
(``\\boxed{...}``), earns through ``k15/ReasoningGym-v0`` what the dataset's own
``score_answer(gold, entry)`` gives it in process; and a grader that fails says so
(reason ``grading_error: ...``, counted, logged once) instead of passing as a wrong answer.

The datasets come from the installed package's registry (``reasoning_gym.factory.DATASETS``)
with default configs. A dataset is skipped only if it cannot be built with defaults at all,
or if none of its entries carries a gold answer (the summary printed by the fixture, and
``pytest -rs``, list them). All answers are graded in one ``verify_batch`` through one
two-worker pool.
"""

from __future__ import annotations

import logging
import time

import gymnasium as gym
import k15_envs.verifiers.rgym as rgym
import pytest
import reasoning_gym.factory as factory
from k15_envs.envs.rgym_envs import ReasoningGymEnv
from k15_envs.sandbox.pool import TaskOutcome
from k15_envs.types import Problem, Reason

DATASETS = sorted(factory.DATASETS)
PER_DATASET = 3  # problems per dataset


def _clip(score: float) -> float:
    return min(1.0, max(0.0, float(score)))


@pytest.fixture(scope="module")
def grader():
    """One env whose verifier (partial credit: reward = the clipped score) grades any
    reasoning-gym problem: the dataset, its config and entry travel in the problem."""
    env = ReasoningGymEnv(
        dataset="chain_sum", size=1, partial_credit=True, num_workers=2, timeout_s=60.0
    )
    yield env
    env.close()


@pytest.fixture(scope="module")
def gold_results(grader):
    """dataset -> ("skip", why) or ("graded", [(problem, expected, verdict), ...])."""
    started = time.perf_counter()
    results: dict[str, tuple] = {}
    cases: list[tuple[str, Problem, float]] = []
    for name in DATASETS:
        try:
            env = ReasoningGymEnv(dataset=name, size=PER_DATASET)
        except Exception as exc:  # noqa: BLE001 - reported as the skip reason
            results[name] = ("skip", f"cannot be built with defaults: {type(exc).__name__}: {exc}")
            continue
        dataset = env._datasets[0]
        found = []
        for index in range(PER_DATASET):
            problem = env.problem(index)
            entry = problem.metadata["entry"]
            if entry.get("answer") is None:
                continue
            expected = _clip(dataset.score_answer(entry["answer"], entry))
            found.append((name, problem, expected))
        if not found:
            results[name] = ("skip", "no gold answer in its entries (answer is None)")
            continue
        cases.extend(found)
        results[name] = ("graded", [])
    generated = time.perf_counter() - started
    verdicts = grader.verify_batch(
        [problem for _, problem, _ in cases],
        [f"\\boxed{{{problem.metadata['entry']['answer']}}}" for _, problem, _ in cases],
    )
    for (name, problem, expected), verdict in zip(cases, verdicts, strict=True):
        results[name][1].append((problem, expected, verdict))
    graded = sorted(name for name, (kind, _) in results.items() if kind == "graded")
    skipped = {name: why for name, (kind, why) in results.items() if kind == "skip"}
    print(
        f"\nreasoning-gym gold answers: {len(cases)} answers of {len(graded)} datasets graded "
        f"(generation {generated:.1f}s, grading {time.perf_counter() - started - generated:.1f}s)"
        f"\n  graded: {', '.join(graded)}\n  skipped ({len(skipped)}):"
        + "".join(f"\n    {name}: {why}" for name, why in sorted(skipped.items()))
    )
    return results


@pytest.mark.parametrize("name", DATASETS)
def test_gold_answer_earns_the_datasets_own_score(name, gold_results):
    kind, detail = gold_results[name]
    if kind == "skip":
        pytest.skip(f"{name}: {detail}")
    for problem, expected, verdict in detail:
        assert verdict.reward == pytest.approx(expected), (
            problem.id,
            problem.metadata["entry"]["answer"],
            verdict,
        )
        assert not verdict.grading_error, (problem.id, verdict.reason)
        assert verdict.correct == (expected >= 1.0), (problem.id, verdict)


def test_word_sorting_gold_answer_is_correct_through_gym_make():
    """The reported bug: every correct word_sorting answer got reward 0 with
    ``AssertionError: transformation must be a TextTransformation`` (the scorer's config
    came back from JSON with the enum turned into a string)."""
    env = gym.make("k15/ReasoningGym-v0", dataset="word_sorting", size=8, num_workers=1)
    try:
        inner = env.unwrapped
        problems = [inner.problem(i) for i in range(4)]
        verdicts = inner.verify_batch(problems, [f"\\boxed{{{p.answer}}}" for p in problems])
        assert [v.reason for v in verdicts] == ["correct"] * 4, verdicts
        env.reset(options={"problem_index": 0})
        _, reward, terminated, _, info = env.step(
            f"The sorted words: \\boxed{{{problems[0].answer}}}"
        )
        assert (reward, terminated, info["reason"], info["grading_error"]) == (
            1.0,
            True,
            "correct",
            False,
        )
        env.reset(options={"problem_index": 0})
        _, reward, _, _, info = env.step("\\boxed{zebra, apple}")
        assert (reward, info["reason"], info["grading_error"]) == (0.0, "wrong", False)
    finally:
        env.close()


def test_grading_error_is_distinct_counted_and_logged_once(grader, monkeypatch, caplog):
    monkeypatch.setattr(rgym, "_WARNED", set())
    verifier = grader.verifier
    before = dict(verifier.grading_errors)
    env = ReasoningGymEnv(dataset="word_sorting", size=2)
    good = env.problem(0)
    # the old wire format of this problem: a JSON config, enum lost -> the scorer raises
    broken = Problem(
        good.id,
        good.prompt,
        good.answer,
        good.difficulty,
        {**good.metadata, "config": '{"transformation": "original"}'},
    )
    no_entry = Problem(good.id, good.prompt, good.answer, good.difficulty, {"dataset": "x"})
    response = f"\\boxed{{{good.answer}}}"
    with caplog.at_level(logging.WARNING, logger=rgym.__name__):
        verdicts = grader.verify_batch([broken, broken, broken, no_entry, good], [response] * 5)
    for verdict in verdicts[:3]:
        assert verdict.grading_error and verdict.reward == 0.0 and not verdict.correct
        assert verdict.reason.startswith("grading_error: AssertionError: transformation must")
        assert len(verdict.reason) <= 220
    assert verdicts[3].grading_error and verdicts[3].reason.startswith("grading_error: KeyError")
    assert verdicts[4].reason == "correct" and not verdicts[4].grading_error
    counted = {k: v - before.get(k, 0) for k, v in verifier.grading_errors.items()}
    assert counted == {"word_sorting: AssertionError": 3, "x: KeyError": 1}, counted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # once per dataset + error type, not per answer
    assert any("word_sorting" in w and "AssertionError" in w for w in warnings), warnings
    assert Reason.GRADING_ERROR.value == "grading_error"

    # step() says so too, so an EnvRunner can count it
    grader.reset(options={"problem_index": 0})
    grader._current = broken
    _, reward, terminated, _, info = grader.step(response)
    assert reward == 0.0 and terminated and info["grading_error"] is True, info
    assert info["reason"].startswith("grading_error: ")


def test_malformed_scores_are_grading_errors():
    verifier = rgym.ReasoningGymVerifier()
    for value in (float("nan"), None, True, "1.0"):
        verdict = verifier._to_verdict(TaskOutcome("ok", value=value), "demo", "42")
        assert verdict.grading_error and verdict.reward == 0.0, (value, verdict)
    crashed = verifier._to_verdict(TaskOutcome("error", error="worker died: EOF"), "demo", "42")
    assert crashed.reason == "grading_error: worker died: EOF"
    timeout = verifier._to_verdict(TaskOutcome("timeout", error="late"), "demo", "42")
    assert timeout.reason == "timeout" and not timeout.grading_error
    assert verifier.grading_errors == {"demo: MalformedScore": 4, "demo: worker died": 1}


def test_delimited_answers_keep_their_final_period():
    verifier = rgym.ReasoningGymVerifier()
    assert verifier._answer("\\boxed{It rained.}") == "It rained."
    assert verifier._answer("<answer>It rained.</answer>") == "It rained."
    assert verifier._answer("\\boxed{$\\frac{7}{9}$}") == "\\frac{7}{9}"
    assert verifier._answer("so...\nAnswer: 42.") == "42"
    assert verifier._answer("no answer here") is None
