"""``k15 dpo``: DPO on preference pairs against a frozen reference model.

    k15 dpo --model M --pairs pairs.parquet --beta 0.1 --out DIR [--ref-model R --bf16]

``--pairs`` is the parquet written by ``k15 long2short dpo-pairs`` (columns problem_id,
prompt, chosen, rejected, chosen_tokens, rejected_tokens, rejected_correct). The reference
defaults to the starting model itself; its sequence log-probs are computed once before
training. Writes a plain HF directory to ``--out``, ``metrics.jsonl`` (one line per step:
loss, implicit rewards, reward accuracy, margin) and ``k15_dpo.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dpo",
        help="DPO training on preference pairs (e.g. dpo-pairs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="policy to train (name or HF directory)")
    p.add_argument("--pairs", required=True, help="pairs parquet (k15 long2short dpo-pairs)")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--ref-model", help="frozen reference (default: --model)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO β (default: 0.1)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--batch-size", type=int, default=4, help="pairs per optimiser step")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument(
        "--max-length",
        type=int,
        default=2048,
        help="pairs whose prompt + longer response exceed it are skipped",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (fp32 master weights); slower than fp32 on AVX2-only CPUs",
    )
    p.add_argument("--no-chat-template", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--save-dtype",
        default="auto",
        help="dtype of the saved weights: auto (= input model's), bfloat16, float32",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.data import read_pairs_parquet
    from rllib_k15.long2short.dpo_train import DPOTrainConfig, train_dpo
    from rllib_k15.long2short.training import (
        JsonlLog,
        config_from_args,
        load_for_training,
        run_training_command,
    )
    from rllib_k15.metric_names import DPO_LOSS, DPO_NUM_PAIRS, DPO_REWARD_ACCURACY, DPO_STEPS

    config = config_from_args(DPOTrainConfig, args, beta=args.beta)

    def check() -> None:
        if args.beta <= 0:
            raise ValueError(f"--beta ({args.beta}) must be > 0")

    def train(model: Any, tokenizer: Any, pairs: list, metrics_path: Path) -> dict:
        ref = load_for_training(args.ref_model)[0].eval() if args.ref_model else None
        return train_dpo(model, ref, tokenizer, pairs, config, on_step=JsonlLog(metrics_path))

    def report(metrics: dict[str, Any], out: Path) -> str:
        return (
            f"dpo: {metrics[DPO_NUM_PAIRS]} pairs, {metrics[DPO_STEPS]} steps, "
            f"last-epoch loss {metrics[DPO_LOSS]:.4f}, reward accuracy "
            f"{metrics[DPO_REWARD_ACCURACY]:.2f} -> {out}"
        )

    return run_training_command(
        args,
        command="dpo",
        config=config,
        data=args.pairs,
        read=read_pairs_parquet,
        what="pairs",
        train=train,
        inputs={
            "model": str(args.model),
            "ref_model": str(args.ref_model or args.model),
            "pairs": str(args.pairs),
        },
        report=report,
        check=check,
    )
