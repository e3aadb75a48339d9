"""``k15 long2short ccot``: compressed chain of thought with continuous contemplation tokens.

    k15 long2short ccot --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 2}' --train-problems 200 --test-problems 50 \\
        --ratios 0.1 0.2 --phi-epochs 2 --decode-epochs 2 --out runs/ccot-smollm2 \\
        --results results/eval.jsonl

Trains, per ratio r, a LoRA φ that replaces a CoT of m tokens by k = ⌈r·m⌉ continuous
embeddings (matching the frozen model's layer-l states at k evenly spaced CoT positions),
an END head that says when to stop, and a LoRA ψ that decodes the answer from them. The
training CoTs are procedural (every partial result of the env's arithmetic expression; the
env's ``train`` split) or, with ``--from-samples S.parquet``, each problem's shortest
correct sampled response. Evaluation is greedy on the env's ``test`` split, on Hugging Face
transformers (vLLM cannot feed hidden states back): Pass@1 with its interval, decoding
steps (contemplation steps + answer tokens) against the full CoT's tokens, and wall time
per problem both ways. Output: ``--out/r<r>/`` (two adapters, heads, ``ccot.json``),
``--out/report.json``, eval rows in ``--results`` for ``k15 plot token-efficiency``.
A rerun skips every step whose output exists with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_subparser"]


def add_subparser(sub: Any) -> None:
    p = sub.add_parser(
        "ccot",
        help="CCoT: continuous contemplation tokens instead of the CoT (HF only)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="base model (registered name or HF dir)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--env",
        help="env of the test split (and of procedural training CoTs); default "
        "k15/Arithmetic-v0, or the env named in the --from-samples file",
    )
    p.add_argument("--env-kwargs", default="{}", help="JSON object for the env (no split/size)")
    p.add_argument("--from-samples", metavar="PATH", help="train on correct sampled responses")
    p.add_argument("--train-problems", type=int, default=400, help="default: 400")
    p.add_argument("--test-problems", type=int, default=100, help="default: 100")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2], help="r values")
    p.add_argument("--layer", type=int, help="hidden layer l (default: the middle one)")
    p.add_argument("--loss", choices=("scaled_mse", "mse"), default="scaled_mse")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank of φ and ψ (default: 16)")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha (default: 32)")
    p.add_argument("--phi-epochs", type=int, default=3, help="epochs of φ+END (default: 3)")
    p.add_argument("--decode-epochs", type=int, default=3, help="epochs of ψ (default: 3)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW lr, both phases (default: 5e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="default: 8")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument("--max-contemplation", type=int, help="inference cap (default: 2x max k)")
    p.add_argument("--end-threshold", type=float, default=0.5, help="stop when σ(END) > this")
    p.add_argument("--answer-max-tokens", type=int, default=32, help="default: 32")
    p.add_argument(
        "--full-cot-max-tokens",
        type=int,
        default=512,
        help="cap of the greedy full-CoT baseline of --from-samples runs (default: 512)",
    )
    p.add_argument("--max-length", type=int, default=1024, help="prompt+CoT tokens kept")
    p.add_argument("--no-chat-template", action="store_true", help="raw prompt text")
    p.add_argument("--label", default="ccot", help="eval rows: <label>-r<r> (default: ccot)")
    p.add_argument("--results", metavar="JSONL", help="append the eval rows here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Flag validation; the parsed ``--env-kwargs``."""
    positive = (
        "train_problems",
        "test_problems",
        "lora_r",
        "phi_epochs",
        "decode_epochs",
        "batch_size",
        "answer_max_tokens",
        "full_cot_max_tokens",
        "max_length",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    bad = [r for r in args.ratios if not 0 < r <= 1]
    if bad or len(set(args.ratios)) != len(args.ratios):
        raise SystemExit(f"--ratios ({args.ratios}) must be distinct values in (0, 1]")
    if args.max_contemplation is not None and args.max_contemplation < 1:
        raise SystemExit(f"--max-contemplation ({args.max_contemplation}) must be >= 1")
    if not 0 < args.end_threshold < 1:
        raise SystemExit(f"--end-threshold ({args.end_threshold}) must be in (0, 1)")
    if args.lr <= 0 or args.lora_alpha <= 0:
        raise SystemExit(f"--lr ({args.lr}) and --lora-alpha ({args.lora_alpha}) must be > 0")
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--env-kwargs is not valid JSON: {err}") from err
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    return env_kwargs


def run(args: argparse.Namespace) -> int:
    env_kwargs = _check(args)
    from rllib_k15.long2short.ccot import CCoTRun, Phase
    from rllib_k15.long2short.ccot_run import run_ccot
    from rllib_k15.models import ModelNotFoundError

    common = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        progress=not args.no_progress,
    )
    env = args.env or (None if args.from_samples else "k15/Arithmetic-v0")
    config = CCoTRun(
        model=args.model,
        out=args.out,
        env=env,
        env_kwargs=env_kwargs,
        from_samples=args.from_samples,
        train_problems=args.train_problems,
        test_problems=args.test_problems,
        ratios=tuple(args.ratios),
        layer=args.layer,
        loss=args.loss,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        phi=Phase(epochs=args.phi_epochs, **common),
        decode=Phase(epochs=args.decode_epochs, **common),
        max_contemplation=args.max_contemplation,
        end_threshold=args.end_threshold,
        answer_max_tokens=args.answer_max_tokens,
        full_cot_max_tokens=args.full_cot_max_tokens,
        max_length=args.max_length,
        use_chat_template=not args.no_chat_template,
        label=args.label,
        results=args.results,
        seed=args.seed,
        progress=not args.no_progress,
    )
    try:
        report = run_ccot(config)
    except (ValueError, FileNotFoundError, ModelNotFoundError) as err:
        print(f"k15 long2short ccot: error: {err}", file=sys.stderr)
        return 2
    full = report["full_cot"]
    for r, entry in report["ratios"].items():
        row, costs = entry["row"], entry["costs"]
        print(
            f"r={r}: Pass@1 {row['pass_at_1']:.3f} [{row['pass_at_1_low']:.3f}, "
            f"{row['pass_at_1_high']:.3f}], {costs['mean_ccot_decode_steps']:.1f} decoding steps "
            f"({costs['mean_contemplation_steps']:.1f} contemplation + "
            f"{costs['mean_answer_tokens']:.1f} answer) vs {full['mean_tokens']:.1f} full-CoT "
            f"tokens ({100 * costs['decoding_steps_saved']:.0f}% saved), "
            f"wall-time speedup {costs['wall_time_speedup']:.2f}x -> {entry['dir']}"
        )
    print(
        f"report -> {args.out}/report.json" + (f", rows -> {args.results}" if args.results else "")
    )
    return 0
