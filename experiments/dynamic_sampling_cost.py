"""What DAPO dynamic sampling costs per iteration: wall time, problems drawn, groups trained.

    python experiments/dynamic_sampling_cost.py \\
        OPMD=docs/results/dynamic_sampling/opmd_seed0_metrics.jsonl,... \\
        "dynamic sampling=docs/results/dynamic_sampling/dynamic_seed0_metrics.jsonl,..." \\
        --samples 8 [--out table.md]

Reads each run's ``metrics.jsonl`` (``k15 train``), skips iteration 0 (the evaluation before
training) and writes one row per arm, as mean over seeds with a 95 % t-interval (scipy):
wall seconds per iteration, problems drawn per iteration (``problems`` of each row), groups
trained per iteration (``trained`` responses / k), the useful share of the trained responses
(``signal``: in a group whose rewards differ) and wall seconds per useful response.
Evaluation iterations are counted as they ran (both arms evaluate at the same iterations).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_cost(path: str, samples: int) -> dict[str, float | None]:
    """Per-iteration means of one run: seconds, problems drawn, groups trained, and the
    seconds per useful response (one in a group whose rewards differ). Runs logged before
    ``k15 train`` recorded ``trained`` / ``signal`` give None for what needs them."""
    from rllib_k15.runs.run_files import read_metrics

    rows = [r for r in read_metrics(Path(path)) if r.get("iteration", 0) >= 1]
    if not rows:
        raise ValueError(f"{path}: no training iterations")
    seconds = np.array([r["seconds"] for r in rows], float)
    drawn = np.array([len(r.get("problems") or []) for r in rows], float)
    out: dict[str, float | None] = {
        "seconds": float(seconds.mean()),
        "drawn": float(drawn.mean()),
        "total_seconds": float(seconds.sum()),
        "groups": None,
        "signal": None,
        "seconds_per_useful": None,
    }
    if all(r.get("trained") is not None for r in rows):
        trained = np.array([r["trained"] for r in rows], float)
        out["groups"] = float(trained.mean() / samples)
        if all(r.get("signal") is not None for r in rows):
            useful = trained * np.array([r["signal"] for r in rows], float)
            out["signal"] = float(useful.sum() / trained.sum())
            out["seconds_per_useful"] = float(seconds.sum() / useful.sum())
    return out


def mean_interval(values: list[float]) -> str:
    """``mean [low, high]``: 95 % t-interval over seeds (the mean alone for one seed)."""
    if any(v is None for v in values):
        return "not recorded"
    x = np.asarray(values, float)
    if len(x) < 2 or np.ptp(x) == 0:  # one seed, or equal in every seed
        return f"{x.mean():.2f}"
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return f"{x.mean():.2f} [{low:.2f}, {high:.2f}]"


def table(arms: dict[str, list[dict[str, float]]]) -> str:
    keys = [("seconds", "s / iteration"), ("drawn", "problems drawn / it."),
            ("groups", "groups trained / it."), ("signal", "useful share of trained"),
            ("seconds_per_useful", "s / useful response"),
            ("total_seconds", "s / run")]  # fmt: skip
    lines = ["| arm | seeds | " + " | ".join(label for _, label in keys) + " |",
             "|---" * (len(keys) + 2) + "|"]  # fmt: skip
    for label, runs in arms.items():
        cells = [mean_interval([r[k] for r in runs]) for k, _ in keys]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs="+", metavar="LABEL=FILE[,FILE...]")
    p.add_argument("--samples", type=int, required=True, help="samples_per_problem (k)")
    p.add_argument("--out", help="write the table here too")
    args = p.parse_args(argv)
    arms = {}
    for spec in args.arms:
        label, _, files = spec.partition("=")
        if not files:
            p.error(f"{spec!r}: expected LABEL=FILE[,FILE...]")
        arms[label] = [run_cost(f, args.samples) for f in files.split(",")]
    text = table(arms)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
