"""``k15 long2short system1``: distil System 2 (reasoning) into System 1 (answer directly).

    k15 long2short system1 --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 2, "split": "train", "size": 256}' --samples 8 \\
        --max-tokens 256 --out runs/system1 [--confidence 0.6] [--answer-format boxed] \\
        [--engine vllm|hf] [--epochs 3 --lr 1e-5] [--eval-problems 64 --eval-samples 2]

Samples ``--samples`` responses per problem at ``--temperature`` (or reads a
``--from-samples`` file of ``k15 long2short shortest-rs --save-samples``), takes the majority
of the answers the env's verifier extracts, keeps problems whose majority share is at least
``--confidence`` (unsupervised: the gold answer is not used to select; how often the kept
majority is right is reported), and fine-tunes ``--model`` to answer with the majority
answer alone (``\\boxed{42}``). ``--out`` becomes a HF model directory with report.json
(problems sampled/kept, majority accuracy, System-2 vs System-1 Pass@1 and tokens on
``--eval-problems`` problems of the env's test split; 0 skips that eval) and eval.jsonl
(for ``k15 plot token-efficiency``). Every step is skipped when its output in ``--out`` was
made with the same settings: rerun the command to resume. Docs:
docs/long2short_system1_c3ot.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_method_args", "add_subparser", "run_method", "settings_from_args"]


def add_subparser(sub: Any) -> None:
    p = sub.add_parser(
        "system1",
        help="System 2 -> System 1: SFT on confident majority answers, no reasoning",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_method_args(p)
    p.add_argument(
        "--confidence",
        type=float,
        default=0.6,
        help="keep a problem when its majority answer has at least this share of the "
        "samples (inclusive; default: 0.6)",
    )
    p.add_argument(
        "--answer-format",
        choices=("boxed", "answer-tag", "answer-line"),
        default="boxed",
        help="the System-1 response: \\boxed{A}, <answer>A</answer> or 'Answer: A' "
        "(default: boxed)",
    )
    p.set_defaults(func=run)


def add_method_args(p: argparse.ArgumentParser) -> None:
    """The flags every method run shares: data, sampling, SFT, evaluation."""
    p.add_argument("--model", required=True, help="model to sample and fine-tune (name or dir)")
    p.add_argument("--out", required=True, help="output HF model directory (resumable)")
    p.add_argument("--env", help="k15 env id to sample, e.g. k15/Arithmetic-v0")
    p.add_argument("--env-kwargs", default="{}", help='JSON kwargs (use "split": "train")')
    p.add_argument(
        "--from-samples",
        metavar="PATH",
        help="a --save-samples parquet of `k15 long2short shortest-rs` instead of sampling "
        "(its env is used; no --env)",
    )
    p.add_argument("--samples", type=int, default=8, help="responses per problem (default: 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    p.add_argument("--max-tokens", type=int, default=512, help="response cap (default: 512)")
    p.add_argument("--num-problems", type=int, help="sample this many problems (default: all)")
    p.add_argument("--start", type=int, default=0, help="index of the first problem")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    p.add_argument("--dtype", default="auto", help="engine dtype: auto, float32, bfloat16")
    p.add_argument("--seed", type=int, default=0, help="sampling, SFT and eval seed")
    p.add_argument("--max-model-len", type=int, help="vLLM context (default: 2x max-tokens+1024)")
    p.add_argument("--problems-per-call", type=int, default=16, help="problems per engine call")
    p.add_argument("--epochs", type=int, default=3, help="SFT epochs (default: 3)")
    p.add_argument("--lr", type=float, default=1e-5, help="SFT AdamW lr (default: 1e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="SFT examples per step (default: 8)")
    p.add_argument("--max-length", type=int, default=2048, help="longer SFT examples are skipped")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for SFT")
    p.add_argument("--save-dtype", default="auto", help="auto (= input model's), float32, bfloat16")
    p.add_argument(
        "--eval-problems",
        type=int,
        default=32,
        help="test-split problems of the built-in eval, base vs trained (0 skips; default: 32)",
    )
    p.add_argument("--eval-samples", type=int, default=2, help="eval samples per problem")
    p.add_argument("--eval-max-tokens", type=int, help="eval response cap (default: --max-tokens)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _at_least(args: argparse.Namespace, flag: str, low: float) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is not None and value < low:
        raise SystemExit(f"{flag} ({value}) must be >= {low}")


def settings_from_args(args: argparse.Namespace) -> Any:
    """:class:`~rllib_k15.long2short.method_run.MethodSettings` from the flags; bad values exit
    with a message naming the flag."""
    from rllib_k15.long2short.method_run import MethodSettings
    from rllib_k15.long2short.sft import SFTConfig

    for flag, low in (("--samples", 1), ("--max-tokens", 1), ("--num-problems", 1),
                      ("--start", 0), ("--problems-per-call", 1), ("--epochs", 1),
                      ("--batch-size", 1), ("--max-length", 1), ("--eval-problems", 0),
                      ("--eval-samples", 1), ("--eval-max-tokens", 1),
                      ("--temperature", 0)):  # fmt: skip
        _at_least(args, flag, low)
    if args.lr <= 0:
        raise SystemExit(f"--lr ({args.lr}) must be > 0")
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--env-kwargs is not JSON ({err}): {args.env_kwargs!r}") from None
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    if args.from_samples and (args.env or env_kwargs):
        raise SystemExit("--from-samples uses the env named in that file; drop --env/--env-kwargs")
    if not args.from_samples and not args.env:
        raise SystemExit("--env is required unless --from-samples is given")
    if args.env and "split" not in env_kwargs:
        print("note: --env-kwargs sets no \"split\"; train on \"split\": \"train\" so that the "
              "test-split evaluation is held out", file=sys.stderr)  # fmt: skip
    sft = SFTConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    max_length=args.max_length, bf16=args.bf16, seed=args.seed,
                    progress=not args.no_progress)  # fmt: skip
    return MethodSettings(
        model=args.model, out=Path(args.out), env=args.env, env_kwargs=env_kwargs,
        from_samples=args.from_samples, samples=args.samples, temperature=args.temperature,
        max_tokens=args.max_tokens, num_problems=args.num_problems, start=args.start,
        engine=args.engine, dtype=args.dtype, seed=args.seed, max_model_len=args.max_model_len,
        problems_per_call=args.problems_per_call, sft=sft, save_dtype=args.save_dtype,
        eval_problems=args.eval_problems, eval_samples=args.eval_samples,
        eval_max_tokens=args.eval_max_tokens, progress=not args.no_progress,
    )  # fmt: skip


def _log(line: str) -> None:
    print(line, flush=True)


def run_method(command: str, call: Callable[[Callable[[str], None]], dict]) -> tuple[int, dict]:
    """``call(log)`` with its errors printed as ``k15 long2short <command>: error: ...``;
    returns (exit code, report)."""
    from rllib_k15.models import ModelNotFoundError

    try:
        return 0, call(_log)
    except (ValueError, FileNotFoundError, ModelNotFoundError) as err:
        print(f"k15 long2short {command}: error: {err}", file=sys.stderr)
        return 2, {}


def _point(result: dict[str, Any] | None) -> str:
    if not result:
        return "not evaluated"
    return f"Pass@1 {100 * result['pass_at_1']:.1f}% at {result['mean_tokens']:.1f} tokens"


def run(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.system1 import run_system1

    settings = settings_from_args(args)
    if not 0 < args.confidence <= 1:
        raise SystemExit(f"--confidence ({args.confidence}) must be in (0, 1]")
    code, report = run_method("system1", lambda log: run_system1(
        settings, confidence=args.confidence, style=args.answer_format, log=log))  # fmt: skip
    if code == 0:
        evals = report["eval"]
        print(f"system1: System 2 {_point(evals['system2'])} -> System 1 "
              f"{_point(evals['system1'])}; model and report.json in {settings.out}")  # fmt: skip
    return code
