"""The long2short study at CPU scale (issues 7 and 10), every step a ``k15`` command.

1. a LONG-CoT policy: OPMD without length penalty, 256-token budget
   (``tuned_examples/long2short/long_cot_arithmetic_smollm2.yaml``), exported to HF;
2. a SHORT-CoT policy of the same base: the tuned OPMD example with its length reward
   (an existing run is reused with ``--short-run``), exported;
3. one sampling pass of the long model on the long2short problems (8 per problem) that
   feeds shortest rejection sampling, DPO pairs and O1-Pruner's reference statistics;
4. the methods, all starting from the long model: merge (α = 0.5 with the short model),
   shortest-RS + SFT, DPO, long2short RL, O1-Pruner;
5. ``k15 eval`` of every model on the same held-out problems (2 seeds) and the
   Figure-7 token-efficiency plot + table in ``docs/results/long2short/``, and the
   O1-Pruner vs long2short-RL comparison in ``docs/results/o1_pruner_vs_long2short_rl/``.

::

    python experiments/long2short.py                       # everything missing, in order
    python experiments/long2short.py --short-run runs/ablations/opmd_seed0
    python experiments/long2short.py --plot-only

Every step is skipped when its output exists, so an interrupted study continues where it
stopped (a training step resumes its run with ``k15 train --resume``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K15 = [sys.executable, "-m", "rllib_k15"]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import train_arm  # noqa: E402  (same folder; runs like its arms)

EXAMPLES = "tuned_examples/long2short"
L2S_ENV = {"difficulty": 1, "size": 64, "seed": 0}  # = the RL arms' env_config
EVAL_ENV = {"difficulty": 1, "seed": 12345}
SFT_ARGS = ["--epochs", "3", "--lr", "1e-5", "--batch-size", "8"]
DPO_ARGS = ["--beta", "0.1", "--epochs", "1", "--lr", "5e-6", "--batch-size", "4"]

# label -> model directory below runs/long2short/models (the eval plot's order)
METHODS = {
    "long CoT (start)": "long_cot",
    "short CoT (length reward)": "short_cot",
    "merge α=0.5": "merge",
    "shortest RS + SFT": "shortest_rs_sft",
    "DPO": "dpo",
    "long2short RL": "l2s_rl",
    "O1-Pruner": "o1_pruner",
}


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(list(cmd), check=True, cwd=ROOT)


def train(config: str, run_dir: Path, iterations: int) -> None:
    """``k15 train`` one run to ``iterations`` (continuing an interrupted one)."""
    train_arm(config, run_dir, iterations, checkpoint_every=3)


def export(run_dir: Path, out: Path) -> None:
    if not (out / "config.json").is_file():
        sh(*K15, "export", str(run_dir / "checkpoint"), str(out), "--dtype", "float32")


def evaluate(label: str, model: Path, out: Path, args: argparse.Namespace) -> None:
    done = {
        (row["label"], row["run"])
        for row in map(json.loads, out.read_text().splitlines() if out.is_file() else [])
    }
    if all((label, r) in done for r in range(args.eval_runs)):
        return
    sh(*K15, "eval", "--model", str(model), "--env", "k15/Arithmetic-v0",
       "--env-kwargs", json.dumps(EVAL_ENV), "--problems", str(args.eval_problems),
       "--samples", str(args.eval_samples), "--runs", str(args.eval_runs),
       "--max-tokens", "256", "--label", label, "--out", str(out), "--no-plot")  # fmt: skip


def run_methods(work: Path, models: Path, short_run: Path) -> None:
    train(f"{EXAMPLES}/long_cot_arithmetic_smollm2.yaml", work / "long_cot", 8)
    export(work / "long_cot", models / "long_cot")
    if not short_run.is_dir():
        train("tuned_examples/k15_arithmetic_smollm2.yaml", short_run, 12)
    export(short_run, models / "short_cot")

    samples, env = work / "long_cot_samples.parquet", json.dumps(L2S_ENV)
    if not (work / "o1_reference.json").is_file():
        sh(*K15, "long2short", "o1-reference", "--model", str(models / "long_cot"),
           "--env", "k15/Arithmetic-v0", "--env-kwargs", env, "--samples", "8",
           "--max-tokens", "256", "--seed", "0", "--save-samples", str(samples),
           "--out", str(work / "o1_reference.json"))  # fmt: skip
    for command, out in (("shortest-rs", "shortest_rs.parquet"), ("dpo-pairs", "pairs.parquet")):
        if not (work / out).is_file():
            sh(*K15, "long2short", command, "--from-samples", str(samples),
               "--out", str(work / out))  # fmt: skip

    if not (models / "merge" / "config.json").is_file():
        sh(*K15, "long2short", "merge", str(models / "long_cot"), str(models / "short_cot"),
           "--out", str(models / "merge"), "--alpha", "0.5")  # fmt: skip
    if not (models / "shortest_rs_sft" / "config.json").is_file():
        sh(
            *K15,
            "sft",
            "--model",
            str(models / "long_cot"),
            "--data",
            str(work / "shortest_rs.parquet"),
            "--out",
            str(models / "shortest_rs_sft"),
            *SFT_ARGS,
        )
    if not (models / "dpo" / "config.json").is_file():
        sh(
            *K15,
            "dpo",
            "--model",
            str(models / "long_cot"),
            "--pairs",
            str(work / "pairs.parquet"),
            "--out",
            str(models / "dpo"),
            *DPO_ARGS,
        )
    for name, config in (("l2s_rl", "long2short_rl"), ("o1_pruner", "o1_pruner")):
        train(f"{EXAMPLES}/{config}_arithmetic_smollm2.yaml", work / name, 6)
        export(work / name, models / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/long2short", help="runs, data and models")
    parser.add_argument(
        "--short-run",
        default="runs/ablations/opmd_seed0",
        help="k15 train run of the short-CoT model (trained when missing)",
    )
    parser.add_argument("--out", default="docs/results/long2short")
    parser.add_argument("--eval-problems", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--eval-runs", type=int, default=2, help="seeds 0..R-1")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)

    work, out = ROOT / args.work, ROOT / args.out
    models = work / "models"
    out.mkdir(parents=True, exist_ok=True)
    results = out / "eval_level1.jsonl"
    if not args.plot_only:
        run_methods(work, models, ROOT / args.short_run)
        for label, name in METHODS.items():
            evaluate(label, models / name, results, args)
    sh(*K15, "plot", "token-efficiency", str(results), "--out", str(out / "token_efficiency.png"),
       "--title", "long2short on SmolLM2-135M, held-out 1-digit addition",
       "--table", str(out / "table.md"))  # fmt: skip
    versus = ROOT / "docs" / "results" / "o1_pruner_vs_long2short_rl"
    versus.mkdir(parents=True, exist_ok=True)
    arms = {"long CoT (start)", "long2short RL", "O1-Pruner"}  # accuracy vs tokens, 3 models
    rows = [line for line in results.read_text().splitlines() if json.loads(line)["label"] in arms]
    (versus / "eval_level1.jsonl").write_text("\n".join(rows) + "\n")
    sh(*K15, "plot", "token-efficiency", str(versus / "eval_level1.jsonl"),
       "--out", str(versus / "token_efficiency.png"),
       "--table", str(versus / "token_efficiency.md"),
       "--title", "O1-Pruner vs long2short RL, held-out 1-digit addition")  # fmt: skip
    sh(*K15, "plot", "runs", f"long2short RL={work / 'l2s_rl' / 'metrics.jsonl'}",
       f"O1-Pruner={work / 'o1_pruner' / 'metrics.jsonl'}", "--out", str(versus / "comparison.png"),
       "--title", "O1-Pruner vs long2short RL from the same long-CoT start",
       "--table", str(versus / "table.md"), "--until", "6")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
