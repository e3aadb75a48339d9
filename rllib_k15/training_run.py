"""Run K15MirrorDescent in-process with a live progress table, a metrics log and a plot.

This is what ``k15 train`` (and ``make train``) runs; ``rllib train`` runs the same
Algorithm through Ray Tune instead. Each iteration appends one JSON line to
``<out>/metrics.jsonl``; at the end ``<out>/learning_curve.png`` is drawn and the final
checkpoint is saved to ``<out>/checkpoint``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

# (label, nested key) of the numbers shown per iteration and plotted
SHOWN_METRICS = {
    "accuracy": ("k15", "accuracy"),
    "reward": ("k15", "reward_total_mean"),
    "tokens": ("k15", "response_tokens_mean"),
    "len_w": ("k15", "length_weight"),
    "eval_pass@1": ("k15_eval", "pass_at_1"),
    "eval_tokens": ("k15_eval", "response_tokens_mean"),
    "loss": ("learners", "default_policy", "total_loss"),
    "kl": ("learners", "default_policy", "kl_ref"),
    "logp_gap": ("learners", "logp_mismatch_mean_abs"),
    "gen_tok/s": ("env_runners", "generation_tokens_per_s"),
    "train_tok/s": ("k15", "train_tokens_per_s"),
}


def _dig(result: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def summarize(result: dict) -> dict[str, float | None]:
    row: dict[str, float | None] = {"iteration": result.get("training_iteration")}
    for label, path in SHOWN_METRICS.items():
        value = _dig(result, path)
        # RLlib reports NaN for a metric not logged this iteration (e.g. no eval ran)
        numeric = isinstance(value, (int, float)) and not math.isnan(value)
        row[label] = float(value) if numeric else None
    row["seconds"] = result.get("time_this_iter_s")
    return row


def run_training(
    config, iterations: int, out_dir: str | Path, evaluate_first: bool = True
) -> list[dict]:
    """Build the algorithm, train ``iterations`` iterations, log, plot, checkpoint."""
    from rich.console import Console
    from rich.live import Live

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    console.print(
        f"[bold]K15MirrorDescent[/] on {config.env} with {config.hf_model}, "
        f"{iterations} iterations -> {out}"
    )
    algo = config.build_algo()
    rows: list[dict] = []
    try:
        if evaluate_first and config.eval_interval:
            start = time.perf_counter()
            base = algo.evaluate_held_out()
            rows.append(
                {
                    "iteration": 0,
                    "eval_pass@1": base["pass_at_1"],
                    "eval_tokens": base["response_tokens_mean"],
                    "seconds": time.perf_counter() - start,
                }
            )
        table = _table(rows)
        with (
            Live(table, console=console, refresh_per_second=2) as live,
            open(out / "metrics.jsonl", "w") as log,
        ):
            for _ in range(iterations):
                result = algo.train()
                row = summarize(result)
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                live.update(_table(rows))
        algo.save_to_path(str((out / "checkpoint").resolve()))
    finally:
        algo.stop()
    plot_learning_curve(
        rows, out / "learning_curve.png", title=f"{config.hf_model} on {config.env}"
    )
    console.print(f"learning curve: {out / 'learning_curve.png'}; checkpoint: {out / 'checkpoint'}")
    return rows


def _table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="training progress")
    cols = ["iteration", "accuracy", "reward", "tokens", "eval_pass@1", "loss", "kl", "seconds"]
    for col in cols:
        table.add_column(col, justify="right")
    for row in rows[-15:]:
        table.add_row(*[("-" if row.get(c) is None else f"{row[c]:.3g}") for c in cols])
    return table


def plot_learning_curve(rows: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_len) = plt.subplots(1, 2, figsize=(11, 4))
    for ax in (ax_acc, ax_len):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    train = [r for r in rows if r.get("accuracy") is not None]
    evals = [r for r in rows if r.get("eval_pass@1") is not None]
    if train:
        ax_acc.plot(
            [r["iteration"] for r in train],
            [r["accuracy"] for r in train],
            "o-",
            label="train accuracy (k samples, T=1)",
        )
    if evals:
        ax_acc.plot(
            [r["iteration"] for r in evals],
            [r["eval_pass@1"] for r in evals],
            "s--",
            label="held-out Pass@1",
        )
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if train:
        ax_len.plot(
            [r["iteration"] for r in train],
            [r["tokens"] for r in train],
            "o-",
            color="C2",
            label="mean response tokens",
        )
    ax_len.set_xlabel("iteration")
    ax_len.set_ylabel("tokens")
    ax_len.grid(alpha=0.3)
    ax_len.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
