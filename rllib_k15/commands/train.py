"""``k15 train``: train K15MirrorDescent in-process from an experiment file.

    k15 train --config tuned_examples/quickstart_smollm2.yaml [--iterations 8] [--out DIR]

Shows a live progress table, writes ``metrics.jsonl``, ``learning_curve.png`` and a final
RLlib checkpoint. For Tune features (sweeps, checkpoint frequency) use ``rllib train``.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train K15MirrorDescent from an experiment file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="experiment YAML (builder sections + stop)")
    p.add_argument("--iterations", type=int, help="override stop.training_iteration")
    p.add_argument("--out", default="runs/k15", help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rllib_k15.experiment import apply_sections, load_experiment_file
    from rllib_k15.training_run import run_training

    from rllib_k15.algorithm.config import K15Config

    try:  # bad input fails here, before Ray or an engine starts, naming file/section/field
        spec = load_experiment_file(args.config)
        config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
        config.validate()
    except (ValueError, FileNotFoundError) as err:
        print(f"k15 train: {err}", file=sys.stderr)
        return 2
    iterations = args.iterations or int(spec["stop"].get("training_iteration", 10))
    run_training(config, iterations, args.out)
    return 0
