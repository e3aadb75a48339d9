"""Run the report's ablations at CPU scale and write their figure and table.

Each experiment is a few arms — the same budget, one setting changed — trained with
``k15 train`` on the embedded SmolLM2-135M-Instruct, then drawn side by side with
``k15 plot runs`` into ``docs/results/<experiment>/`` (``comparison.png``, ``table.md``)::

    python experiments/ablation.py opmd_vs_grpo              # trains the missing arms, plots
    python experiments/ablation.py opmd_vs_rest --seeds 0 1  # more seeds: mean ± std bands
    python experiments/ablation.py curriculum_vs_uniform --plot-only
    python experiments/ablation.py opmd_vs_grpo \
        --reuse OPMD=docs/results/k15_arithmetic_smollm2/metrics.jsonl
    python experiments/ablation.py opmd_vs_rest_splits --seeds 0 1 2 \
        --reuse OPMD=docs/results/addition_curriculum/seed0_metrics.jsonl,...seed1...,...seed2...

Arms run one after another (two training processes on one small machine slow each other
down far more than 2×). A finished arm (its metrics reach the iteration budget) is not run
again; an interrupted one is continued with ``k15 train --resume``. ``--reuse LABEL=FILE``
takes an arm's metrics from an earlier run of the same config instead of training it; a
comma-separated list gives one file per seed, in the order of ``--seeds`` (seeds are paired in
that order).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K15 = [sys.executable, "-m", "rllib_k15"]


@dataclass(frozen=True)
class Experiment:
    title: str
    arms: dict[str, str]  # label -> experiment file (relative to the repository)
    iterations: int
    mark_iteration: float | None = None
    mark_label: str = ""
    vs_length: bool = False  # also draw Pass@1 vs tokens (accuracy_vs_length.png)
    notes: list[str] = field(default_factory=list)


TUNED = "tuned_examples/k15_arithmetic_smollm2.yaml"
EXPERIMENTS = {
    "opmd_vs_grpo": Experiment(
        "OPMD vs GRPO, SmolLM2-135M, 1-digit addition (4 problems × 8 samples per iteration)",
        {"OPMD": TUNED, "GRPO": "tuned_examples/grpo_arithmetic_smollm2.yaml"},
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "opmd_vs_rest": Experiment(
        "OPMD vs ReST at equal samples, SmolLM2-135M, 1-digit addition",
        {"OPMD": TUNED, "ReST": "tuned_examples/rest_arithmetic_smollm2.yaml"},
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "curriculum_vs_uniform": Experiment(
        "Curriculum vs uniform sampling, 1+2-digit addition, held-out 2-digit Pass@1",
        {
            "curriculum": "tuned_examples/ablations/curriculum_arithmetic_smollm2.yaml",
            "uniform": "tuned_examples/ablations/uniform_arithmetic_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=6.5,
        mark_label="curriculum: hard problems only",
    ),
    "addition_curriculum": Experiment(
        "OPMD + curriculum, 1+2-digit addition, SmolLM2-135M, test split of 2-digit addition",
        {"OPMD-curriculum": "tuned_examples/addition_curriculum_smollm2.yaml"},
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "opmd_vs_rest_splits": Experiment(
        "OPMD vs ReST, 1+2-digit addition with curriculum, test split of 2-digit addition",
        {
            "OPMD": "tuned_examples/addition_curriculum_smollm2.yaml",
            "ReST": "tuned_examples/ablations/rest_addition_curriculum_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on; curriculum: hard only",
    ),
    "curriculum_vs_uniform_splits": Experiment(
        "Curriculum vs uniform, 1+2-digit addition, test split of 2-digit addition",
        {
            "curriculum": "tuned_examples/addition_curriculum_smollm2.yaml",
            "uniform": "tuned_examples/ablations/uniform_addition_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=6.5,
        mark_label="curriculum: hard problems only",
    ),
    "response_budget": Experiment(
        "Response budget 64 / 128 / 256 tokens, 1+2-digit addition, test split of 2-digit",
        {
            "64 tokens": "tuned_examples/ablations/budget64_addition_smollm2.yaml",
            "128 tokens": "tuned_examples/addition_curriculum_smollm2.yaml",
            "256 tokens": "tuned_examples/ablations/budget256_addition_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
        vs_length=True,
    ),
    "warm_start": Experiment(
        "RL from the base vs from the long-CoT warm-up, test split of 2-digit addition",
        {
            "base": "tuned_examples/addition_curriculum_smollm2.yaml",
            "warm-started": "tuned_examples/ablations/warmstart_addition_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "dynamic_sampling": Experiment(
        "OPMD with and without DAPO dynamic sampling, test split of 2-digit addition",
        {
            "OPMD": "tuned_examples/addition_curriculum_smollm2.yaml",
            "dynamic sampling": "tuned_examples/ablations/dynamic_addition_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "training_options": Experiment(
        "AdamW vs Muon vs LoRA at equal budget, SmolLM2-135M, 1-digit addition, test split",
        {
            "AdamW": "tuned_examples/ablations/options_adamw_smollm2.yaml",
            "Muon": "tuned_examples/ablations/options_muon_smollm2.yaml",
            "LoRA r16": "tuned_examples/ablations/options_lora_smollm2.yaml",
        },
        iterations=6,
    ),
    "overlong": Experiment(
        "Kimi length reward alone vs + DAPO overlong handling, 64-token budget, test split",
        {
            "length reward": "tuned_examples/ablations/budget64_addition_smollm2.yaml",
            "DAPO overlong": "tuned_examples/ablations/overlong_budget64_addition_smollm2.yaml",
        },
        iterations=12,
        mark_iteration=5.5,
        mark_label="length reward on",
    ),
    "muon_update_rms": Experiment(
        "AdamW vs Muon with step RMS 1.0 x lr, SmolLM2-135M, 1-digit addition, test split",
        {
            "AdamW": "tuned_examples/ablations/options_adamw_smollm2.yaml",
            "Muon RMS 1.0": "tuned_examples/ablations/options_muon_rms1_smollm2.yaml",
        },
        iterations=6,
    ),
}


def finished_iterations(metrics: Path) -> int:
    """The last iteration a run's ``metrics.jsonl`` records (0 when there is none)."""
    from rllib_k15.runs.run_files import read_metrics  # a torn last line is skipped

    return max((int(r.get("iteration", 0)) for r in read_metrics(metrics)), default=0)


def train_arm(config: str, run_dir: Path, iterations: int, checkpoint_every: int = 4) -> None:
    """Train one arm to ``iterations``, continuing an interrupted run of it."""
    done = finished_iterations(run_dir / "metrics.jsonl")
    if done >= iterations:
        print(f"{run_dir}: already at iteration {done}")
        return
    if (run_dir / "run.json").is_file():
        cmd = [*K15, "train", "--resume", str(run_dir), "--iterations", str(iterations)]
    else:
        cmd = [*K15, "train", "--config", str(ROOT / config), "--out", str(run_dir),
               "--iterations", str(iterations),
               "--checkpoint-every", str(checkpoint_every)]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="debugging.seed")
    parser.add_argument("--runs", default="runs/ablations", help="where the arms' runs go")
    parser.add_argument("--out", help="figure/table directory (docs/results/<experiment>)")
    parser.add_argument("--reuse", action="append", default=[], metavar="LABEL=METRICS")
    parser.add_argument("--plot-only", action="store_true", help="do not train; plot what exists")
    args = parser.parse_args(argv)

    exp = EXPERIMENTS[args.experiment]
    reused = {label: files.split(",") for label, files in (s.split("=", 1) for s in args.reuse)}
    unknown = set(reused) - set(exp.arms)
    if unknown:
        parser.error(f"--reuse label(s) {sorted(unknown)} not arms of {args.experiment}")
    for label, files in reused.items():
        if len(files) > 1 and len(files) != len(args.seeds):
            parser.error(f"--reuse {label}: {len(files)} files for {len(args.seeds)} seeds")
    specs = []
    for label, config in exp.arms.items():
        if label in reused:
            specs += [f"{label}={path}" for path in reused[label]]
            continue
        for seed in args.seeds:
            run_dir = ROOT / args.runs / f"{label.lower().replace(' ', '_')}_seed{seed}"
            if not args.plot_only:
                # a seed's config: the arm's file with debugging.seed replaced
                seeded = config if seed == 0 else _with_seed(config, seed, run_dir.parent)
                train_arm(seeded, run_dir, exp.iterations)
            specs.append(f"{label}={run_dir / 'metrics.jsonl'}")
    out = Path(args.out or ROOT / "docs" / "results" / args.experiment)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [*K15, "plot", "runs", *specs, "--out", str(out / "comparison.png"),
           "--title", exp.title, "--table", str(out / "table.md"),
           "--until", str(exp.iterations)]  # fmt: skip
    if exp.vs_length:
        cmd += ["--vs-length", str(out / "accuracy_vs_length.png")]
    if exp.mark_iteration is not None:
        cmd += ["--mark-iteration", str(exp.mark_iteration), "--mark-label", exp.mark_label]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def _with_seed(config: str, seed: int, where: Path) -> str:
    """A copy of experiment file ``config`` with ``debugging.seed`` = ``seed``."""
    from omegaconf import OmegaConf

    spec = OmegaConf.load(ROOT / config)
    spec.debugging = {**(spec.get("debugging") or {}), "seed": seed}
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{Path(config).stem}_seed{seed}.yaml"
    OmegaConf.save(spec, path)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
