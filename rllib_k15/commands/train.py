"""``k15 train``: train K15MirrorDescent in-process from an experiment file.

    k15 train --config tuned_examples/quickstart_smollm2.yaml [--iterations 8] [--out DIR]
              [--checkpoint-every N] [--keep-checkpoints K]
    k15 train --resume DIR [--iterations 20]      # continue a stopped or killed run

Shows a live progress table, writes ``metrics.jsonl``, ``learning_curve.png`` and atomic,
rotated checkpoints (``DIR/checkpoints``, ``DIR/checkpoint`` -> the latest). ``--resume``
continues from the latest checkpoint with the run's own copy of the experiment file (see
docs/operating_long_runs.md). For Tune features (sweeps, schedulers) use ``rllib train``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

DEFAULTS = {"checkpoint_every": 1, "keep_checkpoints": 2}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train K15MirrorDescent from an experiment file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="experiment YAML (builder sections + stop + run)")
    source.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument("--iterations", type=int, help="override stop.training_iteration")
    p.add_argument("--out", default="runs/k15", help="output directory (new runs)")
    p.add_argument(
        "--checkpoint-every", type=int, help="checkpoint every N iterations (default: 1)"
    )
    p.add_argument(
        "--keep-checkpoints", type=int, help="keep the newest K checkpoints (default: 2)"
    )
    p.set_defaults(func=run)


def _first_set(*values):
    return next(v for v in values if v is not None)


def _prepare(args: argparse.Namespace) -> tuple:
    """Config, target iterations, checkpoint settings, run dir and run info; raises
    ValueError / FileNotFoundError naming the file, section or field on bad input."""
    from rllib_k15.algorithm.config import K15Config
    from rllib_k15.checkpointing import read_run_info
    from rllib_k15.experiment import apply_sections, load_experiment_file
    from rllib_k15.training_run import preflight

    if args.resume:
        out = Path(args.resume)
        info = read_run_info(out)
        experiment = out / info.get("experiment", "experiment.yaml")
    else:
        out, info, experiment = Path(args.out), {}, Path(args.config)
        earlier = [n for n in ("run.json", "metrics.jsonl", "checkpoints") if (out / n).exists()]
        if earlier:
            raise ValueError(
                f"{out} holds an earlier run ({', '.join(earlier)}); continue it with "
                f"`k15 train --resume {out}` or choose another --out"
            )
    spec = load_experiment_file(experiment)
    config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
    config.validate()
    settings = {
        key: _first_set(getattr(args, key), info.get(key), spec["run"].get(key), default)
        for key, default in DEFAULTS.items()
    }
    for key, value in settings.items():
        if value < 1:
            raise ValueError(f"`{key}` ({value}) must be an integer >= 1")
    stop_at = spec["stop"].get("training_iteration", 10)
    if not isinstance(stop_at, int) or isinstance(stop_at, bool) or stop_at < 0:
        raise ValueError(
            f"{spec['source']}: `stop.training_iteration` ({stop_at!r}) must be an integer >= 0"
        )
    iterations = _first_set(args.iterations, info.get("iterations"), stop_at)
    preflight(config)  # env id, env_config and dataset files, before Ray or an engine
    info = {
        "experiment": "experiment.yaml",
        "source": str(info.get("source", experiment)),
        "iterations": iterations,
        **settings,
        "started_at": info.get("started_at", time.time()),
        "resumed_at": info.get("resumed_at", []) + ([time.time()] if args.resume else []),
    }
    return config, iterations, settings, out, info, experiment


def run(args: argparse.Namespace) -> int:
    from rllib_k15.checkpointing import write_run_info
    from rllib_k15.training_run import run_training

    try:  # bad input fails here, before Ray or an engine starts, naming file/section/field
        config, iterations, settings, out, info, experiment = _prepare(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"k15 train: {err}", file=sys.stderr)
        return 2
    if not args.resume:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(experiment, out / "experiment.yaml")
    write_run_info(out, info)
    run_training(config, iterations, out, resume=bool(args.resume), **settings)
    return 0
