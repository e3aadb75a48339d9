"""Token-efficiency evaluation: Pass@1 and response length of a model on a reasoning env.

The report's long2short comparison (Kimi k1.5, Figure 7) plots, per model or method,
Pass@1 averaged over several samples against the mean number of response tokens. This
module computes exactly those numbers:

- ``evaluate(engine, env, ...)`` samples ``samples`` responses for each of the first
  ``num_problems`` problems of ``env`` through any ``RolloutEngine``, grades them with the
  env's batch verifier and returns an ``EvalResult``. The RL trainer calls it for held-out
  evaluation; ``k15 eval`` calls it once per run.
- Pass@1 is the mean correctness over all ``problems x samples`` responses (equivalently:
  per-problem pass rate averaged over problems). A response cut by ``max_tokens`` counts
  as wrong (the verifier grades it "truncated"), as in the report.
- Results are stored as **JSON Lines**: one flat JSON object per run, appended, so repeated
  ``k15 eval`` invocations with different ``--label``s accumulate in one file and a CSV
  with the same columns is appended next to it. ``summarize_runs`` groups rows by label
  into mean and standard deviation over runs — the points and error bars of the plot
  (``rllib_k15.evaluation.plots``).

Launch::

    k15 eval --env k15/Arithmetic-v0 --model smollm2-135m-instruct --problems 64 --samples 4
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rllib_k15.engine.base import RolloutEngine, SamplingParams
from rllib_k15.evaluation.intervals import pass_at_1_interval
from rllib_k15.rollout.prompts import encode_problems, generate_for
from rllib_k15.sampling.difficulty import sample_verdicts

__all__ = [
    "CSV_COLUMNS",
    "EvalResult",
    "LabelSummary",
    "append_results",
    "make_row",
    "evaluate",
    "pass_at_1",
    "read_results",
    "sample_and_grade",
    "summarize_runs",
    "task_of",
    "token_percentiles",
]

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation run (flat, JSON-ready).

    pass_at_1:          mean correctness over problems x samples, in [0, 1].
    mean_reward:        mean verifier reward (equals pass_at_1 for 0/1 verifiers).
    mean_tokens:        mean generated tokens per response (EOS included).
    p50/p90/p99_tokens: response-length percentiles.
    truncated_fraction: responses that hit ``max_tokens`` (graded wrong).
    reasons:            verdict reason -> count (correct, wrong, no_answer, truncated, ...).
    tokens_per_second:  generated tokens / time spent in ``engine.generate``.
    pass_at_1_low/high: its 95 % interval from a bootstrap over problems
                        (:func:`rllib_k15.evaluation.intervals.pass_at_1_interval`).
    """

    num_problems: int
    samples: int
    pass_at_1: float
    mean_reward: float
    mean_tokens: float
    p50_tokens: float
    p90_tokens: float
    p99_tokens: float
    truncated_fraction: float
    reasons: dict[str, int]
    generated_tokens: int
    generation_seconds: float
    tokens_per_second: float
    wall_seconds: float
    pass_at_1_low: float = float("nan")
    pass_at_1_high: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- pure metrics


def pass_at_1(correct: Sequence[Sequence[bool]]) -> float:
    """Per-problem fraction of correct samples, averaged over problems."""
    if not correct or any(len(row) == 0 for row in correct):
        raise ValueError("pass_at_1 needs at least one sample for every problem")
    return sum(sum(map(bool, row)) / len(row) for row in correct) / len(correct)


def token_percentiles(lengths: Sequence[int], qs: Sequence[int] = PERCENTILES) -> list[float]:
    """Linear-interpolated percentiles (numpy's default method) of response lengths."""
    if not lengths:
        raise ValueError("no lengths")
    ordered = sorted(lengths)
    out = []
    for q in qs:
        pos = (len(ordered) - 1) * q / 100
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))
    return out


# --------------------------------------------------------------------------- evaluation


def sample_and_grade(
    engine: RolloutEngine, env: Any, params: SamplingParams, num_problems: int
) -> dict[str, Any]:
    """Every sample of the first ``num_problems`` problems of ``env`` (a
    ``k15_envs.ReasoningEnv``), graded in one batch: per-problem lists of correctness and
    tokens, the verdict reasons counted, and the first response's text. For experiments
    that need per-sample results (paired comparisons, length profiles); ``evaluate`` is the
    aggregated, batched version."""
    problems = [env.problem(i) for i in range(num_problems)]
    groups, verdict_groups = sample_verdicts(engine, env, problems, params)
    return {
        "correct": [[bool(v.correct) for v in group] for group in verdict_groups],
        "tokens": [[len(c.token_ids) for c in g] for g in groups],
        "reasons": dict(Counter(v.reason for group in verdict_groups for v in group)),
        "example": groups[0][0].text[:400] if groups and groups[0] else "",
    }


def evaluate(
    engine: RolloutEngine,
    env: Any,
    *,
    num_problems: int = 64,
    samples: int = 4,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_problems: int = 16,
    progress: bool | Any = True,
) -> EvalResult:
    """Sample, grade and measure ``engine`` on the first ``num_problems`` problems of ``env``.

    env:            a gymnasium env whose ``unwrapped`` is a ``k15_envs.ReasoningEnv`` (or
                    the ReasoningEnv itself).
    seed:           if given, ``engine.reseed(seed)`` first (engines that support it), so
                    a run is reproducible whatever was sampled before.
    batch_problems: problems per ``generate`` call; larger batches are faster on vLLM,
                    smaller ones update the progress bar more often.
    progress:       show a tqdm bar (True), none (False), or update this tqdm-like object.
    """
    reasoning_env = getattr(env, "unwrapped", env)
    n = min(num_problems, len(reasoning_env))
    if n < 1:
        raise ValueError(f"num_problems ({num_problems}) must be >= 1 and the env non-empty")
    if seed is not None and hasattr(engine, "reseed"):
        engine.reseed(seed)
    params = SamplingParams(n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    bar, own_bar = _progress_bar(progress, total=n)
    correct: list[list[bool]] = []
    rewards: list[float] = []
    lengths: list[int] = []
    truncated = 0
    reasons: Counter[str] = Counter()
    gen_seconds = 0.0
    started = time.perf_counter()
    try:
        for start in range(0, n, batch_problems):
            problems = [
                reasoning_env.problem(i) for i in range(start, min(n, start + batch_problems))
            ]
            prompts = encode_problems(engine, problems)
            t0 = time.perf_counter()
            groups = generate_for(engine, prompts, params)
            gen_seconds += time.perf_counter() - t0
            flat = [(p, c) for p, group in zip(problems, groups, strict=True) for c in group]
            verdicts = reasoning_env.verify_batch(
                [p for p, _ in flat],
                [c.text for _, c in flat],
                truncated=[c.finish_reason == "length" for _, c in flat],
            )
            for i in range(len(problems)):
                correct.append([bool(v.correct) for v in verdicts[i * samples : (i + 1) * samples]])
            rewards.extend(float(v.reward) for v in verdicts)
            reasons.update(str(v.reason) for v in verdicts)
            lengths.extend(c.num_tokens for _, c in flat)
            truncated += sum(c.finish_reason == "length" for _, c in flat)
            if bar is not None:
                bar.update(len(problems))
                bar.set_postfix(pass1=f"{pass_at_1(correct):.3f}", tok=f"{_mean(lengths):.0f}")
    finally:
        if own_bar:
            bar.close()
    p50, p90, p99 = token_percentiles(lengths)
    low, high = pass_at_1_interval(correct)
    return EvalResult(
        num_problems=n,
        samples=samples,
        pass_at_1=pass_at_1(correct),
        mean_reward=_mean(rewards),
        mean_tokens=_mean(lengths),
        p50_tokens=p50,
        p90_tokens=p90,
        p99_tokens=p99,
        truncated_fraction=truncated / len(lengths),
        reasons=dict(sorted(reasons.items())),
        generated_tokens=sum(lengths),
        generation_seconds=gen_seconds,
        tokens_per_second=sum(lengths) / gen_seconds if gen_seconds > 0 else float("nan"),
        wall_seconds=time.perf_counter() - started,
        pass_at_1_low=low,
        pass_at_1_high=high,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _progress_bar(progress: bool | Any, total: int) -> tuple[Any, bool]:
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="eval", unit="problem"), True
    if progress is False or progress is None:
        return None, False
    return progress, False


# --------------------------------------------------------------------------- results files

# Column order of the CSV (and key order of the JSONL rows); appended files stay aligned.
CSV_COLUMNS: tuple[str, ...] = (
    "label", "run", "seed", "model", "engine", "env", "env_kwargs", "max_tokens",
    "temperature", "top_p", "num_problems", "samples", "pass_at_1", "pass_at_1_low",
    "pass_at_1_high", "mean_reward",
    "mean_tokens", "p50_tokens", "p90_tokens", "p99_tokens", "truncated_fraction",
    "reasons", "generated_tokens", "generation_seconds", "tokens_per_second",
    "wall_seconds", "timestamp",
)  # fmt: skip


def make_row(result: EvalResult, **meta: Any) -> dict[str, Any]:
    """One results row: run metadata (label, run, seed, model, ...) plus the metrics.

    Absolute paths in the metadata are written portably
    (:func:`rllib_k15.runs.run_files.portable_path`)."""
    from rllib_k15.runs.run_files import portable_path

    meta = {k: portable_path(v) if isinstance(v, str) and os.path.isabs(v) else v
            for k, v in meta.items()}  # fmt: skip
    row = {**meta, **result.to_dict()}
    row.setdefault("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return {k: row.get(k) for k in CSV_COLUMNS} | {
        k: v for k, v in row.items() if k not in CSV_COLUMNS
    }


def append_results(jsonl_path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Append rows to ``*.jsonl`` and to the ``*.csv`` beside it; returns the CSV path."""
    path = Path(jsonl_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=False) + "\n")
    csv_path = path.with_suffix(".csv")
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    # an existing CSV keeps its own columns (files from older versions stay aligned)
    columns = CSV_COLUMNS if new else _csv_header(csv_path)
    with csv_path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    return csv_path


def _csv_header(csv_path: Path) -> list[str]:
    with csv_path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def _csv_cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def read_results(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Rows from JSON Lines files or JSON files holding a list of rows (or one row)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            rows.extend(data if isinstance(data, list) else [data])
        except json.JSONDecodeError:
            rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows


@dataclass(frozen=True)
class LabelSummary:
    """All runs of one label: a point of the token-efficiency plot with its error bars.

    ``pass_at_1_low``/``pass_at_1_high`` is the label's 95 % interval of Pass@1 from the
    bootstrap over problems its rows carry (several runs: the mean of their intervals;
    see ``_label_interval``). ``task`` names the env and its
    kwargs (without ``size``) the label was evaluated on, so a figure can keep tasks apart.
    """

    label: str
    runs: int
    pass_at_1_mean: float
    pass_at_1_std: float  # sample std over runs (0 for a single run)
    mean_tokens_mean: float
    mean_tokens_std: float
    pass_at_1_low: float | None = None
    pass_at_1_high: float | None = None
    task: str = ""


def task_of(row: Mapping[str, Any]) -> str:
    """``env`` and its kwargs minus ``size`` (how many problems, not which task), as text."""
    kwargs = {k: v for k, v in (row.get("env_kwargs") or {}).items() if k != "size"}
    env = str(row.get("env") or "?")
    return f"{env} {json.dumps(kwargs, sort_keys=True)}" if kwargs else env


def _row_interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    low, high = row.get("pass_at_1_low"), row.get("pass_at_1_high")
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return None  # a row written before intervals were recorded
    return float(low), float(high)


def _label_interval(group: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """One run: its bootstrap over problems. Several (``k15 eval --runs``: more samples of
    the same problems): the mean of their bootstrap intervals, since the problems, not the
    sampling seeds, are what varies most; rows without intervals: the t-interval over runs,
    clipped to [0, 1]."""
    intervals = [_row_interval(r) for r in group]
    if all(i is not None for i in intervals):
        return _mean([i[0] for i in intervals]), _mean([i[1] for i in intervals])
    if len(group) == 1:
        return None, None
    from rllib_k15.evaluation.intervals import seed_interval

    low, high = seed_interval([float(r["pass_at_1"]) for r in group])
    return max(0.0, low), min(1.0, high)


def summarize_runs(rows: Iterable[Mapping[str, Any]]) -> list[LabelSummary]:
    """Group rows by task and ``label`` (first-seen order) into mean, std and interval over
    runs. One label on two tasks (a base model evaluated on each) gives one summary per task.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        label = str(row.get("label") or row.get("model") or "?")
        groups.setdefault((task_of(row), label), []).append(row)
    summaries = []
    for (task, label), group in groups.items():
        low, high = _label_interval(group)
        summaries.append(
            LabelSummary(
                label=label,
                runs=len(group),
                pass_at_1_mean=_mean([float(r["pass_at_1"]) for r in group]),
                pass_at_1_std=_std([float(r["pass_at_1"]) for r in group]),
                mean_tokens_mean=_mean([float(r["mean_tokens"]) for r in group]),
                mean_tokens_std=_std([float(r["mean_tokens"]) for r in group]),
                pass_at_1_low=low,
                pass_at_1_high=high,
                task=task,
            )
        )
    return summaries


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))
