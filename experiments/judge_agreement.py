"""Chain-of-thought judge vs math-verify on a labeled set of free-form answers.

Every row of the labeled set (``experiments/data/judge_labeled.jsonl``: problem, reference
answer, response, human label) is graded twice through ``k15/Math-v0``: with math-verify
(``verifier="math"``) and with the judge (``verifier="judge"``, the Kimi k1.5 report,
§2.2). The script writes ``results.json`` (per-row verdicts, the summary) and ``README.md``
(accuracy of each grader against the labels with a 95 % bootstrap interval, and their
agreement, overall and per category) to ``--out``::

    python experiments/judge_agreement.py --model smollm2-135m-instruct --engine hf
    python experiments/judge_agreement.py --endpoint http://127.0.0.1:8000/v1 --endpoint-model k15
    python experiments/judge_agreement.py --model tiny-random-llama --engine hf --limit 10 \\
        --out /tmp/judge_smoke        # a mechanism check in about a minute

``--model`` runs the judge in process (``rllib_k15.data.judge.EngineJudge`` on an hf or
vllm engine); ``--endpoint`` asks an OpenAI-compatible server. A verdict the judge could
not give (``judge_unparseable``, ``judge_error: ...``) counts as "not correct" in the
accuracy and is also counted on its own.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "experiments" / "data" / "judge_labeled.jsonl"
DEFAULT_OUT = ROOT / "docs" / "results" / "judge_agreement"
FIELDS = ("id", "category", "problem", "answer", "response", "label")
LABELS = {"correct": True, "incorrect": False}


def load_labeled(path: Path) -> list[dict[str, Any]]:
    """The labeled rows; a SystemExit naming file, line and field for a bad one."""
    if not path.is_file():
        raise SystemExit(f"--data: no such file {path}")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}: line {line_no}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise SystemExit(f"{path}: line {line_no}: expected a JSON object")
        for field in FIELDS:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise SystemExit(f"{path}: line {line_no}: field {field!r} must be a non-empty "
                                 f"string, got {row.get(field)!r}")  # fmt: skip
        if row["label"] not in LABELS:
            raise SystemExit(f"{path}: line {line_no}: field 'label' must be 'correct' or "
                             f"'incorrect', got {row['label']!r}")  # fmt: skip
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


def spread(rows: list[dict], limit: int | None) -> list[dict]:
    """``limit`` rows evenly spaced over ``rows`` (every category of the set is contiguous,
    so a small limit still samples most of them); all rows when ``limit`` is None."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[(i * len(rows)) // limit] for i in range(limit)]


def grade(
    rows: Sequence[dict], batch: int, desc: str, **env_kwargs: Any
) -> tuple[list[Any], dict[str, int]]:
    """``(verdicts, verifier stats)``: ``k15/Math-v0`` built on ``rows`` with ``env_kwargs``
    grades every row's response, ``batch`` rows per ``verify_batch`` call, with a progress
    bar."""
    import gymnasium as gym
    import k15_envs  # noqa: F401  (registers the envs)
    from tqdm import tqdm

    dataset = [{"problem": r["problem"], "answer": r["answer"], "id": r["id"]} for r in rows]
    env = gym.make("k15/Math-v0", dataset=dataset, **env_kwargs).unwrapped
    try:
        verdicts: list[Any] = []
        with tqdm(total=len(rows), desc=desc, unit="row") as bar:
            for start in range(0, len(rows), batch):
                chunk = range(start, min(start + batch, len(rows)))
                verdicts += env.verify_batch([env.problem(i) for i in chunk],
                                             [rows[i]["response"] for i in chunk])  # fmt: skip
                bar.update(len(chunk))
        stats = dict(getattr(env.verifier, "stats", {}) or {})
    finally:
        env.close()
    return verdicts, stats


def bootstrap_interval(hits: Sequence[bool], seed: int, resamples: int) -> list[float | None]:
    """``[mean, low, high]``: the mean of ``hits`` and its 95 % percentile-bootstrap interval
    (``scipy.stats.bootstrap``); the interval is None for fewer than 2 rows."""
    import numpy as np
    from scipy.stats import bootstrap

    data = np.asarray(hits, dtype=float)
    mean = float(data.mean())
    if len(data) < 2:
        return [mean, None, None]
    if data.min() == data.max():  # every resample has the same mean
        return [mean, mean, mean]
    result = bootstrap((data,), np.mean, n_resamples=resamples, method="percentile",
                       confidence_level=0.95, rng=np.random.default_rng(seed))  # fmt: skip
    interval = result.confidence_interval
    return [mean, float(interval.low), float(interval.high)]


def summarize(rows: list[dict], seed: int, resamples: int) -> dict[str, Any]:
    """Accuracy of each grader vs the labels, their agreement and the judge's non-verdicts,
    for all rows and per category (rows carry ``math_verify`` and ``judge`` verdicts)."""
    groups: dict[str, list[dict]] = {"all": rows}
    for row in rows:
        groups.setdefault(row["category"], []).append(row)
    summary = {}
    for name, members in groups.items():
        truth = [LABELS[r["label"]] for r in members]
        math = [r["math_verify"]["correct"] for r in members]
        judge = [r["judge"]["correct"] for r in members]
        summary[name] = {
            "n": len(members),
            "labeled_correct": sum(truth) / len(truth),
            "math_verify_accuracy": bootstrap_interval(
                [m == t for m, t in zip(math, truth)], seed, resamples
            ),
            "judge_accuracy": bootstrap_interval(
                [j == t for j, t in zip(judge, truth)], seed, resamples
            ),
            "agreement": bootstrap_interval([m == j for m, j in zip(math, judge)], seed, resamples),
            "judge_no_verdict": sum(
                r["judge"]["reason"].split(":")[0] in ("judge_unparseable", "judge_error")
                for r in members
            ),
        }
    return summary


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _cell(stat: list[float | None]) -> str:
    mean, low, high = stat
    if low is None:
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def readme(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    """The results page: how it was run, the table, how to read it."""
    lines = [
        "# CoT judge vs math-verify on labeled free-form answers",
        "",
        f"Judge: `{settings['judge']}` ({settings['judge_backend']}, temperature 0, "
        f"max {settings['max_tokens']} tokens). Rows: {settings['rows']} of "
        f"`{settings['data']}`. Command:",
        "",
        "```",
        settings["command"],
        "```",
        "",
        "Accuracy = share of rows where the grader's verdict equals the human label; "
        "agreement = share where the two graders give the same verdict. Brackets: 95 % "
        f"percentile-bootstrap intervals (`scipy.stats.bootstrap`, {settings['resamples']} "
        "resamples). *no verdict*: the judge's reply had no verdict line or the request "
        'failed; such a row counts as "not correct", so a judge that never answers scores '
        "1 − *labeled correct*.",
        "",
        "| category | n | labeled correct | math-verify accuracy | judge accuracy | agreement "
        "| no verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in sorted(summary.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        label = "**all**" if name == "all" else name
        lines.append(f"| {label} | {s['n']} | {s['labeled_correct']:.2f} | "
                     f"{_cell(s['math_verify_accuracy'])} | "
                     f"{_cell(s['judge_accuracy'])} | {_cell(s['agreement'])} | "
                     f"{s['judge_no_verdict']} |")  # fmt: skip
    lines += [
        "",
        "## Reading it",
        "",
        "- A judge as small as the embedded SmolLM2-135M-Instruct is weak: it rarely follows "
        "the grading instruction, often ends without a verdict line and leans on surface "
        "cues, so with such a judge the judge column measures the mechanism, not what a "
        "capable judge model (the report's CoT reward model) achieves. Use `--endpoint` "
        "with a strong served model for a real comparison.",
        "- The set is built to expose math-verify's blind spots: units (`5 m` for 5 cm is "
        "accepted after unit words are stripped; `500 cm` for 5 m is rejected), numbers in "
        "words, percentages (`0.2` for 20 %), equivalent forms (mixed numbers, repeating "
        "decimals, inequalities vs intervals, `x = 3`), answers without a marked final "
        "answer; ordinary right and wrong answers are the control.",
        "- Labels follow one rule: correct when a careful grader would accept the final "
        "answer as answering the question asked (the asked unit, form — lowest terms, a "
        "percent, a rationalized denominator — and exactness count).",
        "- Per-row verdicts are in `results.json`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="judge model (registered name or HF dir), in process")
    source.add_argument("--endpoint", help="OpenAI-compatible API root, e.g. http://HOST:8000/v1")
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="with --model")
    parser.add_argument("--endpoint-model", help="served model id (default: the first listed)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labeled jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--limit", type=int, help="grade N rows, evenly spaced")
    parser.add_argument("--max-tokens", type=int, default=512, help="judge reply cap")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per request (endpoint)")
    parser.add_argument("--batch", type=int, default=16, help="rows per judge batch")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and engine seed")
    parser.add_argument("--dtype", default="auto", help="engine dtype (with --model)")
    args = parser.parse_args(argv)
    for name in ("limit", "max_tokens", "batch", "resamples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.endpoint_model and not args.endpoint:
        raise SystemExit("--endpoint-model needs --endpoint")
    return args


def judge_options(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """``(judge options for k15/Math-v0, judge name, backend description)``."""
    if args.endpoint:
        options = {"base_url": args.endpoint, "model": args.endpoint_model,
                   "max_tokens": args.max_tokens, "timeout_s": args.timeout_s}  # fmt: skip
        return options, args.endpoint_model or "(first served model)", f"endpoint {args.endpoint}"
    from rllib_k15.data.judge import EngineJudge

    backend = EngineJudge(args.model, engine=args.engine, max_tokens=args.max_tokens,
                          engine_kwargs={"dtype": args.dtype, "seed": args.seed})  # fmt: skip
    return {"backend": backend}, str(args.model), f"in-process {args.engine} engine"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = spread(load_labeled(args.data), args.limit)
    math, _ = grade(rows, args.batch, "math-verify", verifier="math")
    options, judge_name, backend = judge_options(args)
    judged, stats = grade(rows, args.batch, "judge", verifier="judge", judge=options)
    for row, m, j in zip(rows, math, judged):
        row["math_verify"] = {"correct": m.correct, "reason": m.reason,
                              "extracted": m.extracted_answer}  # fmt: skip
        row["judge"] = {"correct": j.correct, "reason": j.reason}
    summary = summarize(rows, args.seed, args.resamples)
    settings = {
        "judge": judge_name,
        "judge_backend": backend,
        "max_tokens": args.max_tokens,
        "data": _display_path(args.data),
        "rows": len(rows),
        "resamples": args.resamples,
        "seed": args.seed,
        "command": shlex.join(
            [
                "python",
                "experiments/judge_agreement.py",
                *map(str, sys.argv[1:] if argv is None else argv),
            ]
        ),  # fmt: skip
        "judge_stats": stats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"settings": settings, "summary": summary, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    (args.out / "README.md").write_text(readme(summary, settings), encoding="utf-8")
    overall = summary["all"]
    print(f"math-verify {_cell(overall['math_verify_accuracy'])}, judge "
          f"{_cell(overall['judge_accuracy'])}, agreement {_cell(overall['agreement'])}; "
          f"wrote {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
