"""``k15 warmup``: the long-CoT SFT warm-up (the Kimi k1.5 report, §2.3).

    k15 warmup --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 2, "split": "train"}' --problems 256 --samples 8 \\
        --max-tokens 256 --out runs/warmup [--engine vllm|hf] [--keep-per-problem 2] \\
        [--template reasoning|FILE] [--epochs 2 --lr 1e-5] \\
        [--eval-env-kwargs '{"difficulty": 2, "split": "test"}']

Four steps, each written into ``--out`` and skipped when its output is there (rerun the same
command to resume; an output made with other settings is an error):

1. sample ``--samples`` responses per problem at T=1 to the env prompt wrapped in a
   reasoning template (plan, solve step by step, check, reflect, explore, then answer in the
   env's format) -> warmup_samples.parquet. ``--template FILE``: a text with ``{problem}``;
2. rejection sampling: keep correct, untruncated responses, the longest first, at most
   ``--keep-per-problem`` per problem, paired with the plain env prompt ->
   warmup_sft.parquet (the ``k15 sft`` schema). Nothing kept: exit 1 before SFT;
3. SFT of ``--model`` on it -> model/ (a HF directory for ``k15 eval`` or
   ``training(hf_model=...)``);
4. base and warmed model on ``--eval-env-kwargs`` problems (default: ``--env-kwargs`` with
   ``"split": "test"``; without a ``"size"``, ``--eval-problems`` is used where the split is
   smaller than the env's default size), plain prompts: Pass@1, response tokens and
   structure markers -> eval_base.json, eval_warmed.json, warmup_report.json and .md.

The base eval runs before SFT, on the sampling engine. Documentation: docs/data_warmup.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "warmup",
        help="long-CoT SFT warm-up: templated sampling, rejection sampling, SFT, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registered model name or HF directory")
    p.add_argument("--env", required=True, help="env id (k15/... or a registered one)")
    p.add_argument("--env-kwargs", default="{}", help="JSON kwargs of the sampling env")
    p.add_argument("--out", required=True, help="output directory (resumable)")
    p.add_argument("--problems", type=int, help="sample the first N problems (default: all)")
    p.add_argument("--samples", type=int, default=8, help="responses per problem (default: 8)")
    p.add_argument("--max-tokens", type=int, default=256, help="response token cap (default: 256)")
    p.add_argument("--keep-per-problem", type=int, default=2, help="kept responses (default: 2)")
    p.add_argument("--template", default="reasoning", help="'reasoning' or a file with {problem}")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    p.add_argument("--dtype", default="auto", help="engine dtype: auto, float32, bfloat16")
    p.add_argument("--seed", type=int, default=0, help="sampling and SFT seed (default: 0)")
    p.add_argument("--epochs", type=int, default=2, help="SFT epochs (default: 2)")
    p.add_argument("--lr", type=float, default=1e-5, help="SFT AdamW lr (default: 1e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="SFT examples per step")
    p.add_argument("--max-length", type=int, default=2048, help="longer examples are skipped")
    p.add_argument("--bf16", action="store_true", help="SFT in bf16 autocast (fp32 master)")
    p.add_argument("--save-dtype", default="auto", help="auto (= the base's), bfloat16, float32")
    p.add_argument("--eval-env-kwargs", help="JSON kwargs of the held-out env")
    p.add_argument("--eval-problems", type=int, default=64, help="held-out problems (default: 64)")
    p.add_argument("--eval-samples", type=int, default=4, help="responses each (default: 4)")
    p.add_argument("--eval-max-tokens", type=int, help="eval token cap (default: --max-tokens)")
    p.add_argument("--batch-problems", type=int, default=32, help="problems per generate call")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (None stays None); else a SystemExit naming ``flag``."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"{flag} is not JSON ({text!r}): {err}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{flag} must be a JSON object, got {text!r}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Counts must be >= 1 (the eval token cap and --problems when given)."""
    names = ["samples", "max_tokens", "keep_per_problem", "epochs", "batch_size", "max_length",
             "eval_problems", "eval_samples", "batch_problems"]  # fmt: skip
    names += [n for n in ("problems", "eval_max_tokens") if getattr(args, n) is not None]
    for name in names:
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    if args.lr <= 0:
        raise SystemExit(f"--lr ({args.lr}) must be > 0")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~rllib_k15.data.warmup.WarmupSettings` of the flags (validated)."""
    from rllib_k15.data.warmup import WarmupError, WarmupSettings, load_template

    _check(args)
    env_kwargs = _json_object("--env-kwargs", args.env_kwargs) or {}
    eval_kwargs = _json_object("--eval-env-kwargs", args.eval_env_kwargs)
    try:
        template = load_template(args.template)
    except WarmupError as err:
        raise SystemExit(str(err)) from None
    sft = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
           "max_length": args.max_length, "bf16": args.bf16, "seed": args.seed}  # fmt: skip
    return WarmupSettings(
        model=str(args.model), env=args.env, out=Path(args.out), env_kwargs=env_kwargs,
        eval_env_kwargs=eval_kwargs, template=template, problems=args.problems,
        samples=args.samples, max_tokens=args.max_tokens,
        keep_per_problem=args.keep_per_problem, sft=sft, save_dtype=args.save_dtype,
        engine=args.engine, dtype=args.dtype, eval_problems=args.eval_problems,
        eval_samples=args.eval_samples, eval_max_tokens=args.eval_max_tokens, seed=args.seed,
        batch_problems=args.batch_problems, progress=not args.no_progress,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from rllib_k15.data.warmup import NothingKeptError, run_warmup

    settings = settings_from_args(args)
    if args.eval_env_kwargs is None and "split" not in settings.env_kwargs:
        print(
            'k15 warmup: warning: --env-kwargs has no "split"; the held-out problems '
            '(split "test") may also be among the sampled ones. Pass "split": "train".',
            file=sys.stderr,
        )
    try:
        report = run_warmup(settings)
    except NothingKeptError as err:
        print(f"k15 warmup: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # WarmupError, or SFT's own checks
        print(f"k15 warmup: error: {err}", file=sys.stderr)
        return 2
    d = report["delta"]
    print(
        f"warm-up: kept {report['selection']['num_kept']} of "
        f"{report['selection']['num_sampled']} responses; warmed − base: Pass@1 "
        f"{d['pass_at_1']:+.3f}, tokens {d['mean_tokens']:+.1f}, markers/response "
        f"{d['markers_per_response']['total']:+.2f} -> {settings.out}"
    )
    return 0
