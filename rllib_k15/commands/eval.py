"""``k15 eval``: Pass@1 and response length of a model on a reasoning env (token efficiency).

    k15 eval --env k15/Arithmetic-v0 --model smollm2-135m-instruct --problems 64 --samples 4 \\
        [--env-kwargs '{"difficulty": 1}'] [--runs R] [--seed S] [--max-tokens N] \\
        [--temperature T] [--engine vllm|hf] [--label NAME] [--out results/eval.jsonl]
    k15 eval --endpoint http://127.0.0.1:8000/v1 [--served-model ID] \\
        --model smollm2-135m-instruct --env k15/Arithmetic-v0 --problems 64 --samples 4

Samples ``--samples`` responses for each of the first ``--problems`` problems of the env's
``--split`` (default ``test``: disjoint by construction from the ``train`` split that
``k15 train`` uses, see ``k15_envs.splits``), grades them with the env's verifier and prints
Pass@1 (averaged over samples) with its 95 % interval (bootstrap over problems), its spread
over runs, mean and percentile response tokens and throughput. Run ``r`` samples with seed
``S + r``; the problems are the same in every run.

``--endpoint URL`` evaluates any OpenAI-compatible server (``k15 serve``, vLLM's own) with
the same metrics: the prompts are chat-templated locally with the tokenizer of ``--model``
(the served model's own, so the prompt is exactly training's) and sent as token ids to
``URL/completions``; ``--served-model`` names the served model id (default: the first of
``URL/models``). ``--engine`` and ``--dtype`` are then ignored, and so is ``--seed`` for
sampling (no per-request seeds; the runs differ by the server's own random state).

The precision used (``--dtype``; "auto" as ``rllib_k15.hardware`` decided, with its
reason) is printed first and appended to ``<out>.precision.jsonl`` beside ``--out``; an
endpoint's precision is the server's ("server-side").

Each run appends one JSON row to ``--out`` (JSON Lines) and to the CSV beside it, then the
token-efficiency plot of every label in the file is redrawn next to it (``.png``):
evaluate several models or methods with different ``--label``s into the same file to get
the comparison plot of the Kimi k1.5 report's Figure 7.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="Pass@1 vs response tokens of a model on a k15 env",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--env", default="k15/Arithmetic-v0", help="gymnasium env id (default: %(default)s)"
    )
    p.add_argument("--env-kwargs", default="{}", help="JSON kwargs for gym.make (default: {})")
    p.add_argument(
        "--split",
        choices=("test", "train", "none"),
        default="test",
        help="the env's split to evaluate on (default: test, disjoint from the train split "
        "the trainer uses; none = unsplit); ignored when --env-kwargs sets `split`",
    )
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="registered name or HF directory (with --endpoint: the one whose tokenizer and "
        "chat template build the prompts)",
    )
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="evaluate this OpenAI-compatible API root instead (e.g. http://127.0.0.1:8000/v1)",
    )
    p.add_argument(
        "--served-model", metavar="ID", help="model id at --endpoint (default: its first listed)"
    )
    p.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight to --endpoint (default: 16)"
    )
    p.add_argument("--problems", type=int, default=64, help="first N problems (default: 64)")
    p.add_argument("--samples", type=int, default=4, help="responses per problem (default: 4)")
    p.add_argument(
        "--runs", type=int, default=1, help="independent runs, for the spread (default: 1)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed of run 0 (default: 0; the server's with --endpoint)",
    )
    p.add_argument("--max-tokens", type=int, default=256, help="response token cap (default: 256)")
    p.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    p.add_argument("--top-p", type=float, default=1.0, help="default: 1.0")
    p.add_argument(
        "--engine",
        choices=("vllm", "hf"),
        default="vllm",
        help="default: vllm (ignored with --endpoint)",
    )
    p.add_argument(
        "--dtype", default="auto", help="auto (bf16 only with native bf16), float32, bfloat16"
    )
    p.add_argument(
        "--label",
        help="name of this model/method in the results (default: --model; with --endpoint the "
        "served model id)",
    )
    p.add_argument("--out", default="results/eval.jsonl", help="JSON Lines results file (appended)")
    p.add_argument("--batch-problems", type=int, default=16, help="problems per generate call")
    p.add_argument("--no-plot", action="store_true", help="don't redraw the PNG")
    p.set_defaults(func=run)


def precision_path(out: str) -> Path:
    """Where ``k15 eval --out results/eval.jsonl`` records its precision decisions:
    ``results/eval.precision.jsonl`` (one line per evaluation: label, model, engine)."""
    return Path(out).with_suffix(".precision.jsonl")


def _report_precision(args: argparse.Namespace, label: str, engine: str) -> None:
    """Print the engine's precision (``--dtype``, "auto" resolved with its reason; an
    endpoint's is the server's) and append it to :func:`precision_path` next to ``--out``."""
    import time

    if args.endpoint:
        line = "precision: the endpoint's (server-side)"
        record: dict[str, Any] = {"dtype": "server-side", "endpoint": args.endpoint}
    else:
        from rllib_k15.runs.trainer import precision_report

        line, record = precision_report(engine_dtype=args.dtype)
    print(line, flush=True)
    path = precision_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"label": label, "model": str(args.model), "engine": engine, "at": time.time()}
    with open(path, "a") as fh:
        fh.write(json.dumps({**row, "precision": record}, default=str) + "\n")


def _endpoint_engine(args: argparse.Namespace) -> Any:
    """The engine of ``--endpoint``: prompts templated with ``--model``'s tokenizer."""
    from rllib_k15.engine.openai_engine import OpenAIEndpointEngine

    try:
        return OpenAIEndpointEngine(
            args.endpoint,
            tokenizer_model=args.model,
            model=args.served_model,
            concurrency=args.concurrency,
        )
    except RuntimeError as e:
        raise SystemExit(f"k15 eval --endpoint: {e}") from e


def _local_engine(args: argparse.Namespace) -> Any:
    """The engine of ``--engine`` on ``--model``."""
    from rllib_k15.engine import make_engine

    engine_kwargs: dict[str, Any] = {"seed": args.seed, "dtype": args.dtype}
    if args.engine == "vllm":
        engine_kwargs["max_model_len"] = args.max_tokens + 1024  # prompt headroom
    return make_engine(args.engine, args.model, **engine_kwargs)


def _open_engine(args: argparse.Namespace) -> tuple[Any, str, str, dict[str, Any]]:
    """The engine, its name for the results, the label and the extra row fields; the
    precision is reported (and recorded) on the way."""
    if not args.endpoint:
        label = args.label or str(args.model)
        _report_precision(args, label, args.engine)
        return _local_engine(args), args.engine, label, {}
    engine = _endpoint_engine(args)  # before the label: it may pick the served model id
    try:
        label = args.label or engine.model or args.endpoint
        _report_precision(args, label, "endpoint")
    except BaseException:
        engine.close()
        raise
    return engine, "endpoint", label, {"endpoint": args.endpoint, "served_model": engine.model}


def run(args: argparse.Namespace) -> int:
    from rllib_k15.algorithm.default_splits import eval_split_kwargs
    from rllib_k15.env_factory import make_unwrapped_env
    from rllib_k15.evaluation.evaluate import (
        append_results,
        evaluate,
        make_row,
        read_results,
        summarize_runs,
    )

    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    if args.runs < 1:
        raise SystemExit(f"--runs ({args.runs}) must be >= 1")
    split = None if args.split == "none" else args.split
    env_kwargs, notes = eval_split_kwargs(args.env, env_kwargs, split, args.problems)
    for note in notes:
        print(f"note: {note}")
    env = make_unwrapped_env(args.env, env_kwargs)
    try:
        engine, engine_name, label, meta = _open_engine(args)
    except BaseException:
        env.close()
        raise
    rows = []
    try:
        for r in range(args.runs):
            seed = args.seed + r
            result = evaluate(
                engine, env, num_problems=args.problems, samples=args.samples,
                max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                seed=seed, batch_problems=args.batch_problems,
            )  # fmt: skip
            row = make_row(
                result, label=label, run=r, seed=seed, model=str(args.model),
                engine=engine_name, env=args.env, env_kwargs=env_kwargs,
                max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                **meta,
            )  # fmt: skip
            append_results(args.out, [row])
            rows.append(row)
            print(
                f"run {r} (seed {seed}): Pass@1 {100 * result.pass_at_1:.1f}% "
                f"[95% CI {100 * result.pass_at_1_low:.1f}-{100 * result.pass_at_1_high:.1f}, "
                f"bootstrap over {result.num_problems} problems]  "
                f"tokens mean {result.mean_tokens:.1f} p50 {result.p50_tokens:.0f} "
                f"p90 {result.p90_tokens:.0f} p99 {result.p99_tokens:.0f}  "
                f"truncated {100 * result.truncated_fraction:.1f}%  "
                f"{result.tokens_per_second:.1f} tok/s"
            )
    finally:
        engine.close()
        env.close()
    (summary,) = summarize_runs(rows)
    print(
        f"{label}: Pass@1 {100 * summary.pass_at_1_mean:.1f} ± {100 * summary.pass_at_1_std:.1f}% "
        f"over {summary.runs} run(s), mean tokens {summary.mean_tokens_mean:.1f} "
        f"± {summary.mean_tokens_std:.1f}; results appended to {args.out}"
    )
    if not args.no_plot:
        from rllib_k15.evaluation.plots import plot_token_efficiency

        png = plot_token_efficiency(
            summarize_runs(read_results([args.out])),
            Path(args.out).with_suffix(".png"),
            subtitle=f"{args.samples} samples/problem",
        )
        print(f"plot: {png}")
    return 0
