"""Figures of evaluation results and training runs.

The token-efficiency plane (Pass@1 vs mean response tokens, Kimi k1.5 report Figure 7)
lives in :mod:`rllib_k15.evaluation.token_efficiency_plot` and is re-exported here::

    k15 plot token-efficiency results/eval.jsonl [more.jsonl ...] --out token_efficiency.png

Training runs side by side (ablations, baselines): held-out Pass@1 and mean response tokens
against iteration, one curve per arm, seeds of an arm as mean ± std::

    k15 plot runs OPMD=runs/opmd/metrics.jsonl GRPO=runs/grpo/metrics.jsonl --out cmp.png

``--vs-length PNG`` adds the report's Figure 8 view of the same runs: held-out Pass@1
against held-out mean response tokens, one point per evaluated iteration, joined in
iteration order (e.g. one arm per response budget).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rllib_k15.evaluation.intervals import paired_seed_difference, seed_interval
from rllib_k15.evaluation.token_efficiency_plot import plot_token_efficiency, token_efficiency_table
from rllib_k15.evaluation.token_efficiency_plot import save_figure as _save

__all__ = [
    "comparison_table",
    "plot_run_comparison",
    "plot_sweep_heatmaps",
    "plot_pass_vs_length",
    "plot_token_efficiency",
    "read_metrics_rows",
    "token_efficiency_table",
]


# ---------------------------------------------------------------- training runs side by side


def read_metrics_rows(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a ``k15 train`` ``metrics.jsonl``, read by
    :func:`rllib_k15.runs.run_files.read_metrics` (a torn last line is skipped with a warning,
    a bad earlier line names the file and line); a missing file is an error here."""
    from rllib_k15.runs.run_files import read_metrics

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such metrics file")
    rows = read_metrics(path)
    if not rows:
        raise ValueError(f"{path}: no metrics rows")
    return rows


def series(runs: Sequence[Sequence[dict]], key: str) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard deviation of ``key`` per iteration over ``runs`` (seeds of one arm).

    Only iterations where every run has a value count, so a curve never mixes seeds.
    Returns (iterations, means, stds); std is 0 for a single run.
    """
    import numpy as np

    per_run = [{r["iteration"]: r[key] for r in rows if r.get(key) is not None} for rows in runs]
    common = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    values = np.array([[d[i] for d in per_run] for i in common], dtype=np.float64)
    if not common:
        return [], [], []
    return common, values.mean(axis=1).tolist(), values.std(axis=1).tolist()


def plot_run_comparison(
    arms: dict[str, Sequence[Sequence[dict]]],
    out: str | os.PathLike[str],
    *,
    title: str = "",
    mark_iteration: float | None = None,
    mark_label: str = "",
) -> Path:
    """Held-out Pass@1 and mean response tokens against iteration, one curve per arm.

    ``arms``: label -> the metrics rows of each seed's run (``read_metrics_rows``). Several
    seeds draw their mean with its 95 % t-interval over seeds as a band. ``mark_iteration``
    draws a vertical line (e.g. the curriculum's transition or the end of the length-reward
    warm-up).
    """
    if not arms:
        raise ValueError("nothing to plot: no runs")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_len) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    panels = ((ax_acc, "eval_pass@1", "held-out Pass@1"), (ax_len, "tokens", "mean tokens"))
    for i, (label, runs) in enumerate(arms.items()):
        n = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        for ax, key, _ in panels:
            x, mean, std = series(runs, key)
            if not x:
                continue
            ax.plot(x, mean, "o-" if key == "eval_pass@1" else "-", color=f"C{i}",
                    label=label + n, markersize=5)  # fmt: skip
            if len(runs) > 1:  # the 95 % t-interval over seeds
                bands = [seed_interval(v) for v in per_seed(runs, key)[1]]
                low, high = [b[0] for b in bands], [b[1] for b in bands]
                ax.fill_between(x, low, high, color=f"C{i}", alpha=0.2)
    for ax, key, ylabel in panels:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel + (" (training responses)" if key == "tokens" else ""))
        ax.grid(alpha=0.3)
        if mark_iteration is not None:
            ax.axvline(mark_iteration, color="grey", linestyle=":", label=mark_label or None)
        ax.legend(fontsize=8)
    ax_acc.set_ylim(0, 1.02)
    ax_len.set_ylim(bottom=0)
    fig.suptitle(title)
    return _save(fig, out)


def plot_pass_vs_length(
    arms: dict[str, Sequence[Sequence[dict]]], out: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Held-out Pass@1 (y) against held-out mean response tokens (x) over the evaluated
    iterations, one line per arm (mean over its seeds), each point labelled with its
    iteration: how accuracy and length move together while training (report Figure 8)."""
    if not arms:
        raise ValueError("nothing to plot: no runs")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    drawn = 0
    for i, (label, runs) in enumerate(arms.items()):
        x_iters, tokens, _ = series(runs, "eval_tokens")
        y_iters, passes, _ = series(runs, "eval_pass@1")
        both = sorted(set(x_iters) & set(y_iters))
        if not both:
            continue
        xs = [tokens[x_iters.index(it)] for it in both]
        ys = [passes[y_iters.index(it)] for it in both]
        n = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        ax.plot(xs, ys, "o-", color=f"C{i}", label=label + n, markersize=5)
        for it, x, y in zip(both, xs, ys):
            ax.annotate(str(it), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError("no run has held-out Pass@1 and tokens at the same iteration")
    ax.set_xlabel("held-out mean response tokens")
    ax.set_ylabel("held-out Pass@1")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="labels: iteration", title_fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, out)


def per_seed(runs: Sequence[Sequence[dict]], key: str) -> tuple[list[int], list[list[float]]]:
    """The iterations where every seed has ``key``, and each such iteration's per-seed values
    (in the runs' order)."""
    per_run = [{r["iteration"]: r[key] for r in rows if r.get(key) is not None} for rows in runs]
    common = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    return common, [[float(d[i]) for d in per_run] for i in common]


def comparison_table(arms: dict[str, Sequence[Sequence[dict]]]) -> str:
    """Markdown: held-out Pass@1 per evaluated iteration, and the last iteration's mean
    tokens, per arm — the mean over seeds with its 95 % t-interval (``[low, high]``) when
    there are several. When every arm has the same number (≥ 2) of seeds, a second table
    gives each arm's paired difference to the first arm at the last iteration evaluated by
    all (seeds paired in the order the runs were given)."""
    evaluated = sorted({i for runs in arms.values() for i in series(runs, "eval_pass@1")[0]})
    head = ["arm", "seeds", *[f"Pass@1 it {i}" for i in evaluated], "tokens (last it)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, runs in arms.items():
        x, values = per_seed(runs, "eval_pass@1")
        by_it = dict(zip(x, values))
        cells = [label, str(len(runs))]
        cells += ["-" if i not in by_it else _with_interval(by_it[i]) for i in evaluated]
        tx, tvalues = per_seed(runs, "tokens")
        cells.append("-" if not tx else _with_interval(tvalues[-1], digits=1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _paired_lines(arms))


def _paired_lines(arms: dict[str, Sequence[Sequence[dict]]]) -> list[str]:
    seeds = {len(runs) for runs in arms.values()}
    if len(arms) < 2 or len(seeds) != 1 or seeds.pop() < 2:
        return []
    common = set.intersection(*(set(per_seed(r, "eval_pass@1")[0]) for r in arms.values()))
    if not common:
        return []
    last = max(common)
    (first, base), *others = arms.items()
    base_values = dict(zip(*per_seed(base, "eval_pass@1")))[last]
    lines = ["", f"| arm − {first} (paired by seed) | Pass@1 it {last} |", "|---|---|"]
    for label, runs in others:
        diff, low, high = paired_seed_difference(
            dict(zip(*per_seed(runs, "eval_pass@1")))[last], base_values
        )
        lines.append(f"| {label} | {diff:+.2f} [{low:+.2f}, {high:+.2f}] |")
    return lines


def _pm(mean: float, std: float, n: int, digits: int = 2) -> str:
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def _with_interval(values: Sequence[float], digits: int = 2) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    low, high = seed_interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ---------------------------------------------------------------- a two-knob sweep


def plot_sweep_heatmaps(
    cells: dict[tuple[float, float], dict[str, float]],
    out: str | os.PathLike[str],
    *,
    row_name: str,
    col_name: str,
    panels: Sequence[tuple[str, str, str]],
    title: str = "",
) -> Path:
    """One annotated heatmap per metric of a grid sweep (e.g. τ × length-reward warm-up).

    ``cells``: (row value, column value) -> metric name -> value (a missing metric or cell
    is drawn blank and annotated "-"). ``panels``: (metric, panel title, colormap) each.
    """
    if not cells:
        raise ValueError("nothing to plot: no sweep cells")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), dpi=110)
    for ax, (metric, panel_title, cmap) in zip(np.atleast_1d(axes), panels):
        grid = np.full((len(rows), len(cols)), np.nan)
        for (r, c), metrics in cells.items():
            if metrics.get(metric) is not None:
                grid[rows.index(r), cols.index(c)] = metrics[metric]
        image = ax.imshow(grid, cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.85)
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = grid[i, j]
                red, green, blue, _ = image.cmap(image.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # cell luminance
                ax.text(j, i, "-" if np.isnan(v) else f"{v:.3g}", ha="center", va="center",
                        color="white" if dark else "black", fontsize=10)  # fmt: skip
        ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
        ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
        ax.set_xlabel(col_name)
        ax.set_ylabel(row_name)
        ax.set_title(panel_title, fontsize=10)
    fig.suptitle(title)
    return _save(fig, out)
