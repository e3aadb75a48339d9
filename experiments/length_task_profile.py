"""Which task makes reasoning length pay? A measured profile of the base model.

For each candidate task, the embedded SmolLM2-135M-Instruct answers the first ``--problems``
problems of the task's ``test`` split ``--samples`` times at T = 1 in two modes:

- **reasoning**: the env's own instruction, ``--max-tokens`` tokens (the model may write
  out steps);
- **answer-only**: an instruction that forbids working, ``--answer-tokens`` tokens.

A task where length pays is one where the base model scores something (5-25 % Pass@1), the
reasoning mode beats the answer-only mode, and within the reasoning mode correct answers
are not only the shortest ones. Written to ``docs/results/length_task_profile/``
(``profile.json`` with every sample's length and correctness, ``table.md``)::

    python experiments/length_task_profile.py                # all candidates, ~20 min on 2 cores
    python experiments/length_task_profile.py --only arith_l2 countdown_l1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs/results/length_task_profile"
ANSWER_ONLY = "Reply with only the final answer in \\boxed{}. Do not show any working."

CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "arith_l1": ("k15/Arithmetic-v0", {"difficulty": 1, "size": 7}),
    "arith_l2": ("k15/Arithmetic-v0", {"difficulty": 2}),
    "arith_l3": ("k15/Arithmetic-v0", {"difficulty": 3}),
    "arith_l4": ("k15/Arithmetic-v0", {"difficulty": 4}),
    "chain_sum_l1": ("k15/ReasoningGym-v0", {"dataset": "chain_sum", "difficulty": 1}),
    "chain_sum_l2": ("k15/ReasoningGym-v0", {"dataset": "chain_sum", "difficulty": 2}),
    "chain3_d1": (
        "k15/ReasoningGym-v0",
        {
            "dataset": "chain_sum",
            "config": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
        },
    ),
    "chain4_d1": (
        "k15/ReasoningGym-v0",
        {
            "dataset": "chain_sum",
            "config": {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1},
        },
    ),
    "countdown_l1": ("k15/Countdown-v0", {"difficulty": 1}),
    "gsm_symbolic_l1": ("k15/GSMSymbolic-v0", {"difficulty": 1}),
}


def summarize(mode: dict[str, Any]) -> dict[str, float]:
    """Pass@1 with its problem-bootstrap interval, mean tokens, and Pass@1 by length tercile."""
    from rllib_k15.evaluation.intervals import pass_at_1_interval

    correct = np.array(mode["correct"], dtype=float)
    tokens = np.array(mode["tokens"], dtype=float)
    low, high = pass_at_1_interval(mode["correct"])
    edges = np.quantile(tokens, [1 / 3, 2 / 3])
    bucket = np.digitize(tokens, edges)
    by_tercile = [float(correct[bucket == b].mean()) if (bucket == b).any() else float("nan")
                  for b in range(3)]  # fmt: skip
    return {
        "pass_at_1": float(correct.mean()), "low": low, "high": high,
        "mean_tokens": float(tokens.mean()), "tercile_edges": edges.tolist(),
        "pass_by_length_tercile": by_tercile,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CANDIDATES))
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args(argv)

    from k15_envs.splits import SplitError
    from tqdm import tqdm

    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.env_factory import make_reasoning_env
    from rllib_k15.evaluation.evaluate import sample_and_grade
    from rllib_k15.hardware import _cpuinfo, decide_precision

    precision = decide_precision("auto")
    engine = make_engine("vllm", args.model, seed=0, max_model_len=args.max_tokens + 1024)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "profile.json"
    doc = json.loads(path.read_text()) if path.exists() else {"tasks": {}}
    doc["settings"] = {
        "model": args.model, "problems": args.problems, "samples": args.samples,
        "max_tokens": args.max_tokens, "answer_tokens": args.answer_tokens,
        "temperature": 1.0, "split": "test", "answer_only_instruction": ANSWER_ONLY,
        "cpu": _cpuinfo()[0], "cpu_flags": list(precision.cpu_flags),
        "precision": precision.dtype,
    }  # fmt: skip
    names = args.only or list(CANDIDATES)
    try:
        for name in tqdm(names, desc="tasks"):
            env_id, kwargs = CANDIDATES[name]
            kwargs = {"split": "test", "size": args.problems, **kwargs}
            entry: dict[str, Any] = {"env": env_id, "env_kwargs": kwargs}
            modes = {
                "reasoning": ({}, args.max_tokens),
                "answer_only": ({"instruction": ANSWER_ONLY}, args.answer_tokens),
            }
            for mode, (extra, max_tokens) in modes.items():
                try:
                    env = make_reasoning_env(env_id, {**kwargs, **extra})
                except SplitError as err:  # a small task: all of its test split
                    kwargs["size"] = err.found
                    env = make_reasoning_env(env_id, {**kwargs, **extra})
                params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=max_tokens)
                n = min(args.problems, len(env.unwrapped))
                raw = sample_and_grade(engine, env.unwrapped, params, n)
                env.close()
                entry[mode] = {**summarize(raw), "raw": raw}
                print(f"{name} {mode}: {entry[mode]['pass_at_1']:.3f} "
                      f"[{entry[mode]['low']:.3f}, {entry[mode]['high']:.3f}] "
                      f"{entry[mode]['mean_tokens']:.1f} tok", flush=True)  # fmt: skip
            doc["tasks"][name] = entry
            path.write_text(json.dumps(doc, indent=1) + "\n")
    finally:
        engine.close()
    write_table(doc)
    return 0


def write_table(doc: dict[str, Any]) -> None:
    """``table.md``: one row per task, both modes side by side."""
    s = doc["settings"]
    lines = [
        "# Base-model profile: where does reasoning length pay?", "",
        f"{s['model']}, `test` split, first {s['problems']} problems × {s['samples']} samples, "
        f"T = 1; reasoning ≤ {s['max_tokens']} tokens, answer-only ≤ {s['answer_tokens']} "
        f"tokens. Machine: 2 cores, {s['cpu']} "
        f"(flags: {', '.join(s['cpu_flags']) or 'no native bf16'}), "
        f"precision {s['precision']}. 95 % intervals: bootstrap "
        "over problems. Command: `python experiments/length_task_profile.py`.", "",
        "| task | reasoning Pass@1 | tokens | answer-only Pass@1 | Pass@1 by length tercile "
        "(short / mid / long) |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, e in doc["tasks"].items():
        r, a = e["reasoning"], e["answer_only"]
        terciles = " / ".join(f"{x:.2f}" for x in r["pass_by_length_tercile"])
        lines.append(
            f"| {name} | {r['pass_at_1']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
            f"{r['mean_tokens']:.0f} | {a['pass_at_1']:.3f} [{a['low']:.3f}, {a['high']:.3f}] | "
            f"{terciles} |"
        )
    (OUT / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
