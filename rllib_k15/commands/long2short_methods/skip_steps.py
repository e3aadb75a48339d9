"""``k15 long2short skip-steps``: learning to skip steps on chain sums, round by round.

    k15 long2short skip-steps --model smollm2-135m-instruct --out runs/skip_steps \\
        [--config '{"min_terms": 3, "max_terms": 5, "min_digits": 1, "max_digits": 1}'] \\
        [--num-train 200] [--num-test 50] [--rounds 2] [--from-base] [--warm-start] \\
        [--samples 1] [--temperature 0] [--max-tokens 128] [--epochs 3] [--lr 5e-5] \\
        [--engine vllm|hf] [--seed 0]

Problems: ``k15/ReasoningGym-v0`` ``dataset="chain_sum"`` with ``--config`` (train split for
training, test split for evaluation). Round 0 fine-tunes on the full step-by-step solutions
("Solve in N steps."); every round then asks the model for N−1 ... 1 steps, keeps the correct
answers with exactly that many step lines and trains the next round on them mixed with the
originals (continuing from the last weights unless ``--from-base``). Writes the final HF
model to ``--out`` (plus one per round under ``rounds/``), ``report.json`` and
``skip_steps.png`` (steps, accuracy, tokens per round). A rerun skips finished rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_subparser", "run"]

DEFAULT_CONFIG = '{"min_terms": 3, "max_terms": 5, "min_digits": 1, "max_digits": 1}'


def add_subparser(sub: Any) -> None:
    p = sub.add_parser(
        "skip-steps",
        help="learning to skip steps: iterative SFT on shorter self-generated solutions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registered model name or HF directory")
    p.add_argument("--out", required=True, help="output directory (the final HF model)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="chain_sum generator fields (JSON)")
    p.add_argument("--num-train", type=int, default=200, help="train problems (default: 200)")
    p.add_argument("--num-test", type=int, default=50, help="test problems (default: 50)")
    p.add_argument("--env-seed", type=int, default=0, help="problem generator seed")
    p.add_argument("--rounds", type=int, default=2, help="skipping rounds after round 0")
    p.add_argument("--from-base", action="store_true", help="each round starts from --model")
    p.add_argument(
        "--warm-start", action="store_true", help="also train on generated shorter solutions"
    )
    p.add_argument("--samples", type=int, default=1, help="answers per shorter-step request")
    p.add_argument("--temperature", type=float, default=0.0, help="of those (default: greedy)")
    p.add_argument("--max-tokens", type=int, default=128, help="response token cap")
    p.add_argument(
        "--no-arithmetic-check", action="store_true", help="accept steps whose sums are wrong"
    )
    p.add_argument("--epochs", type=int, default=3, help="SFT epochs per round")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument("--max-length", type=int, default=1024, help="longer examples are skipped")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--no-chat-template", action="store_true", help="train on the raw prompt")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    p.add_argument("--save-dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Flag validation (a ``SystemExit`` naming the flag); returns the ``--config`` object."""
    for name in ("num_train", "num_test", "samples", "max_tokens", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    if args.rounds < 0:
        raise SystemExit(f"--rounds ({args.rounds}) must be >= 0")
    if args.temperature < 0 or args.lr <= 0:
        raise SystemExit(f"--temperature ({args.temperature}) must be >= 0, --lr ({args.lr}) > 0")
    if args.samples > 1 and args.temperature == 0:
        raise SystemExit(f"--samples {args.samples} needs --temperature > 0 (greedy repeats)")
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config is not JSON ({args.config!r}): {err}") from None
    if not isinstance(config, dict):
        raise SystemExit(f"--config must be a JSON object, got {args.config!r}")
    return config


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from rllib_k15.long2short.sft import SFTConfig
    from rllib_k15.long2short.skip_steps_run import SkipStepsSettings, run_skip_steps
    from rllib_k15.long2short.training import config_from_args
    from rllib_k15.models import ModelNotFoundError

    config = _check(args)
    sft = dataclasses.asdict(config_from_args(SFTConfig, args))
    for name in ("seed", "progress"):  # set per round
        sft.pop(name)
    settings = SkipStepsSettings(
        model=str(args.model), out=str(args.out), config=config, num_train=args.num_train,
        num_test=args.num_test, env_seed=args.env_seed, rounds=args.rounds,
        continue_training=not args.from_base, warm_start=args.warm_start,
        samples=args.samples, temperature=args.temperature, max_tokens=args.max_tokens,
        check_arithmetic=not args.no_arithmetic_check, engine=args.engine, sft=sft,
        save_dtype=args.save_dtype, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    try:
        report = run_skip_steps(settings)
    except (ValueError, FileNotFoundError, ImportError, ModelNotFoundError) as err:
        print(f"k15 long2short skip-steps: error: {err}", file=sys.stderr)
        return 2
    for row in report["rounds"]:
        t = row["test"]
        print(
            f"round {row['round']}: accuracy {t['accuracy']}, mean steps (correct) "
            f"{t['mean_steps_correct']}, mean tokens {t['mean_tokens']}, "
            f"{row['skipped_solutions']} skipped solutions in its data"
        )
    env_kwargs = json.dumps(report["test_env"]["env_kwargs"])
    print(
        "token-efficiency plane: k15 eval --model "
        f"{args.out} --env k15/ReasoningGym-v0 --env-kwargs '{env_kwargs}' "
        "--label skip-steps --out results/eval.jsonl"
    )
    return 0
