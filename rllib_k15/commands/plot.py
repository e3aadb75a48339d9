"""``k15 plot``: figures from evaluation results.

    k15 plot token-efficiency results/eval.jsonl [more ...] --out token_efficiency.png

``token-efficiency`` reads the rows ``k15 eval`` appends (JSON Lines, or JSON files holding
a list of rows), groups them by label and draws Pass@1 against mean response tokens with
±1 std error bars over runs (Kimi k1.5 report, Figure 7).
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
    te.set_defaults(func=run_token_efficiency)


def run_token_efficiency(args: argparse.Namespace) -> int:
    from rllib_k15.evaluation import read_results, summarize_runs
    from rllib_k15.plotting import plot_token_efficiency

    summaries = summarize_runs(read_results(args.results))
    for s in summaries:
        print(
            f"{s.label:30s} runs={s.runs}  Pass@1={100 * s.pass_at_1_mean:.1f}±"
            f"{100 * s.pass_at_1_std:.1f}%  tokens={s.mean_tokens_mean:.1f}±{s.mean_tokens_std:.1f}"
        )
    print(plot_token_efficiency(summaries, args.out, title=args.title))
    return 0
