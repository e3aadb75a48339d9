"""Token-efficiency plot in the style of Figure 7 of the Kimi k1.5 report.

One point per model or method (a ``label`` of the evaluation results): x = mean response
tokens, y = Pass@1 averaged over samples, both with error bars of one standard deviation
over runs. Points up and to the left are better — more accuracy per token, the goal of the
long2short methods.

Launch::

    k15 plot token-efficiency results/eval.jsonl [more.jsonl ...] --out token_efficiency.png
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rllib_k15.evaluation import LabelSummary

__all__ = ["plot_token_efficiency"]


def plot_token_efficiency(
    summaries: Sequence[LabelSummary],
    out: str | os.PathLike[str],
    *,
    title: str = "Token efficiency",
    subtitle: str | None = None,
) -> Path:
    """Write the accuracy-vs-tokens scatter of ``summaries`` to ``out`` (PNG) and return it."""
    if not summaries:
        raise ValueError("nothing to plot: no evaluation results")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>"
    for i, s in enumerate(summaries):
        ax.errorbar(
            s.mean_tokens_mean,
            100 * s.pass_at_1_mean,
            xerr=s.mean_tokens_std,
            yerr=100 * s.pass_at_1_std,
            fmt=markers[i % len(markers)],
            color=colors[i % len(colors)],
            markersize=8,
            capsize=4,
            elinewidth=1.2,
            label=f"{s.label} (n={s.runs})",
        )
        ax.annotate(
            s.label,
            (s.mean_tokens_mean, 100 * s.pass_at_1_mean),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=9,
        )
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel("Pass@1 (%)")
    ax.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=11)
    ax.grid(True, alpha=0.3)
    # tokens from 0 (lengths are compared as ratios); accuracy padded by >= 5 points
    ax.set_xlim(0, 1.25 * max(s.mean_tokens_mean + s.mean_tokens_std for s in summaries))
    low = min(100 * (s.pass_at_1_mean - s.pass_at_1_std) for s in summaries)
    high = max(100 * (s.pass_at_1_mean + s.pass_at_1_std) for s in summaries)
    pad = max(5.0, 0.15 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    ax.legend(fontsize=8, loc="best", title="error bars: ±1 std over runs", title_fontsize=7)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
