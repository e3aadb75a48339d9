"""``k15 export CKPT OUT``: a K15MirrorDescent checkpoint's policy as a plain HF directory."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint's policy to a plain HF directory")
    p.add_argument("checkpoint", help="RLlib checkpoint directory (e.g. runs/k15/checkpoint)")
    p.add_argument("out", help="output directory")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument(
        "--adapter", action="store_true", help="LoRA policy: also write its adapter to OUT/adapter"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rllib_k15.runs.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, args.dtype, adapter=args.adapter)
    print(f"exported {args.checkpoint} -> {out}")
    return 0
