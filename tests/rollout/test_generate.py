"""The pure rollout functions (rllib_k15.rollout.generate) on the real HF engine, no Ray.

An in-file env speaks the k15_envs contract with the real :class:`Problem` / :class:`Verdict`
types and records what ``verify_batch`` was asked. Checked: k graded records per problem,
stamped with the iteration; the verdict reaches the record; loops in real engine output
are cut and penalised (a trigger-happy repeat rule: a token seen twice, or twice in a
row); unfinished segments come back as PartialRollout; and a response continued over
several calls at temperature 0 equals the one-shot generation, loop cuts included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from k15_envs.types import Problem, Verdict
from support.segments import continue_until_finished

from rllib_k15.engine import Completion
from rllib_k15.rollout.generate import (
    RolloutSettings,
    RolloutStats,
    cut_loop,
    generate_rollouts,
    generate_segments,
    penalise_loop,
)
from rllib_k15.rollout.partial import PartialRollout
from rllib_k15.rollout.records import Rollout
from rllib_k15.rollout.repetition import RepetitionConfig, detect_repetition

MAX_TOKENS, BUDGET, K = 40, 6, 2
# the tiny random model's greedy responses to problems 1 and 11 repeat a token within 40
# tokens (problem 1 at tokens 3 and 25, problem 11 at 14 and 28), problem 0's do not
PROBLEMS = [0, 1, 11]
# triggers on such output: any token twice (n-gram rule with n = 1) or two equal tokens in
# a row (period rule, p = 1)
EAGER_LOOPS = RepetitionConfig(
    max_period=1, min_repeats=2, min_tokens=2, ngram_size=1, max_ngram_repeats=1
)
PENALTY = 0.7


class EvenEnv:
    """Problems whose index is even are answered "correctly", the others wrongly."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Problem], list[str], list[bool]]] = []

    def problem(self, index: int) -> Problem:
        return Problem(f"even/{index}", f"Say a word number {index}.", "a", index / 10)

    def verify_batch(self, problems, responses, truncated=None) -> list[Verdict]:
        truncated = list(truncated or [False] * len(problems))
        self.calls.append((list(problems), list(responses), truncated))
        return [
            Verdict.graded(int(p.id.split("/")[1]) % 2 == 0, r[:3] or None)
            for p, r in zip(problems, responses)
        ]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rllib_k15.engine import HFEngine

    engine = HFEngine(tiny_model_dir, dtype="float32")
    yield engine
    engine.close()


def _settings(**overrides) -> RolloutSettings:
    base = RolloutSettings(
        samples_per_problem=K,
        temperature=0.0,
        top_p=1.0,
        max_response_tokens=MAX_TOKENS,
        partial_rollout_max_tokens=BUDGET,
        repeat_detection=True,
        repeat_config=RepetitionConfig(),
        repeat_penalty=PENALTY,
    )
    return replace(base, **overrides)


def test_settings_from_config() -> None:
    from rllib_k15 import K15Config

    config = K15Config().training(
        samples_per_problem=3,
        temperature=0.5,
        top_p=0.9,
        max_response_tokens=30,
        partial_rollout_max_tokens=10,
        repeat_config={"min_tokens": 8},
        repeat_penalty=0.25,
    )
    settings = RolloutSettings.from_config(config)
    assert settings == RolloutSettings(
        3, 0.5, 0.9, 30, 10, True, RepetitionConfig(min_tokens=8), 0.25
    )
    off = RolloutSettings.from_config(config.training(repeat_detection=False))
    assert not off.repeat_detection


def test_k_graded_records_per_problem_stamped_with_the_iteration(engine) -> None:
    env = EvenEnv()
    settings = _settings(samples_per_problem=3, temperature=1.0, max_response_tokens=8)
    rollouts, stats = generate_rollouts(engine, env, [4, 1], settings, iteration=7)

    assert [r.problem_index for r in rollouts] == [4, 4, 4, 1, 1, 1]
    assert len(env.calls) == 1  # one verify_batch call for all responses
    problems, responses, truncated = env.calls[0]
    assert [p.id for p in problems] == [r.problem_id for r in rollouts]
    assert responses == [r.text for r in rollouts]
    assert truncated == [r.finish_reason == "length" for r in rollouts]
    for r in rollouts:
        assert isinstance(r, Rollout)
        assert r.problem_id == f"even/{r.problem_index}"
        assert r.difficulty == pytest.approx(r.problem_index / 10)
        assert r.prompt_ids == engine.encode_prompt(f"Say a word number {r.problem_index}.")
        assert 1 <= len(r.response_ids) <= 8 and len(r.sample_logp) == len(r.response_ids)
        assert r.token_iterations == [7] * len(r.response_ids)
        assert r.finish_reason in ("stop", "length")
        even = r.problem_index % 2 == 0
        assert (r.reward, r.correct, r.reason) == (
            float(even),
            even,
            "correct" if even else "wrong",
        )
    assert isinstance(stats, RolloutStats)
    assert stats.finished == 6
    assert stats.generated_tokens == sum(len(r.response_ids) for r in rollouts)
    assert stats.generation_seconds > 0 and stats.scoring_seconds >= 0
    assert (stats.repeats_detected, stats.repeat_tokens_cut) == (0, 0)


def test_nothing_to_generate() -> None:
    env = EvenEnv()
    assert generate_rollouts(None, env, [], _settings()) == ([], None)
    assert generate_segments(None, env, [], {}, _settings(), 0) == ([], None)
    assert env.calls == []


def test_cut_loop_and_penalty_on_a_hand_made_completion(engine) -> None:
    loop = [11, 12, 13, 14] * 30  # period 4, 120 tokens
    completion = Completion([5, 6, 7] + loop, [-1.0] * 123, "x", "length")
    cut = cut_loop(completion, _settings(), engine.tokenizer)
    assert cut.finish_reason == "repeat"
    assert len(cut.token_ids) == len(cut.logprobs) < 123
    assert cut.token_ids == completion.token_ids[: len(cut.token_ids)]
    assert cut.text == engine.tokenizer.decode(cut.token_ids, skip_special_tokens=True)
    verdict = penalise_loop(cut, Verdict.graded(True, "5"), PENALTY)
    assert (verdict.reward, verdict.correct, verdict.reason) == (-PENALTY, False, "repeat")

    assert cut_loop(completion, _settings(repeat_detection=False), engine.tokenizer) is completion
    normal = Completion(list(range(100, 160)), [-1.0] * 60, "ok", "stop")
    assert cut_loop(normal, _settings(), engine.tokenizer) is normal
    graded = Verdict.graded(True, "5")
    assert penalise_loop(normal, graded, PENALTY) is graded


def test_loops_in_engine_output_are_cut_and_penalised(engine) -> None:
    loose = _settings(repeat_detection=False)
    eager = _settings(repeat_config=EAGER_LOOPS)
    whole, _ = generate_rollouts(engine, EvenEnv(), PROBLEMS, loose)
    env = EvenEnv()
    rollouts, stats = generate_rollouts(engine, env, PROBLEMS, eager)

    cuts = 0
    removed = 0
    for ref, r in zip(whole, rollouts, strict=True):
        found = detect_repetition(ref.response_ids, EAGER_LOOPS)
        if not found.triggered:
            assert (r.response_ids, r.reward, r.text) == (ref.response_ids, ref.reward, ref.text)
            continue
        cuts += 1
        removed += len(ref.response_ids) - found.cut
        assert r.response_ids == ref.response_ids[: found.cut]
        assert r.sample_logp == ref.sample_logp[: found.cut]
        assert r.token_iterations == [0] * found.cut
        assert (r.finish_reason, r.reward, r.correct, r.reason) == (
            "repeat",
            -PENALTY,
            False,
            "repeat",
        )
        assert r.text == engine.tokenizer.decode(r.response_ids, skip_special_tokens=True)
    assert cuts > 0, "the eager rule should catch a loop in the tiny model's output"
    assert (stats.repeats_detected, stats.repeat_tokens_cut) == (cuts, removed)
    assert env.calls[0][2] == [r.finish_reason in ("length", "repeat") for r in rollouts]


def test_unfinished_segments_come_back_as_partial_rollouts(engine) -> None:
    env = EvenEnv()
    items, stats = generate_segments(engine, env, PROBLEMS, {}, _settings(), iteration=3)
    assert len(items) == K * len(PROBLEMS)
    partial = [p for p in items if isinstance(p, PartialRollout)]
    assert partial, "a random model should not stop within the first segment"
    for p in partial:
        assert p.num_generated == BUDGET and list(p.token_iterations) == [3] * BUDGET
        assert p.num_segments == 1 and 0 <= p.slot < K
        assert list(p.prompt_ids) == engine.encode_prompt(f"Say a word number {p.problem_index}.")
    assert sorted((p.problem_index, p.slot) for p in items) == [
        (i, j) for i in PROBLEMS for j in range(K)
    ]
    finished = len(items) - len(partial)
    assert stats.finished == finished
    assert len(env.calls) == (1 if finished else 0)
    assert stats.generated_tokens == sum(
        p.num_generated if isinstance(p, PartialRollout) else len(p.response_ids) for p in items
    )


def _continue(engine, env, settings) -> list[Rollout]:
    """Segments over iterations until every response finished (at most 10 calls)."""

    def step(todo, continuations, iteration):
        return generate_segments(engine, env, todo, continuations, settings, iteration)[0]

    return continue_until_finished(step, PROBLEMS, BUDGET)


@pytest.mark.parametrize("rule", [RepetitionConfig(), EAGER_LOOPS], ids=["default", "eager"])
def test_continued_response_equals_one_shot_generation(engine, rule) -> None:
    settings = _settings(repeat_config=rule)
    whole, _ = generate_rollouts(engine, EvenEnv(), PROBLEMS, settings)
    uncut, _ = generate_rollouts(engine, EvenEnv(), PROBLEMS, _settings(repeat_detection=False))
    expected = {(r.problem_index, i % K): (r, u) for i, (r, u) in enumerate(zip(whole, uncut))}
    finished = _continue(engine, EvenEnv(), settings)

    assert len(finished) == len(whole) == K * len(PROBLEMS)
    repeats = 0
    for r in finished:
        ref, full = expected[(r.problem_index, r.slot)]
        assert r.response_ids == ref.response_ids, (r.problem_index, r.slot)
        assert (r.finish_reason, r.reward, r.correct, r.text) == (
            ref.finish_reason, ref.reward, ref.correct, ref.text
        )  # fmt: skip
        np.testing.assert_allclose(r.sample_logp, ref.sample_logp, atol=2e-3)
        n = len(r.response_ids)
        assert r.token_iterations == [t // BUDGET for t in range(n)]  # stamped per segment
        # generated up to where the loop was seen (past the cut), else the whole response
        if r.finish_reason == "repeat":
            repeats += 1
            n = detect_repetition(full.response_ids, rule).end
        assert r.num_segments == -(-n // BUDGET)  # ceil: the last segment may be shorter
    assert repeats > 0 if rule is EAGER_LOOPS else repeats == 0
