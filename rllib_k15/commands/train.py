"""``k15 train``: train K15MirrorDescent in-process from an experiment file.

    k15 train --config tuned_examples/quickstart_smollm2.yaml [--iterations 8] [--out DIR]
              [--set SECTION.FIELD=VALUE ...] [--checkpoint-every N] [--keep-checkpoints K]
    k15 train --resume DIR [--iterations 20]      # continue a stopped or killed run

Shows a live progress table, writes ``metrics.jsonl``, ``learning_curve.png`` and atomic,
rotated checkpoints (``DIR/checkpoints``, ``DIR/checkpoint`` -> the latest). ``--resume``
continues from the latest checkpoint with the run's own copy of the experiment file (see
docs/operating_long_runs.md). For Tune features (sweeps, schedulers) use ``rllib train``.

Run directories: without ``--out`` a run goes to ``runs/k15``; when that already holds a
run, the new one goes to a fresh ``runs/k15-YYYYMMDD-HHMMSS`` instead (a line says so and
how to resume the earlier one: ``k15 train --resume runs/k15``). An explicit ``--out``
that holds a run is refused, never overwritten. ``runs/latest`` points at the run started
(or resumed) last among those in ``runs/``.

``--set`` overrides one field of the experiment file, in OmegaConf dot-list syntax (the
value is read as YAML), and may be repeated; overrides are checked as strictly as the
file and saved in the run's ``experiment.yaml``::

    k15 train --config tuned_examples/quickstart_smollm2.yaml \\
        --set training.hf_model=tiny-random-llama --set stop.training_iteration=1 \\
        --set 'training.engine_options={kv_cache_gib: 0.25}'

Console: the progress table, this command's own lines (the iteration budget, the
precision decision) and errors. vLLM's, Ray's and transformers' log output goes to
``DIR/engine.log``; ``k15 train -v`` (or ``k15 -v train``) also shows it in the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULTS = {"checkpoint_every": 1, "keep_checkpoints": 2}
DEFAULT_OUT = Path("runs/k15")
LATEST_LINK = "latest"  # runs/latest -> the run started or resumed last in runs/


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
    p.add_argument(
        "--out",
        help=f"output directory of a new run (default: {DEFAULT_OUT}, or a fresh "
        f"{DEFAULT_OUT}-YYYYMMDD-HHMMSS when {DEFAULT_OUT} holds a run; an explicit --out "
        "that holds a run is an error)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a field of the experiment file (repeatable; value read as YAML), "
        "e.g. --set training.hf_model=tiny-random-llama --set stop.training_iteration=1",
    )
    p.add_argument(
        "--checkpoint-every", type=int, help="checkpoint every N iterations (default: 1)"
    )
    p.add_argument(
        "--keep-checkpoints", type=int, help="keep the newest K checkpoints (default: 2)"
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard with the local Ray (off by default: ~0.5 GB on a small "
        "machine; a cluster joined through RAY_ADDRESS keeps its own)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,  # do not reset `k15 -v train`
        help="also show vLLM's, Ray's and transformers' logs in the terminal (-vv: debug)",
    )
    p.set_defaults(func=run)


def _first_set(*values):
    return next(v for v in values if v is not None)


# ---------------------------------------------------------------------- --set overrides
def parse_overrides(items: list[str]) -> list[str]:
    """Check ``SECTION.FIELD=VALUE`` items; returns them unchanged (OmegaConf dot-list)."""
    from rllib_k15.runs.experiment import BUILDER_SECTIONS, OTHER_KEYS

    for item in items:
        key, eq, _ = item.partition("=")
        parts = key.split(".")
        if not eq or not key or not all(parts):
            raise ValueError(
                f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set training.tau=0.2"
            )
        if parts[0] not in BUILDER_SECTIONS + OTHER_KEYS:
            raise ValueError(
                f"--set {item!r}: unknown section {parts[0]!r}; expected one of "
                f"{list(BUILDER_SECTIONS + OTHER_KEYS)}"
            )
        if len(parts) == 1 and parts[0] not in ("algo", "name"):
            raise ValueError(
                f"--set {item!r}: name a field of `{parts[0]}`, e.g. --set {parts[0]}.FIELD=VALUE"
            )
    return items


def load_experiment(path: str | os.PathLike[str] | None, overrides: list[str]) -> tuple:
    """``(spec, text)``: the experiment file at ``path`` (None: an empty one) with the
    ``--set`` overrides merged in, checked by :func:`rllib_k15.runs.experiment.load_experiment_file`
    (errors name the file and the overrides), and the YAML text of the merged experiment
    (the file itself, byte for byte, when there are no overrides)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rllib_k15.runs.experiment import load_experiment_file

    if path is not None and not overrides:
        return load_experiment_file(path), Path(path).read_text()
    parse_overrides(overrides)
    base = OmegaConf.create({})
    if path is not None:
        load_experiment_file(path)  # the file alone first: its errors name its lines
        base = OmegaConf.load(path)
    label = f"{path if path is not None else '<no file>'} with --set {' '.join(overrides)}"
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
        text = OmegaConf.to_yaml(merged)
    except OmegaConfBaseException as err:
        raise ValueError(f"{label}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="k15-set-") as tmp:
        merged_path = Path(tmp) / "experiment.yaml"
        merged_path.write_text(text)
        try:
            spec = load_experiment_file(merged_path)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(str(err).replace(str(merged_path), label)) from None
    spec["source"] = label
    header = f"# {path if path is not None else 'no file'}, with: --set " + " --set ".join(
        overrides
    )
    return spec, header + "\n" + text


# ---------------------------------------------------------------------- run directories
def _earlier_run(out: Path) -> list[str]:
    from rllib_k15.runs.run_files import CHECKPOINTS_DIR, METRICS_FILE, RUN_INFO_FILE

    return [n for n in (RUN_INFO_FILE, METRICS_FILE, CHECKPOINTS_DIR) if (out / n).exists()]


def claim_fresh_run_dir(base: Path, now: float | None = None) -> Path:
    """Create and return ``<base>-YYYYMMDD-HHMMSS`` (``-2``, ``-3``, ... when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for n in range(1, 1000):
        candidate = base.with_name(f"{base.name}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run directory name {base}-{stamp}-N")


def point_latest(run_dir: Path) -> Path | None:
    """Re-point ``runs/latest`` at ``run_dir`` when it lives in ``runs/`` (atomically: a
    fresh relative symlink renamed over the old one). A ``latest`` that is not a symlink
    is left alone. Returns the link, or None."""
    parent = run_dir.parent
    if run_dir.name == LATEST_LINK or parent.resolve() != DEFAULT_OUT.parent.resolve():
        return None
    link = parent / LATEST_LINK
    if link.exists() and not link.is_symlink():
        return None
    tmp = parent / f".{LATEST_LINK}.tmp-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:  # e.g. a filesystem without symlinks: the link is a convenience
        tmp.unlink(missing_ok=True)
        return None
    return link


def _resolve_run_link(path: Path) -> Path:
    """``runs/latest`` -> ``runs/k15-...`` (messages and ``latest`` name the real run)."""
    if path.is_symlink():
        target = Path(os.readlink(path))
        return target if target.is_absolute() else path.parent / target
    return path


# ---------------------------------------------------------------------- preparing a run
def _prepare(args: argparse.Namespace) -> tuple:
    """Config, target iterations, checkpoint settings, run dir, run info, the experiment
    text and whether the default run dir was taken (the run then gets a fresh one);
    raises ValueError / FileNotFoundError naming the file, section or field on bad input."""
    from rllib_k15.algorithm.config import K15Config
    from rllib_k15.engine.logging import refresh
    from rllib_k15.runs.experiment import apply_sections
    from rllib_k15.runs.run_files import read_run_info
    from rllib_k15.runs.trainer import preflight

    refresh()  # RLlib's loggers exist now: its config warnings go to engine.log

    redirect = False
    if args.resume:
        if args.overrides:
            raise ValueError(
                f"--set applies to new runs; a resumed run continues with "
                f"{Path(args.resume) / 'experiment.yaml'} (edit that file to change it)"
            )
        out = _resolve_run_link(Path(args.resume))
        info = read_run_info(out)
        spec, text = load_experiment(out / info.get("experiment", "experiment.yaml"), [])
        source = info.get("source", spec["source"])
    else:
        out, info = Path(args.out) if args.out else DEFAULT_OUT, {}
        earlier = _earlier_run(out)
        if earlier and args.out:
            raise ValueError(
                f"{out} holds an earlier run ({', '.join(earlier)}); continue it with "
                f"`k15 train --resume {out}` or choose another --out"
            )
        redirect = bool(earlier)
        spec, text = load_experiment(args.config, args.overrides)
        source = spec["source"]
    config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
    _absolute_model_dir(config)
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
        **info,  # a resumed run keeps what its run.json recorded (overrides, precision)
        "experiment": "experiment.yaml",
        "source": str(source),
        "iterations": iterations,
        **settings,
        "started_at": info.get("started_at", time.time()),
        "resumed_at": info.get("resumed_at", []) + ([time.time()] if args.resume else []),
    }
    if args.overrides:
        info["overrides"] = list(args.overrides)
    return config, iterations, settings, out, info, text, redirect


def _absolute_model_dir(config: Any) -> None:
    """A relative ``hf_model`` directory (``runs/warmup/model``) made absolute, so Ray's
    EnvRunner and learner processes, whatever their working directory, load the same one."""
    model = Path(str(config.hf_model)).expanduser()
    if not model.is_absolute() and (model / "config.json").is_file():
        config.hf_model = str(model.resolve())


def run(args: argparse.Namespace) -> int:
    from rllib_k15.engine.logging import LibraryLogs, init_ray
    from rllib_k15.runs.run_files import write_run_info
    from rllib_k15.runs.trainer import budget_line, precision_report

    verbose = getattr(args, "verbose", 0) or 0
    with LibraryLogs(verbose) as logs:  # library logs: buffered, then DIR/engine.log
        try:  # bad input fails here, before Ray or an engine starts, naming file/section/field
            config, iterations, settings, out, info, text, redirect = _prepare(args)
        except (ValueError, FileNotFoundError) as err:
            print(f"k15 train: {err}", file=sys.stderr)
            return 2
        if redirect:
            earlier, out = out, claim_fresh_run_dir(out)
            print(
                f"{earlier} holds an earlier run, so this run writes to {out} "
                f"(continue the earlier one with `k15 train --resume {earlier}`)"
            )
        elif not args.resume:
            out.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            (out / "experiment.yaml").write_text(text)
        print(budget_line(config, iterations))
        line, record = precision_report(config)
        print(line)
        earlier_dtype = (info.get("precision") or {}).get("dtype")
        if args.resume and earlier_dtype and earlier_dtype != record.get("dtype"):
            print(
                f"note: this run ran in {earlier_dtype} before and continues in "
                f"{record.get('dtype')} on this machine"
            )
        info["precision"] = record  # of the latest start (resumes overwrite it)
        write_run_info(out, info)
        point_latest(out)
        log_file = logs.to_file(out)
        if not verbose:
            print(f"engine/Ray logs: {out / log_file.name} (`k15 train -v` shows them here)")
        init_ray(verbose, dashboard=bool(getattr(args, "dashboard", False)))
        from rllib_k15.runs import trainer  # looked up now: tests replace run_training

        trainer.run_training(config, iterations, out, resume=bool(args.resume), **settings)
    return 0
