"""``k15 long2short``: make a long-CoT model answer shorter (Kimi k1.5 §2.4).

    k15 long2short merge LONG SHORT --out DIR [--alpha 0.5]
        θ = θ_short + α(θ_long − θ_short): α = 0.5 averages (the report's merge),
        0 < α < 1 interpolates, α > 1 extrapolates past LONG (CoT-Valve-style).
    k15 long2short shortest-rs --model M --env k15/Arithmetic-v0 --samples 8 --out sft.parquet
        sample n per problem, keep the shortest correct response -> SFT data (`k15 sft`).
    k15 long2short dpo-pairs --model M --env k15/Arithmetic-v0 --samples 8 --out pairs.parquet
        shortest correct = chosen; wrong longer ones and correct ones >= 1.5x as long
        = rejected -> DPO pairs (`k15 dpo`).
    k15 long2short o1-reference --model M --env k15/Arithmetic-v0 --samples 8 --out ref.json
        O1-Pruner's reference statistics (mean tokens L̂_ref, accuracy Â_ref per problem)
        -> `training(loss="o1_pruner", o1_pruner_reference_stats="ref.json")`.

The sampling commands accept ``--save-samples S.parquet`` and ``--from-samples S.parquet``,
so one sampling run can feed shortest-rs, dpo-pairs and o1-reference. The fourth long2short method,
long2short RL, is a second `k15 train` phase with the length penalty on and a smaller
maximum rollout length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "long2short",
        help="long2short tools: merge, shortest rejection sampling, DPO pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="long2short_command", metavar="COMMAND", required=True)

    m = sub.add_parser(
        "merge",
        help="average / interpolate the weights of two models",
        description="θ = θ_short + α(θ_long − θ_short), streamed shard by shard.",
    )
    m.add_argument("long", metavar="LONG", help="long-CoT model (registered name or HF dir)")
    m.add_argument("short", metavar="SHORT", help="short-CoT model of the same architecture")
    m.add_argument("--out", required=True, help="output HF directory")
    m.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="0.5 = average; (0,1) interpolates; >1 extrapolates past LONG; "
        "<0 past SHORT (default: 0.5)",
    )
    m.set_defaults(func=run_merge)

    for name, func, helptext in (
        ("shortest-rs", run_shortest_rs, "shortest rejection sampling -> SFT parquet"),
        ("dpo-pairs", run_dpo_pairs, "shortest-vs-longer preference pairs -> DPO parquet"),
        ("o1-reference", run_o1_reference, "O1-Pruner reference statistics -> JSON"),
    ):
        s = sub.add_parser(name, help=helptext, description=helptext)
        _add_sampling_args(s)
        if name == "dpo-pairs":
            s.add_argument(
                "--length-ratio",
                type=float,
                default=1.5,
                help="a correct response is rejected when it is at least this many "
                "times as long as the chosen one (inclusive; default: 1.5)",
            )
        s.set_defaults(func=func)
    from rllib_k15.commands.long2short_methods import discover_methods

    for module in discover_methods():  # system1, c3ot, skip-steps, internalize, ccot, ...
        module.add_subparser(sub)


def _add_sampling_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", help="model to sample from (registered name or HF dir)")
    s.add_argument("--env", help="gymnasium id of a k15 reasoning env, e.g. k15/Arithmetic-v0")
    s.add_argument("--env-kwargs", default="{}", help="JSON object passed to gymnasium.make")
    s.add_argument("--samples", type=int, default=8, help="responses per problem (default: 8)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--max-tokens", type=int, default=1024, help="max generated tokens")
    s.add_argument("--num-problems", type=int, help="use this many problems (default: all)")
    s.add_argument("--start", type=int, default=0, help="index of the first problem")
    s.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    s.add_argument("--seed", type=int, default=0, help="engine-wide sampling seed")
    s.add_argument(
        "--max-model-len", type=int, help="vLLM context length (default: max-tokens + 1024)"
    )
    s.add_argument(
        "--problems-per-call",
        type=int,
        default=16,
        help="problems per engine call (x samples = completions in flight; default: 16)",
    )
    s.add_argument("--save-samples", metavar="PATH", help="also write every graded sample")
    s.add_argument(
        "--from-samples",
        metavar="PATH",
        help="reuse a --save-samples file instead of sampling (no --model/--env)",
    )
    s.add_argument("--out", required=True, help="output file")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(command: str, err: BaseException) -> int:
    print(f"k15 long2short {command}: error: {err}", file=sys.stderr)
    return 2


def run_merge(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.merge import MergeError, merge_models
    from rllib_k15.models import ModelNotFoundError, resolve_model

    try:
        report = merge_models(
            resolve_model(args.long), resolve_model(args.short), args.out, alpha=args.alpha
        )
    except (MergeError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
        return _error("merge", err)
    for line in report.config_differences:
        print(f"note: config differs (kept LONG's): {line}", file=sys.stderr)
    print(
        f"merged {report.num_tensors} tensors in {len(report.shards)} shard(s) with "
        f"alpha={report.alpha} -> {report.out_dir}"
    )
    return 0


def _collect(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The graded sample groups (sampled now or read back) and the run info to store."""
    from rllib_k15.long2short.data import read_parquet_info, read_samples_parquet

    if args.from_samples:
        info = read_parquet_info(args.from_samples)
        info["from_samples"] = str(args.from_samples)
        return read_samples_parquet(args.from_samples), info
    if not args.model or not args.env:
        raise ValueError("--model and --env are required unless --from-samples is given")
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    from rllib_k15.engine import make_engine
    from rllib_k15.env_factory import make_unwrapped_env
    from rllib_k15.long2short.collect import problem_indices, sample_groups
    from rllib_k15.long2short.data import write_samples_parquet

    env = make_unwrapped_env(args.env, env_kwargs)
    indices = problem_indices(len(env), args.num_problems, args.start)
    engine_kwargs: dict[str, Any] = {"seed": args.seed}
    if args.engine == "vllm":
        engine_kwargs["max_model_len"] = args.max_model_len or args.max_tokens + 1024
    info = {
        "model": str(args.model),
        "env": args.env,
        "env_kwargs": env_kwargs,
        "samples_per_problem": args.samples,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "engine": args.engine,
        "seed": args.seed,
        "first_problem": args.start,
    }
    try:
        engine = make_engine(args.engine, args.model, **engine_kwargs)
    except ImportError as err:
        hint = " (try --engine hf, or install the cpu/gpu extra)" if args.engine == "vllm" else ""
        raise ImportError(f"cannot start the {args.engine} engine: {err}{hint}") from err
    with engine:
        groups = list(
            sample_groups(
                engine,
                env,
                indices,
                args.samples,
                args.temperature,
                args.max_tokens,
                args.problems_per_call,
                progress=not args.no_progress,
            )
        )
    if args.save_samples:
        write_samples_parquet(groups, args.save_samples, info)
        print(f"wrote {sum(len(g.samples) for g in groups)} samples -> {args.save_samples}")
    return groups, info


def _mean(values: list[int]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _length_info(groups: list[Any]) -> dict[str, Any]:
    samples = [s for g in groups for s in g.samples]
    return {
        "mean_tokens_all_samples": _mean([s.token_length for s in samples]),
        "mean_tokens_correct_samples": _mean([s.token_length for s in samples if s.correct]),
        "pass_at_1": round(sum(s.correct for s in samples) / len(samples), 4) if samples else None,
    }


def run_shortest_rs(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.data import write_sft_parquet
    from rllib_k15.long2short.selection import shortest_rejection_sampling

    try:
        groups, info = _collect(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return _error("shortest-rs", err)
    examples, stats = shortest_rejection_sampling(groups)
    info.update(
        _length_info(groups),
        command="shortest-rs",
        num_problems=stats.num_problems,
        num_selected=stats.num_selected,
        num_without_correct=stats.num_without_correct,
        problems_without_correct=stats.problems_without_correct,
        mean_tokens_selected=_mean([e.response_tokens for e in examples]),
    )
    write_sft_parquet(examples, args.out, info)
    print(
        f"{stats.num_selected}/{stats.num_problems} problems kept "
        f"({stats.num_without_correct} had no correct response); mean tokens: selected "
        f"{info['mean_tokens_selected']} vs all samples {info['mean_tokens_all_samples']}"
        f" -> {args.out}"
    )
    return 0


def run_dpo_pairs(args: argparse.Namespace) -> int:
    from rllib_k15.long2short.data import write_pairs_parquet
    from rllib_k15.long2short.selection import build_dpo_pairs

    try:
        groups, info = _collect(args)
        pairs, stats = build_dpo_pairs(groups, args.length_ratio)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return _error("dpo-pairs", err)
    info.update(
        _length_info(groups),
        command="dpo-pairs",
        length_ratio=args.length_ratio,
        num_problems=stats.num_problems,
        num_pairs=stats.num_pairs,
        num_pairs_wrong_rejected=stats.num_pairs_wrong_rejected,
        num_pairs_long_correct_rejected=stats.num_pairs_long_correct_rejected,
        num_without_correct=stats.num_without_correct,
        problems_without_correct=stats.problems_without_correct,
        problems_without_rejected=stats.problems_without_rejected,
    )
    write_pairs_parquet(pairs, args.out, info)
    print(
        f"{stats.num_pairs} pairs from {stats.num_problems} problems "
        f"({stats.num_pairs_wrong_rejected} wrong-longer, "
        f"{stats.num_pairs_long_correct_rejected} correct-but->={args.length_ratio}x; "
        f"{stats.num_without_correct} problems had no correct response, "
        f"{len(stats.problems_without_rejected)} no rejected one) -> {args.out}"
    )
    return 0


def run_o1_reference(args: argparse.Namespace) -> int:
    """Per-problem mean tokens and accuracy of the sampled (reference) model, keyed by the
    env's problem index as the learner's batches are."""
    from rllib_k15.algorithm.o1_reference import ReferenceStats
    from rllib_k15.env_factory import make_unwrapped_env

    try:
        groups, info = _collect(args)
        env = make_unwrapped_env(info["env"], info["env_kwargs"])
        index_of = {str(env.problem(i).id): i for i in range(len(env))}
        stats = ReferenceStats(info["env"], info["env_kwargs"], info["samples_per_problem"],
                               info["model"])  # fmt: skip
        for group in groups:
            if group.problem_id not in index_of:
                raise ValueError(f"problem id {group.problem_id!r} is not in env {info['env']}")
            samples = group.samples
            stats.add(index_of[group.problem_id], [s.token_length for s in samples],
                      [s.correct for s in samples])  # fmt: skip
    except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
        return _error("o1-reference", err)
    path = stats.save(args.out)
    length = _mean([round(v) for v in stats.mean_length.values()])
    accuracy = statistics.fmean(stats.accuracy.values()) if stats.accuracy else float("nan")
    print(
        f"{len(stats.accuracy)} problems x {stats.samples} samples: mean L_ref {length} tokens, "
        f"mean A_ref {accuracy:.3f} -> {path}"
    )
    return 0
