"""A verifier that exceeds its time limit gives reward 0, reason "timeout", and stalls nothing —
also when it is called from the threads of a Ray actor with threaded concurrency (where
``signal.alarm``-based timeouts, like math-verify's own, cannot work).

The grader actor runs its methods in a thread pool (``max_concurrency=4``). Hanging
programs (sleep, busy loop) and a slow math answer are graded concurrently with correct
answers: each hanging one comes back as "timeout" within its limit plus the sandbox's
start-up/tear-down allowance, and the correct ones are graded correctly meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest
import ray
from ray import cloudpickle

WALL_S = 5.0  # generous: the sandbox's Python start-up counts against the wall limit
MATH_TIMEOUT_S = 2.0
ALLOWANCE_S = 30.0  # supervisor start-up + teardown (runner.SUPERVISOR_GRACE_S is 15) + load
ROWS = [
    {
        "task_id": "hang/0",
        "prompt": 'def answer() -> int:\n    """Return 42."""\n',
        "test": "def check(candidate):\n    assert candidate() == 42\n",
        "entry_point": "answer",
    }
]
TOWER = "\\boxed{10^{10^{10}}}"  # sympy would try to evaluate 10 billion digits


@ray.remote(max_concurrency=4)
class Grader:
    def __init__(self) -> None:
        import gymnasium as gym
        import k15_envs  # noqa: F401

        sandbox = {"wall_time_s": WALL_S, "cpu_time_s": WALL_S}
        self.code = gym.make("k15/Code-v0", dataset=ROWS, sandbox=sandbox, num_workers=2)
        self.math = gym.make("k15/Math-v0", timeout_s=MATH_TIMEOUT_S, num_workers=2)
        self.math.unwrapped.verifier._get_resource().warm_up()  # start-up is not grading

    def code_verdict(self, body: str) -> tuple:
        env = self.code.unwrapped
        return self._timed(env, env.problem(0), f"```python\n{body}\n```")

    def math_verdict(self, answer: str) -> tuple:
        env = self.math.unwrapped
        problem = env.problem(0)
        return self._timed(env, problem, answer.replace("GOLD", problem.metadata["gold"]))

    @staticmethod
    def _timed(env, problem, response: str) -> tuple:
        start = time.monotonic()
        verdict = env.verify_batch([problem], [response])[0]
        off_main = threading.current_thread() is not threading.main_thread()
        return verdict.reward, verdict.reason, time.monotonic() - start, off_main

    def close(self) -> None:
        self.code.close()
        self.math.close()


@pytest.fixture(scope="module")
def grader(ray_address):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors can't import tests/
    actor = Grader.remote()
    yield actor
    ray.get(actor.close.remote())
    ray.kill(actor)


def test_hanging_verifiers_time_out_in_actor_threads_without_stalling_others(grader):
    calls = {
        "sleep": grader.code_verdict.remote("import time\ntime.sleep(10_000)"),
        "busy": grader.code_verdict.remote("while True:\n    pass"),
        "tower": grader.math_verdict.remote(TOWER),
        "code_ok": grader.code_verdict.remote("def answer():\n    return 42"),
        "math_ok": grader.math_verdict.remote("so the answer is \\boxed{GOLD}"),
    }
    got = dict(zip(calls, ray.get(list(calls.values()), timeout=WALL_S + 4 * ALLOWANCE_S)))
    print("verdicts (reward, reason, seconds, off main thread):", got)
    for name, (_, _, _, off_main) in got.items():
        assert off_main, f"{name} ran on the actor's main thread; the test needs threads"
    for name in ("sleep", "busy"):
        reward, reason, elapsed, _ = got[name]
        assert reward == 0.0 and reason in ("timeout", "cpu_limit"), (name, got[name])
        assert elapsed < WALL_S + ALLOWANCE_S, (name, elapsed)
    assert got["sleep"][1] == "timeout"
    reward, reason, elapsed, _ = got["tower"]
    assert reward == 0.0 and elapsed < MATH_TIMEOUT_S + ALLOWANCE_S
    if elapsed >= MATH_TIMEOUT_S:  # it used up its time: then it must say so
        assert reason == "timeout", got["tower"]
    assert got["code_ok"][:2] == (1.0, "correct")
    assert got["math_ok"][:2] == (1.0, "correct")
