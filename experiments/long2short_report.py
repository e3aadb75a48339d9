"""The table and figure of ``experiments/long2short_splits.py`` from its ``eval.jsonl``.

One row per ``k15 eval`` of one model; rows of a method carry its ``training_seed``. A
method's Pass@1 and tokens are the mean over training seeds with a Student-t 95 % interval
over seeds; each method is also compared with the ``reference`` method (long2short RL) seed
by seed — the same test problems, the same training seed — as the paired difference and its
t-interval. A label with one row (the parents, the merge) shows the bootstrap-over-problems
interval of its single evaluation instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rllib_k15.evaluation.evaluate import LabelSummary
from rllib_k15.evaluation.intervals import paired_seed_difference, seed_interval


def by_label(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """label -> training seed -> row (first-seen label order; a repeated pair is an error)."""
    grouped: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        seeds = grouped.setdefault(row["label"], {})
        seed = int(row.get("training_seed", 0))
        if seed in seeds:
            raise ValueError(f"two evaluations of {row['label']!r} at training seed {seed}")
        seeds[seed] = row
    return grouped


def summary(label: str, runs: dict[int, dict[str, Any]]) -> LabelSummary:
    """Mean over seeds with its t-interval (one run: its bootstrap over problems)."""
    import numpy as np

    passes = [float(r["pass_at_1"]) for r in runs.values()]
    tokens = [float(r["mean_tokens"]) for r in runs.values()]
    if len(runs) == 1:
        (row,) = runs.values()
        low, high = row.get("pass_at_1_low"), row.get("pass_at_1_high")
    else:
        low, high = seed_interval(passes)
    return LabelSummary(
        label=label,
        runs=len(runs),
        pass_at_1_mean=float(np.mean(passes)),
        pass_at_1_std=float(np.std(passes, ddof=1)) if len(passes) > 1 else 0.0,
        mean_tokens_mean=float(np.mean(tokens)),
        mean_tokens_std=float(np.std(tokens, ddof=1)) if len(tokens) > 1 else 0.0,
        pass_at_1_low=None if low is None else max(0.0, float(low)),
        pass_at_1_high=None if high is None else min(1.0, float(high)),
    )


def paired(a: dict[int, dict], b: dict[int, dict], key: str) -> tuple[float, float, float] | None:
    """Paired per-seed difference of ``key`` over the seeds both have (None: < 2 shared)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return paired_seed_difference([float(a[s][key]) for s in seeds],
                                  [float(b[s][key]) for s in seeds])  # fmt: skip


def _cell(value: tuple[float, float, float] | None, scale: float, digits: int) -> str:
    if value is None:
        return "—"
    d, low, high = (scale * v for v in value)
    return f"{d:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table(grouped: dict[str, dict[int, dict]], reference: str, start: str) -> str:
    start_tokens = summary(start, grouped[start]).mean_tokens_mean
    lines = [
        f"| model | training seeds | Pass@1 (%) [95 % CI] | mean tokens | tokens / start "
        f"| Pass@1 − {reference} (points, paired) | tokens − {reference} (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in grouped.items():
        s = summary(label, runs)
        ci = "" if s.pass_at_1_low is None else (
            f" [{100 * s.pass_at_1_low:.1f}, {100 * s.pass_at_1_high:.1f}]")  # fmt: skip
        vs = label != reference and reference in grouped
        lines.append(
            f"| {label} | {', '.join(map(str, sorted(runs)))} | {100 * s.pass_at_1_mean:.1f}{ci} "
            f"| {s.mean_tokens_mean:.1f} | {s.mean_tokens_mean / start_tokens:.2f} "
            f"| {_cell(paired(runs, grouped[reference], 'pass_at_1') if vs else None, 100, 1)} "
            f"| {_cell(paired(runs, grouped[reference], 'mean_tokens') if vs else None, 1, 1)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    results: Path,
    out: Path,
    reference: str = "long2short RL",
    start: str = "long CoT (start)",
    off_figure: tuple[str, ...] = (),
) -> None:
    """``table.md``, ``summary.json`` and ``token_efficiency.png`` next to ``results``
    (labels in ``off_figure`` only in the table: a far-off point would squash the rest)."""
    from rllib_k15.evaluation.token_efficiency_plot import plot_token_efficiency

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    grouped = by_label(rows)
    (out / "table.md").write_text(table(grouped, reference, start))
    summaries = [summary(label, runs) for label, runs in grouped.items()]
    (out / "summary.json").write_text(json.dumps([asdict(s) for s in summaries], indent=1) + "\n")
    plot_token_efficiency(
        [s for s in summaries if s.label not in off_figure],
        out / "token_efficiency.png",
        title="long2short from an SFT-made long-CoT model, test-split 2-digit addition",
        subtitle="trained methods: mean of 3 seeds, t-interval over seeds\n"
        "parents, merge: one model, bootstrap over problems; tokens ±1 std",
        legend=False,
    )
    print((out / "table.md").read_text())
