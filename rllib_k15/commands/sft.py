"""``k15 sft``: supervised fine-tuning on (prompt, response) pairs, loss on response tokens.

    k15 sft --model M --data sft.parquet --out DIR [--epochs 3 --lr 1e-5 --bf16]

``--data`` is the SFT parquet written by ``k15 long2short shortest-rs`` (columns
problem_id, prompt, response, response_tokens, num_samples, num_correct). The prompt is
rendered with the model's chat template. Writes a plain HF directory to ``--out`` (in the
input model's dtype unless ``--save-dtype`` says otherwise), ``metrics.jsonl`` (one line per
optimiser step) and ``k15_sft.json`` (settings and final metrics).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sft",
        help="fine-tune on prompt/response pairs (e.g. shortest-rs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registered model name or HF directory")
    p.add_argument("--data", required=True, help="SFT parquet (k15 long2short shortest-rs)")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument(
        "--max-length", type=int, default=2048, help="longer prompt+response examples are skipped"
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (fp32 master weights); slower than fp32 on AVX2-only CPUs",
    )
    p.add_argument(
        "--no-chat-template",
        action="store_true",
        help="train on the raw prompt text instead of the chat-templated one",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--save-dtype",
        default="auto",
        help="dtype of the saved weights: auto (= input model's), bfloat16, float32",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.data import read_sft_parquet
    from rllib_k15.long2short.sft import SFTConfig, train_sft
    from rllib_k15.long2short.training import JsonlLog, config_from_args, run_training_command
    from rllib_k15.metric_names import SFT_EPOCH_LOSSES, SFT_NUM_EXAMPLES, SFT_STEPS

    config = config_from_args(SFTConfig, args)

    def train(model: Any, tokenizer: Any, examples: list, metrics_path: Path) -> dict:
        return train_sft(model, tokenizer, examples, config, on_step=JsonlLog(metrics_path))

    def report(metrics: dict[str, Any], out: Path) -> str:
        epochs = ", ".join(f"{v:.4f}" for v in metrics[SFT_EPOCH_LOSSES])
        return (
            f"sft: {metrics[SFT_NUM_EXAMPLES]} examples, {metrics[SFT_STEPS]} steps, "
            f"epoch losses [{epochs}] -> {out}"
        )

    return run_training_command(
        args,
        command="sft",
        config=config,
        data=args.data,
        read=read_sft_parquet,
        what="examples",
        train=train,
        inputs={"model": str(args.model), "data": str(args.data)},
        report=report,
    )
