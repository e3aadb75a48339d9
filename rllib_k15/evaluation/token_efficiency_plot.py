"""The token-efficiency plane (Kimi k1.5 report, Figure 7): Pass@1 against mean response
tokens, one point per model or method (a ``label`` of ``k15 eval``'s result rows).

Points up and to the left are better: more accuracy per token, the goal of the long2short
methods. The vertical bar of a point is its 95 % interval of Pass@1 (the bootstrap over
problems stored in its row; several runs: the mean of their intervals), the
horizontal bar ±1 std of mean tokens over runs. Labels evaluated on different tasks (env
and env kwargs, problem count aside) go to separate panels, and the table's token ratio is
taken against the first label of the same task, since a length is only comparable on the
same problems.

    k15 plot token-efficiency results/eval.jsonl [more.jsonl ...] --out token_efficiency.png
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from rllib_k15.evaluation.evaluate import LabelSummary

__all__ = ["by_task", "plot_token_efficiency", "save_figure", "token_efficiency_table"]


def by_task(summaries: Sequence[LabelSummary]) -> dict[str, list[LabelSummary]]:
    """Summaries grouped by ``task``, tasks and labels in first-seen order."""
    groups: dict[str, list[LabelSummary]] = {}
    for s in summaries:
        groups.setdefault(s.task, []).append(s)
    return groups


def _pass_bar(s: LabelSummary) -> tuple[float, float]:
    """(below, above) the point of the Pass@1 bar, in percent."""
    if s.pass_at_1_low is None or s.pass_at_1_high is None:
        return 100 * s.pass_at_1_std, 100 * s.pass_at_1_std
    return (
        100 * max(0.0, s.pass_at_1_mean - s.pass_at_1_low),
        100 * max(0.0, s.pass_at_1_high - s.pass_at_1_mean),
    )


def plot_token_efficiency(
    summaries: Sequence[LabelSummary],
    out: str | os.PathLike[str],
    *,
    title: str = "Token efficiency",
    subtitle: str | None = None,
    legend: bool = True,
) -> Path:
    """Write the accuracy-vs-tokens scatter of ``summaries`` to ``out`` (PNG), one panel per
    task, and return the path. ``legend=False`` leaves out the legend (every point is
    labelled beside it anyway) when it would cover points."""
    if not summaries:
        raise ValueError("nothing to plot: no evaluation results")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    tasks = by_task(summaries)
    columns = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.4 * columns, 4.8 * rows), dpi=150, squeeze=False
    )
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>"
    for ax, (task, points) in zip(axes.flat, tasks.items()):
        for i, s in enumerate(points):
            below, above = _pass_bar(s)
            ax.errorbar(
                s.mean_tokens_mean,
                100 * s.pass_at_1_mean,
                xerr=s.mean_tokens_std,
                yerr=[[below], [above]],
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
        if task:
            ax.set_title("\n".join(textwrap.wrap(task, 60)), fontsize=8)
        ax.grid(True, alpha=0.3)
        # tokens from 0 (lengths are compared as ratios); accuracy padded by >= 5 points
        ax.set_xlim(0, 1.25 * max(s.mean_tokens_mean + s.mean_tokens_std for s in points))
        low = min(100 * s.pass_at_1_mean - _pass_bar(s)[0] for s in points)
        high = max(100 * s.pass_at_1_mean + _pass_bar(s)[1] for s in points)
        pad = max(5.0, 0.15 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(105.0, high + pad))  # room for a label at 100 %
        if not legend:
            continue
        ax.legend(
            fontsize=8,
            loc="best",
            title="Pass@1 bars: 95 % interval; tokens: ±1 std over runs",
            title_fontsize=7,
        )
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    fig.suptitle(title if subtitle is None else f"{title}\n{subtitle}", fontsize=11)
    return save_figure(fig, out)


def save_figure(fig, out: str | os.PathLike[str]) -> Path:
    """Lay out, write (creating the directory) and close ``fig``; returns the PNG path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def token_efficiency_table(summaries: Sequence[LabelSummary]) -> str:
    """Markdown table of ``summaries``: Pass@1 (mean ± std over runs, and its 95 % interval),
    mean tokens, and tokens as a fraction of the first label's of the same task (the start
    model of a long2short study). With several tasks a ``task`` column says which."""
    if not summaries:
        raise ValueError("nothing to tabulate: no evaluation results")
    tasks = by_task(summaries)
    several = len(tasks) > 1
    head = "| task " if several else ""
    reference = "first of its task" if several else summaries[0].label
    columns = f"| method | runs | Pass@1 (%) | 95 % interval | mean tokens | tokens / {reference} |"
    lines = [head + columns, ("|---" if several else "") + "|---|---|---|---|---|---|"]
    for task, points in tasks.items():
        first = points[0].mean_tokens_mean
        for s in points:
            ratio = f"{s.mean_tokens_mean / first:.2f}" if first > 0 else "-"
            accuracy = _pm(100 * s.pass_at_1_mean, 100 * s.pass_at_1_std, s.runs)
            interval = (
                f"[{100 * s.pass_at_1_low:.1f}, {100 * s.pass_at_1_high:.1f}]"
                if s.pass_at_1_low is not None and s.pass_at_1_high is not None
                else "-"
            )
            tokens = _pm(s.mean_tokens_mean, s.mean_tokens_std, s.runs)
            cell = f"| {task} " if several else ""
            lines.append(
                f"{cell}| {s.label} | {s.runs} | {accuracy} | {interval} | {tokens} | {ratio} |"
            )
    return "\n".join(lines)


def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f}" + (f" ± {std:.1f}" if n > 1 else "")
