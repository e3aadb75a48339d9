"""``k15 long2short internalize``: implicit CoT by stepwise internalization (multiplication).

    k15 long2short internalize --model smollm2-135m-instruct --out runs/internalize \\
        [--sizes 2x2,3x3] [--num-train 400] [--num-test 50] [--cot-epochs 2] \\
        [--remove-per-epoch 8] [--smoothing-lambda 4] [--final-epochs 1] [--lr 5e-5] \\
        [--batch-size 16] [--engine vllm|hf] [--seed 0]

Generates ``a * b`` problems of the ``--sizes`` (digits of a x digits of b) with an explicit
CoT (partial products, then their sums) and the answer after ``####``; train and test are
disjoint by a hash of the question. Fine-tunes on the full CoT for ``--cot-epochs``, then
removes ``--remove-per-epoch`` more CoT tokens from the front every epoch (each example
s + o tokens, o ~ exp(−λ o); the optimiser is reset whenever s grows) until no CoT is left,
then ``--final-epochs`` with none. After every epoch: exact-answer accuracy and generated CoT
tokens on the test problems. Writes the final HF model to ``--out``, ``problems.jsonl`` (a
``k15/Math-v0`` dataset, for ``k15 eval``), ``report.json``, ``internalize.png`` and
``metrics.jsonl``. A rerun resumes after the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

__all__ = ["add_subparser", "parse_sizes", "run"]


def add_subparser(sub: Any) -> None:
    p = sub.add_parser(
        "internalize",
        help="implicit CoT: remove CoT tokens from the front epoch by epoch (multiplication)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registered model name or HF directory")
    p.add_argument("--out", required=True, help="output directory (the final HF model)")
    p.add_argument("--sizes", default="2x2", help="digits of a x digits of b, e.g. 2x2,3x3")
    p.add_argument("--num-train", type=int, default=400, help="train problems (default: 400)")
    p.add_argument("--num-test", type=int, default=50, help="test problems (default: 50)")
    p.add_argument("--data-seed", type=int, default=0, help="problem generator seed")
    p.add_argument("--test-fraction", type=float, default=0.1, help="hash split share of test")
    p.add_argument("--cot-epochs", type=int, default=2, help="stage-0 epochs on the full CoT")
    p.add_argument("--remove-per-epoch", type=int, default=8, help="Δ: CoT tokens per epoch")
    p.add_argument(
        "--smoothing-lambda", type=float, default=4.0, help="λ of P(o) ∝ exp(−λo); inf: off"
    )
    p.add_argument("--final-epochs", type=int, default=1, help="epochs with no CoT at the end")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--no-chat-template", action="store_true", help="train on the raw prompt")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    p.add_argument("--save-dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"2x2,3x4"`` -> ``((2, 2), (3, 4))``; a ``SystemExit`` naming ``--sizes`` otherwise."""
    sizes = []
    for part in text.split(","):
        da, x, db = part.strip().lower().partition("x")
        if not (x and da.isdigit() and db.isdigit() and 1 <= int(da) <= 9 and 1 <= int(db) <= 9):
            raise SystemExit(f"--sizes: {part!r} is not DxD with 1-9 digits, e.g. 2x2,3x3")
        if int(db) < 2:
            raise SystemExit(f"--sizes: {part!r}: b needs >= 2 digits (a CoT with a sum)")
        sizes.append((int(da), int(db)))
    return tuple(sizes)


def _check(args: argparse.Namespace) -> None:
    """Flag validation (a ``SystemExit`` naming the flag)."""
    for name in ("num_train", "num_test", "remove_per_epoch", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    for name in ("cot_epochs", "final_epochs"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 0")
    if not 0 < args.test_fraction < 1:
        raise SystemExit(f"--test-fraction ({args.test_fraction}) must be in (0, 1)")
    if not args.smoothing_lambda > 0 or math.isnan(args.smoothing_lambda):
        raise SystemExit(f"--smoothing-lambda ({args.smoothing_lambda}) must be > 0 (inf: off)")
    if args.lr <= 0:
        raise SystemExit(f"--lr ({args.lr}) must be > 0")


def run(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.internalize_run import InternalizeSettings, run_internalize
    from rllib_k15.models import ModelNotFoundError

    _check(args)
    sft = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm if args.max_grad_norm > 0 else None,
        "bf16": args.bf16,
        "use_chat_template": not args.no_chat_template,
    }
    settings = InternalizeSettings(
        model=str(args.model), out=str(args.out), sizes=parse_sizes(args.sizes),
        num_train=args.num_train, num_test=args.num_test, data_seed=args.data_seed,
        test_fraction=args.test_fraction, cot_epochs=args.cot_epochs,
        remove_per_epoch=args.remove_per_epoch, smoothing_lambda=args.smoothing_lambda,
        final_epochs=args.final_epochs, engine=args.engine, sft=sft,
        save_dtype=args.save_dtype, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    try:
        report = run_internalize(settings)
    except (ValueError, FileNotFoundError, ImportError, ModelNotFoundError) as err:
        print(f"k15 long2short internalize: error: {err}", file=sys.stderr)
        return 2
    last = report["stages"][-1]
    print(
        f"{len(report['stages'])} epochs, longest CoT {report['max_cot_tokens']} tokens, "
        f"{len(report['optimizer_resets'])} optimiser resets; last epoch: accuracy "
        f"{last['accuracy']}, generated CoT tokens {last['mean_cot_tokens']}"
    )
    kwargs = json.dumps(report["eval_env"]["env_kwargs"])
    print(
        f"token-efficiency plane: k15 eval --model {args.out} --env k15/Math-v0 "
        f"--env-kwargs '{kwargs}' --label internalize --out results/eval.jsonl"
    )
    return 0
