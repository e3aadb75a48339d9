"""``k15 long2short c3ot``: C3oT, conditioned training on long and compressed CoTs.

    k15 long2short c3ot --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 4, "split": "train", "size": 256}' --samples 8 \\
        --max-tokens 256 --out runs/c3ot [--compressor rule|model] [--short-only] \\
        [--condition short|long] [--engine vllm|hf] [--eval-problems 64]

Takes the longest correct response per problem (sampled from ``--model``, or from a
``--from-samples`` file of ``k15 long2short shortest-rs --save-samples``) as the long CoT,
compresses it (``rule``: a deterministic condenser for arithmetic CoTs that keeps the
equations leading to the answer and the answer line; ``model``: ``--model`` prompted to
condense, keeping only correct, shorter outputs), and fine-tunes on both, the prompt
prefixed ``[LONG]`` for the long CoT and ``[SHORT]`` for the short one. The markers are
plain text; ``--out``'s chat template prepends ``[SHORT]`` to every user message, so
``k15 eval --model OUT`` measures the short mode as it is. ``--condition long`` also writes
``OUT/long_mode`` (same weights, ``[LONG]`` template). ``--short-only`` is the paper's
baseline: SFT on the compressed CoTs alone, no markers. report.json holds the compression
statistics and the base vs trained Pass@1 and tokens on the test split; steps are skipped
when their output was made with the same settings. Docs: docs/long2short_system1_c3ot.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from rllib_k15.commands.long2short_methods.system1 import (
    add_method_args,
    run_method,
    settings_from_args,
)

__all__ = ["add_subparser"]


def add_subparser(sub: Any) -> None:
    p = sub.add_parser(
        "c3ot",
        help="C3oT: SFT on [LONG]/[SHORT]-conditioned long and compressed CoTs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_method_args(p)
    p.add_argument(
        "--compressor",
        choices=("rule", "model"),
        default="rule",
        help="rule: deterministic arithmetic condenser; model: --model prompted to condense "
        "(default: rule)",
    )
    p.add_argument(
        "--short-only",
        action="store_true",
        help="baseline: train on the compressed CoTs alone, without condition markers",
    )
    p.add_argument(
        "--condition",
        choices=("short", "long"),
        default="short",
        help="short: OUT prepends [SHORT] (default); long: also write OUT/long_mode, "
        "whose template prepends [LONG], and evaluate it",
    )
    p.add_argument("--per-problem", type=int, default=1, help="long CoTs per problem (default: 1)")
    p.add_argument(
        "--compress-samples",
        type=int,
        default=4,
        help="--compressor model: candidates per long CoT (default: 4)",
    )
    p.add_argument(
        "--compress-temperature",
        type=float,
        default=0.7,
        help="--compressor model: sampling temperature (default: 0.7)",
    )
    p.set_defaults(func=run)


def _point(result: dict[str, Any] | None) -> str:
    if not result:
        return "not evaluated"
    return f"Pass@1 {100 * result['pass_at_1']:.1f}% at {result['mean_tokens']:.1f} tokens"


def run(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.c3ot import run_c3ot

    settings = settings_from_args(args)
    for flag, value in (("--per-problem", args.per_problem),
                        ("--compress-samples", args.compress_samples)):  # fmt: skip
        if value < 1:
            raise SystemExit(f"{flag} ({value}) must be >= 1")
    if args.compress_temperature < 0:
        raise SystemExit(f"--compress-temperature ({args.compress_temperature}) must be >= 0")
    if args.short_only and args.condition == "long":
        raise SystemExit("--condition long needs the conditioned model; --short-only has none")
    code, report = run_method("c3ot", lambda log: run_c3ot(
        settings, compressor=args.compressor, short_only=args.short_only,
        condition=args.condition, per_problem=args.per_problem,
        compress_samples=args.compress_samples,
        compress_temperature=args.compress_temperature, log=log,
    ))  # fmt: skip
    if code == 0:
        lines = [f"{label} {_point(result)}" for label, result in report["eval"].items()]
        print(f"c3ot: {'; '.join(lines)}; model and report.json in {settings.out}")
    return code
