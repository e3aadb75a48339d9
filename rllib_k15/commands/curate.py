"""``k15 curate``: problem datasets -> a curated RL prompt set and a report (the Kimi k1.5
report, §2.1).

    k15 curate DATA [DATA ...] --out curated.jsonl [--env k15/Math-v0] \\
        [--eval-sets math500.jsonl aime.parquet] [--model smollm2-135m-instruct --engine vllm|hf] \\
        [--no-dedup] [--near-dup-threshold 0.8] [--no-decontaminate] [--ngram 13] \\
        [--no-format-filter] [--format-rules rules.yaml] [--no-hack-filter] [--hack-attempts 8] \\
        [--no-difficulty] [--difficulty-samples 8] [--report-dir DIR]

Example on the shipped sample (no model: steps 5-6 are skipped)::

    k15 curate envs/k15_envs/data/math_sample.jsonl --out /tmp/curated/math.jsonl

Steps, in order, each switchable and counted in the report: (1) exact duplicates,
(2) near duplicates (MinHash LSH), (3) decontamination against ``--eval-sets`` (shared word
n-grams), (4) the format filter (multiple choice, true/false, proofs), (5) the easy-to-hack
filter (answered right without reasoning within ``--hack-attempts`` tries) and (6) model-based
difficulty (``difficulty`` = 1 − pass rate). Steps 5-6 need ``--model``; they are resumable
through ``<report-dir>/curate_cache.jsonl``. Grading is the ``--env`` env's own verifier, built
on each input file. Writes ``--out`` (.jsonl or .parquet) and ``curate_report.{json,md,png}``
in ``--report-dir`` (default: the folder of ``--out``). See docs/data_curate.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OUTPUT_SUFFIXES = (".jsonl", ".parquet")  # also rllib_k15.data.curate_report (import-light here)
_POSITIVE = ("hack_attempts", "hack_max_tokens", "difficulty_samples", "max_tokens",
             "batch_problems", "ngram")  # fmt: skip


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "curate",
        help="dedup, decontaminate and filter problem datasets into an RL prompt set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("data", nargs="+", help="problem files (.jsonl / .parquet) in the env's schema")
    add("--out", required=True, help="the curated set: .jsonl or .parquet")
    add("--env", default="k15/Math-v0", help="env whose verifier grades (default: k15/Math-v0)")
    add("--env-kwargs", default="{}", help="JSON kwargs for the env, e.g. column names")
    add("--eval-sets", nargs="+", default=[], help="eval problem files to decontaminate against")
    add("--model", help="registered model name or HF directory (steps 5-6 need it)")
    add("--engine", choices=("vllm", "hf"), default="vllm", help="default: vllm")
    add("--dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)")
    add("--seed", type=int, default=0, help="engine sampling seed (default: 0)")
    add("--no-dedup", action="store_true", help="skip exact and near-duplicate removal")
    add("--no-near-dedup", action="store_true", help="skip near-duplicate removal only")
    add("--near-dup-threshold", type=float, default=0.8, help="MinHash Jaccard (default: 0.8)")
    add("--no-decontaminate", action="store_true", help="skip decontamination")
    add("--ngram", type=int, default=13, help="decontamination word n-gram (default: 13)")
    add("--no-format-filter", action="store_true", help="skip the format filter")
    add("--format-rules", help="YAML rules name -> {pattern, field} replacing the defaults")
    add("--no-hack-filter", action="store_true", help="skip the easy-to-hack filter")
    add("--hack-attempts", type=int, default=8, help="answer-only attempts (default: 8)")
    add("--hack-max-tokens", type=int, default=24, help="answer-only token cap (default: 24)")
    add("--hack-instruction", help="answer-only instruction (default: boxed answer, no reasoning)")
    add("--no-difficulty", action="store_true", help="skip model-based difficulty")
    add("--difficulty-samples", type=int, default=8, help="samples per problem (default: 8)")
    add("--max-tokens", type=int, default=1024, help="difficulty response cap (default: 1024)")
    add("--batch-problems", type=int, default=32, help="problems per generate call / cache write")
    add("--report-dir", help="report and cache folder (default: the folder of --out)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags (messages name the flag); returns the env kwargs."""
    if Path(args.out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise SystemExit(f"--out ({args.out}) must end in .jsonl or .parquet")
    for name in _POSITIVE:
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    _check_threshold(args.near_dup_threshold)
    repeated = sorted({p for p in args.data if args.data.count(p) > 1})
    if repeated:
        raise SystemExit(f"DATA lists {repeated} more than once")
    if args.format_rules and args.no_format_filter:
        raise SystemExit("--format-rules has no effect with --no-format-filter; drop one")
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--env-kwargs is not JSON ({args.env_kwargs!r}): {err}") from None
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    if "dataset" in env_kwargs or env_kwargs.get("split") is not None:
        raise SystemExit("--env-kwargs must not set 'dataset' or 'split' (curate grades every row)")
    return env_kwargs


def _check_threshold(threshold: float) -> None:
    """--near-dup-threshold must be in (0, 1) and leave MinHash LSH at least two bands."""
    if not 0.0 < threshold < 1.0:
        raise SystemExit(f"--near-dup-threshold ({threshold}) must be in (0, 1)")
    from datasketch import MinHashLSH

    try:
        MinHashLSH(threshold=threshold, num_perm=128)
    except ValueError as err:
        raise SystemExit(f"--near-dup-threshold ({threshold}) is too high: {err}") from None


def _columns(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Column overrides the env kwargs name (problem/question/prompt, answer, id)."""
    names = ("problem_column", "question_column", "prompt_column")
    text = next((env_kwargs[k] for k in names if env_kwargs.get(k)), None)
    return {
        "text_column": text,
        "answer_column": env_kwargs.get("answer_column"),
        "id_column": env_kwargs.get("id_column"),
    }


def _read(paths: list[str], columns: dict[str, Any]) -> tuple[list[Any], dict[str, int]]:
    """All rows of ``paths`` in order, and the row count of each file."""
    from k15_envs.datasets import DatasetError

    from rllib_k15.data.curate_report import load_rows

    rows, counts = [], {}
    for path in paths:
        try:
            file_rows = load_rows(path, **columns)
        except DatasetError as err:
            raise SystemExit(str(err)) from None
        rows.extend(file_rows)
        counts[str(path)] = len(file_rows)
    return rows, counts


def _build_env(env_id: str, path: str, env_kwargs: dict[str, Any], rows: list[Any]) -> Any:
    """The ``env_id`` env on file ``path`` (validates the env's own schema, names the row)."""
    from k15_envs.datasets import DatasetError

    from rllib_k15.env_factory import make_reasoning_env

    try:
        env = make_reasoning_env(env_id, {**env_kwargs, "dataset": path})
    except DatasetError as err:
        if err.row is None and err.field is not None:  # a column missing from the first row
            row = next((r.index for r in rows if r.data.get(err.field) is None), 0)
            raise SystemExit(f"{err} (first row without it: row {row})") from None
        raise SystemExit(str(err)) from None
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--env {env_id} cannot be built on {path}: {err}") from None
    if len(env.unwrapped) != len(rows):
        env.close()
        raise SystemExit(
            f"--env {env_id} has {len(env.unwrapped)} problems from {path}, "
            f"which has {len(rows)} rows"
        )
    return env


def _engine_factory(args: argparse.Namespace):
    """Builds the ``--engine`` engine on ``--model`` (called on the first model request)."""

    def build() -> Any:
        from rllib_k15.engine import make_engine

        kwargs: dict[str, Any] = {"seed": args.seed, "dtype": args.dtype}
        if args.engine == "vllm":  # prompt headroom over the longest response
            kwargs["max_model_len"] = max(args.max_tokens, args.hack_max_tokens) + 2048
        return make_engine(args.engine, args.model, **kwargs)

    return build


def _config(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> Any:
    """The :class:`CurateConfig` of the flags (the format rules read and checked)."""
    from rllib_k15.data.curate import CurateConfig
    from rllib_k15.data.curate_filters import FormatRuleError, load_format_rules

    try:
        rules = tuple(load_format_rules(args.format_rules)) if args.format_rules else None
    except FormatRuleError as err:
        raise SystemExit(f"--format-rules: {err}") from None
    cache_settings = {
        "model": str(args.model),
        "engine": args.engine,
        "dtype": args.dtype,
        "seed": args.seed,
        "env": args.env,
        "env_kwargs": env_kwargs,
    }
    return CurateConfig(
        dedup=not args.no_dedup,
        near_dedup=not args.no_near_dedup,
        near_dup_threshold=args.near_dup_threshold,
        decontaminate=not args.no_decontaminate,
        ngram=args.ngram,
        format_filter=not args.no_format_filter,
        format_rules=rules,
        hack_filter=not args.no_hack_filter,
        hack_attempts=args.hack_attempts,
        hack_max_tokens=args.hack_max_tokens,
        hack_instruction=args.hack_instruction,
        difficulty=not args.no_difficulty,
        difficulty_samples=args.difficulty_samples,
        max_tokens=args.max_tokens,
        batch_problems=args.batch_problems,
        cache_settings=cache_settings,
    )


def _curate(args, config, rows, eval_rows, env_kwargs, cache_path: Path) -> Any:
    """Build the envs (one per input file) and the lazy engine, run the steps, close both."""
    from rllib_k15.data.curate import curate
    from rllib_k15.data.curate_filters import Grader, LazyEngine
    from rllib_k15.data.curate_report import ResultCache

    envs: dict[str, Any] = {}
    engine = None
    wants_model = config.hack_filter or config.difficulty
    if args.model is None and wants_model:
        print("note: the easy-to-hack filter and difficulty need --model: skipped")
    elif wants_model:
        engine = LazyEngine(_engine_factory(args))
    try:
        for path in dict.fromkeys(r.source for r in rows):
            file_rows = [r for r in rows if r.source == path]
            envs[path] = _build_env(args.env, path, env_kwargs, file_rows)
        graders = {(r.source, r.index): Grader(envs[r.source].unwrapped, r.index) for r in rows}
        return curate(
            rows, eval_rows, config, graders=graders, engine=engine, cache=ResultCache(cache_path)
        )
    finally:
        if engine is not None:
            engine.close()
        for env in envs.values():
            env.close()


def run(args: argparse.Namespace) -> int:
    from rllib_k15.data.curate_report import build_report, curated_rows, write_report, write_rows

    env_kwargs = _check(args)
    config = _config(args, env_kwargs)
    out = Path(args.out)
    report_dir = Path(args.report_dir) if args.report_dir else out.parent
    columns = _columns(env_kwargs)
    rows, inputs = _read(args.data, columns)
    eval_rows, eval_sets = _read(args.eval_sets, {}) if args.eval_sets else ([], {})
    result = _curate(args, config, rows, eval_rows, env_kwargs, report_dir / "curate_cache.jsonl")
    kept = curated_rows(result)
    try:
        write_rows(out, kept)
    except ValueError as err:
        raise SystemExit(f"--out: {err}") from None
    settings = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("func", "command", "verbose")
    }
    report = build_report(
        inputs=inputs,
        eval_sets=eval_sets,
        settings=settings,
        steps=result.steps,
        kept_rows=kept,
        domains=[r.domain for r in result.kept],
        difficulty_ran=result.pass_rates is not None,
    )
    paths = write_report(report_dir, report)
    for step in result.steps:
        print(
            f"  {step.title:<24} {step.status:<8} in {step.n_in:>6}  dropped "
            f"{len(step.drops):>6}  out {len(step.kept):>6}  {step.note}"
        )
    print(
        f"{sum(inputs.values())} rows -> {len(kept)} kept, written to {out}; "
        f"report: {', '.join(str(p) for p in paths)}"
    )
    return 0
