"""Rollout-engine benchmark: generated tokens/s of vLLM vs ``transformers.generate`` on the
same prompts, engine start time, and in-place weight-load time.

    python -m bench.engine_throughput [--model smollm2-135m-instruct] [--dtype auto]
        [--prompts 32] [--samples 4] [--max-tokens 128] [--engines vllm,hf] [--enforce-eager]
        [--out bench/results/engine_throughput.json]

Prompts are the first ``--prompts`` problems of k15/Arithmetic-v0 (difficulty 1), sampled
at temperature 1. The weight-load time is ``VLLMEngine.load_weights`` of the model's own
HF state dict (what one RL weight sync costs). Writes one JSON object per engine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--engines", default="vllm,hf")
    parser.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        help="vLLM with/without torch.compile (default: the engine's choice)",
    )
    parser.add_argument("--out", default="bench/results/engine_throughput.json")
    args = parser.parse_args()

    import gymnasium as gym
    import k15_envs  # noqa: F401

    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.models import load_hf_model, preferred_dtype, resolve_model

    path = resolve_model(args.model)
    dtype = preferred_dtype() if args.dtype == "auto" else args.dtype
    env = gym.make("k15/Arithmetic-v0", difficulty=1, size=max(args.prompts, 1), seed=0).unwrapped
    messages = [env.problem(i).prompt for i in range(args.prompts)]
    params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    results = []
    for kind in args.engines.split(","):
        started = time.perf_counter()
        kwargs = (
            {"max_model_len": 1024, "enforce_eager": args.enforce_eager} if kind == "vllm" else {}
        )
        engine = make_engine(kind, path, seed=0, dtype=dtype, **kwargs)
        start_s = time.perf_counter() - started
        prompts = [engine.encode_prompt(m) for m in messages]
        engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up
        t0 = time.perf_counter()
        groups = engine.generate(prompts, params)
        seconds = time.perf_counter() - t0
        tokens = sum(c.num_tokens for g in groups for c in g)
        row = {
            "engine": kind, "enforce_eager": getattr(engine, "enforce_eager", None),
            "model": args.model, "dtype": dtype, "prompts": args.prompts,
            "samples": args.samples, "max_tokens": args.max_tokens, "start_seconds": start_s,
            "generated_tokens": tokens, "generate_seconds": seconds,
            "tokens_per_second": tokens / seconds, "loadavg_1m": os.getloadavg()[0],
            "cpu_count": os.cpu_count(),
        }  # fmt: skip
        if kind == "vllm":
            state = load_hf_model(path, dtype=dtype).state_dict()
            loads = []
            for _ in range(3):
                engine.load_weights(state)
                loads.append(engine.last_load_seconds)
            row["load_weights_seconds"] = loads
        engine.close()
        print(json.dumps(row), flush=True)
        results.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
