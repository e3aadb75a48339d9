"""``k15 plot``: figures from evaluation results and training runs.

    k15 plot token-efficiency results/eval.jsonl [more ...] --out token_efficiency.png
    k15 plot runs OPMD=runs/opmd/metrics.jsonl GRPO=runs/grpo/metrics.jsonl --out cmp.png

``token-efficiency`` reads the rows ``k15 eval`` appends (JSON Lines, or JSON files holding
a list of rows), groups them by label and draws Pass@1 against mean response tokens with
±1 std error bars over runs (Kimi k1.5 report, Figure 7), and prints them as a Markdown table
(``--table`` also writes it to a file).

``runs`` reads ``k15 train`` metrics files given as LABEL=PATH (repeat a label for more
seeds of one arm) and draws held-out Pass@1 and mean response tokens against iteration,
then prints the same numbers as a Markdown table (``--table`` also writes it to a file).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot",
        help="plots from evaluation results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="plot_command", metavar="COMMAND", required=True)
    te = sub.add_parser("token-efficiency", help="Pass@1 vs mean response tokens, per label")
    te.add_argument("results", nargs="+", metavar="RESULTS", help="k15 eval result files")
    te.add_argument("--out", default="token_efficiency.png", help="output PNG")
    te.add_argument("--title", default="Token efficiency", help="figure title")
    te.add_argument("--table", help="also write the Markdown table to this file")
    te.set_defaults(func=run_token_efficiency)
    rc = sub.add_parser("runs", help="training runs side by side: Pass@1 and tokens vs iteration")
    rc.add_argument("runs", nargs="+", metavar="LABEL=METRICS", help="k15 train metrics.jsonl")
    rc.add_argument("--out", default="runs.png", help="output PNG")
    rc.add_argument("--title", default="", help="figure title")
    rc.add_argument("--mark-iteration", type=float, help="draw a vertical line at this iteration")
    rc.add_argument("--mark-label", default="", help="legend text of that line")
    rc.add_argument("--table", help="also write the Markdown table to this file")
    rc.add_argument("--until", type=int, help="only iterations <= this (equal budgets)")
    rc.add_argument("--vs-length", metavar="PNG", help="also plot Pass@1 vs tokens (Figure 8)")
    rc.set_defaults(func=run_runs)


def run_token_efficiency(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rllib_k15.evaluation.evaluate import read_results, summarize_runs
    from rllib_k15.evaluation.plots import plot_token_efficiency, token_efficiency_table

    summaries = summarize_runs(read_results(args.results))
    table = token_efficiency_table(summaries)
    print(table)
    if args.table:
        Path(args.table).write_text(table + "\n")
    print(plot_token_efficiency(summaries, args.out, title=args.title))
    return 0


def parse_arms(specs: list[str], until: int | None = None) -> dict[str, list[list[dict]]]:
    """LABEL=PATH arguments -> label -> one metrics row list per file (in argument order),
    keeping the rows of iterations <= ``until`` when it is given."""
    from rllib_k15.evaluation.plots import read_metrics_rows

    arms: dict[str, list[list[dict]]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"run {spec!r} must be LABEL=PATH (e.g. OPMD=runs/a/metrics.jsonl)")
        rows = read_metrics_rows(path)
        if until is not None:
            rows = [r for r in rows if r.get("iteration", 0) <= until]
        arms.setdefault(label, []).append(rows)
    return arms


def run_runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rllib_k15.evaluation.plots import (
        comparison_table,
        plot_pass_vs_length,
        plot_run_comparison,
    )

    try:
        arms = parse_arms(args.runs, args.until)
    except (OSError, ValueError) as err:
        print(f"k15 plot runs: {err}")
        return 2
    table = comparison_table(arms)
    print(table)
    if args.table:
        Path(args.table).write_text(table + "\n")
    out = plot_run_comparison(
        arms, args.out, title=args.title,
        mark_iteration=args.mark_iteration, mark_label=args.mark_label,
    )  # fmt: skip
    print(out)
    if args.vs_length:
        print(plot_pass_vs_length(arms, args.vs_length, title=args.title))
    return 0
