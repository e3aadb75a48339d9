"""``k15 difficulty``: model-based difficulty assessment (report §2.3.4, "Sampling strategies").

    k15 difficulty --env k15/Arithmetic-v0 --model smollm2-135m-instruct --samples 8 \\
        --out results/difficulty.json [--env-kwargs '{"difficulty": 2}'] [--problems N] \\
        [--max-tokens 256] [--temperature 1.0] [--engine vllm|hf] [--seed 0]

Samples ``--samples`` responses per problem at ``--temperature`` (1.0: the model's own
distribution, as the report does), grades them with the env's verifier and writes each
problem's **pass rate** (correct / samples) to ``--out`` in the format
:func:`rllib_k15.sampling.difficulty.load_difficulty_file` reads (``.json`` with the run's
settings as metadata, ``.jsonl`` or ``.csv``; difficulty = 1 − pass rate). A response cut
by ``--max-tokens`` counts as wrong. Train on the file with
``ProblemBuffer.from_difficulty_file``. By default every problem of the env is assessed;
``--problems N`` assesses the first N only (the loader then needs ``default_pass_rate``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "difficulty",
        help="per-problem pass rate of a model on a k15 env (a difficulty file)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", required=True, help="env id (k15/... or a registered one)")
    p.add_argument("--env-kwargs", default="{}", help="JSON kwargs for the env (default: {})")
    p.add_argument("--model", required=True, help="registered model name or HF directory")
    p.add_argument("--samples", type=int, default=8, help="responses per problem (default: 8)")
    p.add_argument("--out", required=True, help="difficulty file: .json, .jsonl or .csv")
    p.add_argument("--problems", type=int, help="assess only the first N problems")
    p.add_argument("--max-tokens", type=int, default=256, help="response token cap (default: 256)")
    p.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    p.add_argument("--top-p", type=float, default=1.0, help="default: 1.0")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    p.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="engine sampling seed (default: 0)")
    p.add_argument("--batch-problems", type=int, default=32, help="problems per generate call")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("samples", "max_tokens", "batch_problems"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    if args.problems is not None and args.problems < 1:
        raise SystemExit(f"--problems ({args.problems}) must be >= 1")
    if not str(args.out).lower().endswith((".json", ".jsonl", ".csv")):
        raise SystemExit(f"--out ({args.out}) must end in .json, .jsonl or .csv")
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--env-kwargs is not JSON ({args.env_kwargs!r}): {err}") from None
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    return env_kwargs


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.env_factory import make_reasoning_env
    from rllib_k15.sampling.difficulty import pass_rates, write_difficulty_file

    env_kwargs = _check(args)
    params = SamplingParams(
        n=args.samples, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens
    )
    env = make_reasoning_env(args.env, env_kwargs)
    reasoning_env = env.unwrapped
    n = len(reasoning_env) if args.problems is None else min(args.problems, len(reasoning_env))
    engine_kwargs: dict[str, Any] = {"seed": args.seed, "dtype": args.dtype}
    if args.engine == "vllm":
        engine_kwargs["max_model_len"] = args.max_tokens + 1024  # prompt headroom
    engine = make_engine(args.engine, args.model, **engine_kwargs)
    try:
        rates = pass_rates(
            engine, reasoning_env, range(n), params, batch_problems=args.batch_problems
        )
        ids = [str(reasoning_env.problem(i).id) for i in range(n)]
    finally:
        engine.close()
        env.close()
    metadata = {
        "env": args.env, "env_kwargs": env_kwargs, "model": str(args.model),
        "samples": args.samples, "max_tokens": args.max_tokens,
        "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "num_problems": len(reasoning_env),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_difficulty_file(out, rates, problem_ids=ids, metadata=metadata)
    mean = sum(rates) / len(rates)
    solved, never = sum(r == 1.0 for r in rates), sum(r == 0.0 for r in rates)
    print(
        f"{n} problems × {args.samples} samples: mean pass rate {mean:.3f}, "
        f"{solved} always solved, {never} never solved; written to {out}"
    )
    return 0
