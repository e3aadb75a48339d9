"""Every registered env: check_env, determinism, the Gymnasium contract and the batch API."""

from __future__ import annotations

import os
import pickle
import re
import time
import uuid

import gymnasium as gym
import k15_envs
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from k15_envs import EnvId, Problem, ReasoningEnv, Verdict

# Small, fast settings per env (one grading worker each; procedural sizes kept small).
FAST_KWARGS = {
    EnvId.MATH: {"num_workers": 1},
    EnvId.ARITHMETIC: {"difficulty": [1, 2, 3, 4, 5, 6], "size": 50},
    EnvId.GSM_SYMBOLIC: {"size": 50, "num_workers": 1},
    EnvId.COUNTDOWN: {"size": 20, "num_workers": 1},
    EnvId.REASONING_GYM: {"dataset": "leg_counting", "size": 50, "num_workers": 1},
    EnvId.CODE: {"sandbox": {"wall_time_s": 3.0}},
    EnvId.HUMANEVAL: {"sandbox": {"wall_time_s": 3.0}},
    EnvId.MULTIPLE_CHOICE: {},
    EnvId.RENDERED: {"task": "k15/Countdown-v0", "size": 20, "num_workers": 1},
    EnvId.RENDERED_ARITHMETIC: {"difficulty": [1, 2, 3], "size": 30, "render": {"noise": 6.0}},
    EnvId.RENDERED_MATH: {"num_workers": 1, "render": {"rotate": 2.0, "jitter": 3}},
    EnvId.IMAGE_QA: {"num_workers": 1, "image_size": (96, 128)},
}
REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("k15/"))


def make(env_id: str, **overrides):
    return gym.make(env_id, **{**FAST_KWARGS[EnvId(env_id)], **overrides})


def test_every_env_id_is_registered_and_covered():
    assert REGISTERED == sorted(e.value for e in EnvId)
    assert set(FAST_KWARGS) == set(EnvId)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_check_env(env_id):
    env = make(env_id)
    try:
        assert isinstance(env.unwrapped, ReasoningEnv)
        check_env(env.unwrapped)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", REGISTERED)
def test_reset_is_deterministic_and_problems_reproducible(env_id):
    a, b = make(env_id), make(env_id)
    try:
        assert data_equivalence(a.reset(seed=7), b.reset(seed=7))
        assert data_equivalence(a.reset(seed=7)[0], a.reset(seed=7)[0])
        n = min(10, len(a.unwrapped))
        assert [a.unwrapped.problem(i) for i in range(n)] == [
            b.unwrapped.problem(i) for i in range(n)
        ]
        ids = [a.unwrapped.problem(i).id for i in range(len(a.unwrapped))]
        assert len(set(ids)) == len(ids), "problem ids must be unique"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "env_id", [EnvId.ARITHMETIC, EnvId.GSM_SYMBOLIC, EnvId.COUNTDOWN, EnvId.REASONING_GYM]
)
def test_generator_seed_changes_the_problems(env_id):
    a, b = make(env_id.value, seed=0), make(env_id.value, seed=1)
    try:
        first = [a.unwrapped.problem(i).prompt for i in range(5)]
        assert first != [b.unwrapped.problem(i).prompt for i in range(5)]
    finally:
        a.close()
        b.close()


def test_problem_index_option_and_info_keys():
    env = make("k15/Arithmetic-v0")
    obs, info = env.reset(options={"problem_index": 3})
    assert obs == env.unwrapped.problem(3).prompt
    problem = env.unwrapped.problem(3)
    assert info == {"problem_id": problem.id, "problem_index": 3, "difficulty": problem.difficulty}
    _, reward, terminated, truncated, info = env.step("I don't know")
    assert set(info) == {
        "correct",
        "extracted_answer",
        "reason",
        "difficulty",
        "problem_id",
        "problem_index",
    }
    assert (reward, terminated, truncated, info["reason"]) == (0.0, True, False, "no_answer")
    with pytest.raises(IndexError):
        env.reset(options={"problem_index": len(env.unwrapped)})
    env.close()


def test_truncation_via_mark_truncated_and_length():
    env = make("k15/Arithmetic-v0", max_response_chars=100)
    env.reset(seed=0)
    problem = env.unwrapped.problem(env.unwrapped._current_index)
    right = f"\\boxed{{{problem.answer}}}"
    env.unwrapped.mark_truncated()
    _, reward, terminated, truncated, info = env.step(right)
    assert (reward, terminated, truncated, info["reason"]) == (0.0, False, True, "truncated")
    # the episode stays open: a partial rollout continues and is graded next time
    _, reward, terminated, truncated, info = env.step(right)
    assert (reward, terminated, truncated, info["reason"]) == (1.0, True, False, "correct")
    _, reward, _, truncated, _ = env.step("x" * 101 + right)  # longer than the action space
    assert (reward, truncated) == (0.0, True)
    env.close()


def test_step_before_reset_and_bad_action():
    env = make("k15/Arithmetic-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step("1")
    env.reset(seed=0)
    with pytest.raises(TypeError):
        env.step(42)


def test_verify_and_verify_batch_api():
    env = make("k15/Arithmetic-v0").unwrapped
    problems = [env.problem(i) for i in range(4)]
    assert all(isinstance(p, Problem) for p in problems)
    responses = [f"\\boxed{{{p.answer}}}" for p in problems]
    responses[1] = "Answer: 123456789"
    verdicts = env.verify_batch(problems, responses, truncated=[False, False, True, False])
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert [v.reason for v in verdicts] == ["correct", "wrong", "truncated", "correct"]
    assert env.verify(problems[0], responses[0], truncated=True).reason == "truncated"
    with pytest.raises(ValueError):
        env.verify_batch(problems, responses[:2])
    env.close()


def test_arithmetic_levels_match_the_ladder():
    patterns = {
        1: r"Calculate \d \+ \d\.",  # two 1-digit numbers, + only
        2: r"Calculate [1-9]\d \+ [1-9]\d\.",  # two 2-digit numbers, + only
        3: r"Calculate [1-9]\d\d [+-] [1-9]\d\d\.",  # two 3-digit numbers, + or -
        4: r"Calculate [1-9]\d [-+*] [1-9]\d [-+*] [1-9]\d\.",  # three 2-digit numbers
    }
    for level, pattern in patterns.items():
        env = make("k15/Arithmetic-v0", difficulty=level, size=200).unwrapped
        for i in range(200):
            problem = env.problem(i)
            assert re.fullmatch(pattern, problem.prompt.splitlines()[0]), problem.prompt
            assert (
                problem.difficulty == float(level) and problem.id == f"arithmetic/d{level}/{i:05d}"
            )
            assert str(eval(problem.metadata["expression"])) == problem.answer  # noqa: S307


def test_mixed_difficulty_records_each_level():
    env = make("k15/Arithmetic-v0", difficulty="1-3", size=300).unwrapped
    levels = [env.problem(i).difficulty for i in range(300)]
    assert set(levels) == {1.0, 2.0, 3.0}
    again = make("k15/Arithmetic-v0", difficulty=[1, 2, 3], size=300).unwrapped
    assert levels == [again.problem(i).difficulty for i in range(300)]


def test_arithmetic_scoring_is_fast():
    env = make("k15/Arithmetic-v0", difficulty=[1, 2, 3, 4], size=250).unwrapped
    problems = [env.problem(i) for i in range(250)]
    responses = [
        f"Let me think... {p.metadata['expression']} = {p.answer}\nAnswer: {p.answer}"
        for p in problems
    ]
    start = time.perf_counter()
    verdicts = env.verify_batch(problems, responses)
    assert time.perf_counter() - start < 0.5
    assert all(v.correct for v in verdicts)


def test_lenient_extraction_is_a_config_option():
    lenient = make("k15/Arithmetic-v0").unwrapped
    strict = make("k15/Arithmetic-v0", extract="boxed").unwrapped
    problem = lenient.problem(0)
    response = f"{problem.metadata['expression']} = {problem.answer}"
    assert lenient.verify(problem, response).reason == "correct"
    assert strict.verify(problem, response).reason == "no_answer"


def test_gsm_symbolic_and_countdown_grade_with_their_scorers():
    gsm = make("k15/GSMSymbolic-v0", difficulty=1)
    countdown = make("k15/Countdown-v0")
    try:
        g = gsm.unwrapped.problem(0)
        assert g.difficulty == 1.0
        c = countdown.unwrapped.problem(0)
        expression = c.answer.replace("*", " \\times ")
        verdicts = gsm.unwrapped.verify_batch([g, g], [f"\\boxed{{{g.answer}}}", "\\boxed{-1}"])
        assert [v.reason for v in verdicts] == ["correct", "wrong"]
        verdicts = countdown.unwrapped.verify_batch(
            [c, c], [f"\\boxed{{{expression}}}", "\\boxed{1 + 1}"]
        )
        assert [v.reason for v in verdicts] == ["correct", "wrong"]
        # the countdown scorer parses with sympy's eval: it only ever runs sandboxed
        marker = f"/tmp/k15-pwned-{uuid.uuid4().hex}"
        hostile = f"\\boxed{{__import__('os').system('touch {marker}')}}"
        assert countdown.unwrapped.verify(c, hostile).reward == 0.0
        assert not os.path.exists(marker)
    finally:
        gsm.close()
        countdown.close()


def test_reasoning_gym_curriculum_difficulty():
    env = make("k15/ReasoningGym-v0", dataset="chain_sum", difficulty=[1, 2], size=40)
    try:
        problems = [env.unwrapped.problem(i) for i in range(40)]
        assert {p.difficulty for p in problems} == {1.0, 2.0}
        assert all(p.id.startswith("rg/chain_sum/d") for p in problems)
    finally:
        env.close()
    with pytest.raises(ValueError, match="levels must be among"):
        gym.make("k15/ReasoningGym-v0", dataset="chain_sum", difficulty=99)
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset"):
        gym.make("k15/ReasoningGym-v0", dataset="no_such_dataset")


def test_multiple_choice_letters():
    env = make("k15/MultipleChoice-v0").unwrapped
    problem = env.problem(3)  # answer given as the option text "29"
    assert problem.answer == "C" and "C. 29" in problem.prompt
    cases = {
        "\\boxed{C}": "correct",
        "Answer: (C)": "correct",
        "\\boxed{29}": "correct",
        "\\boxed{A}": "wrong",
    }
    for response, reason in cases.items():
        assert env.verify(problem, response).reason == reason, response


def test_humaneval_ships_164_problems():
    env = make("k15/HumanEval-v0").unwrapped
    assert len(env) == 164
    problem = env.problem(0)
    assert problem.id == "humaneval/0" and problem.metadata["entry_point"] == "has_close_elements"
    env.close()


def test_verifiers_and_problems_pickle():
    env = make("k15/Code-v0").unwrapped
    problem = env.problem(0)
    assert pickle.loads(pickle.dumps(problem)) == problem
    verifier = pickle.loads(pickle.dumps(env.verifier))
    assert verifier.verify(problem, "```python\n" + problem.answer + "\n```").correct
    verifier.close()
    env.close()


def test_package_exports():
    for name in ("ReasoningEnv", "Problem", "Verdict", "Reason", "DatasetError", "SandboxConfig"):
        assert hasattr(k15_envs, name)


def test_import_pulls_in_no_ray_torch_or_vllm():
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, k15_envs\n"
        "env = gym.make('k15/Arithmetic-v0'); env.reset(seed=0); env.step('\\\\boxed{1}')\n"
        "heavy = [m for m in ('ray', 'torch', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
