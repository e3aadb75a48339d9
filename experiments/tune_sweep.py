"""τ × length-reward warm-up sweep with Ray Tune (experiment 4) — the Tune example.

Every cell is one K15MirrorDescent trial of the same experiment file with ``tau`` and
``length_penalty_warmup_iters`` taken from a grid; the last held-out evaluation of each
trial gives the cell's Pass@1 and mean response tokens::

    python experiments/tune_sweep.py                                   # 3 τ × 2 warm-ups
    python experiments/tune_sweep.py --taus 0.03 0.3 --warmups 0 4 --iterations 6 --eval-interval 3
    python experiments/tune_sweep.py --config tuned_examples/quickstart_smollm2.yaml \\
        --out docs/results/tune_tau_warmup_quick

Writes ``<out>/cells.json`` (one record per trial), ``<out>/table.md`` and
``<out>/heatmap.png``. Trials run one at a time (``max_concurrent_trials``); on a cluster
raise it, and Tune places trials wherever their resources fit. An interrupted sweep is
continued from ``--storage`` with ``--resume``.

The search space is ordinary Tune: this is the part to copy::

    config = apply_sections(K15Config(), spec["sections"])
    config.training(tau=tune.grid_search(taus),
                    length_penalty_warmup_iters=tune.grid_search(warmups))
    tune.Tuner(K15MirrorDescent, param_space=config, run_config=tune.RunConfig(...)).fit()
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rllib_k15.metric_names import EVAL_RESULTS, PASS_AT_1, RESPONSE_TOKENS_MEAN

ROOT = Path(__file__).resolve().parents[1]


def last_evaluation(history: list[dict]) -> dict[str, float | None]:
    """Pass@1 and tokens of the last iteration that evaluated, from a trial's results."""
    for result in reversed(history):
        held_out = result.get(EVAL_RESULTS) or {}
        if _number(held_out.get(PASS_AT_1)) is not None:
            return {
                "iteration": result.get("training_iteration"),
                "pass_at_1": held_out[PASS_AT_1],
                "tokens": _number(held_out.get(RESPONSE_TOKENS_MEAN)),
            }
    return {"iteration": None, "pass_at_1": None, "tokens": None}


def _number(value) -> float | None:
    """A finite float, or None (Tune's dataframe holds NaN where nothing was logged)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def markdown_table(cells: list[dict]) -> str:
    lines = ["| tau | warm-up iterations | held-out Pass@1 | mean tokens | at iteration |",
             "|---|---|---|---|---|"]  # fmt: skip
    for c in sorted(cells, key=lambda c: (c["tau"], c["warmup"])):
        p, t = c["pass_at_1"], c["tokens"]
        lines.append(
            f"| {c['tau']:g} | {c['warmup']} | {'-' if p is None else f'{p:.3f}'} | "
            f"{'-' if t is None else f'{t:.1f}'} | {c['iteration'] or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tuned_examples/k15_arithmetic_smollm2.yaml")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--eval-interval", type=int, help="override training.eval_interval")
    parser.add_argument("--storage", default="runs/tune_sweep", help="Tune storage_path")
    parser.add_argument("--out", default="docs/results/tune_tau_warmup")
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --storage")
    args = parser.parse_args(argv)

    from ray import tune

    from rllib_k15 import K15Config, K15MirrorDescent
    from rllib_k15.evaluation.plots import plot_sweep_heatmaps
    from rllib_k15.runs.experiment import apply_sections, load_experiment_file

    spec = load_experiment_file(ROOT / args.config)
    config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
    if args.eval_interval:
        config.training(eval_interval=args.eval_interval)
    if not config.eval_interval or args.iterations % config.eval_interval:
        parser.error(
            f"--iterations ({args.iterations}) must be a multiple of eval_interval "
            f"({config.eval_interval}) so the last iteration is evaluated (--eval-interval)"
        )
    config.training(
        tau=tune.grid_search(args.taus),
        length_penalty_warmup_iters=tune.grid_search(args.warmups),
    )
    storage = (ROOT / args.storage).resolve()
    name = Path(args.config).stem
    if args.resume:
        tuner = tune.Tuner.restore(str(storage / name), K15MirrorDescent)
    else:
        tuner = tune.Tuner(
            K15MirrorDescent,
            param_space=config,
            tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                stop={"training_iteration": args.iterations},
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True, num_to_keep=1),
            ),
        )
    grid = tuner.fit()
    cells = []
    for result in grid:
        frame = result.metrics_dataframe
        history = [] if frame is None else [_unflatten(r) for r in frame.to_dict("records")]
        cells.append({
            "tau": result.config["tau"],
            "warmup": result.config["length_penalty_warmup_iters"],
            **last_evaluation(history),
            "error": None if result.error is None else str(result.error),
        })  # fmt: skip
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells.json").write_text(json.dumps(cells, indent=2) + "\n")
    table = markdown_table(cells)
    (out / "table.md").write_text(table + "\n")
    print(table)
    plot_sweep_heatmaps(
        {(c["tau"], c["warmup"]): c for c in cells},
        out / "heatmap.png",
        row_name="tau",
        col_name="length-reward warm-up (iterations)",
        panels=[
            ("pass_at_1", "held-out Pass@1 (higher is better)", "viridis"),
            ("tokens", "mean response tokens (lower is better)", "viridis_r"),
        ],  # fmt: skip
        title=f"{name}: τ × warm-up, {args.iterations} iterations",
    )
    print(out / "heatmap.png")
    return 1 if any(c["error"] for c in cells) else 0


def _unflatten(row: dict) -> dict:
    """Tune's metrics dataframe flattens nested results with '/': undo it."""
    nested: dict = {}
    for key, value in row.items():
        *parents, leaf = str(key).split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[leaf] = value
    return nested


if __name__ == "__main__":
    raise SystemExit(main())
