"""The ``rllib`` command (Ray 2.60 ships none): ``rllib train`` and ``rllib evaluate``.

Flags follow RLlib's former CLI::

    rllib train --algo K15MirrorDescent --env k15/Arithmetic-v0 \\
        --config tuned_examples/k15_arithmetic_smollm2.yaml --stop '{"training_iteration": 20}'
    rllib train -f tuned_examples/k15_arithmetic_smollm2.yaml      # experiment file
    rllib train --algo PPO --env CartPole-v1 --stop '{"training_iteration": 2}'
    rllib train --resume ~/ray_results/<exp> [--algo K15MirrorDescent]   # after a crash
    rllib evaluate ~/ray_results/<exp>/<trial>/checkpoint_000001 --problems 64 --samples 4

``train`` runs through Ray Tune (checkpoints, stop criteria, storage path), so results land
where Tune users expect them. ``--config`` takes a JSON string, a JSON file or a YAML file,
either flat (RLlib's ``update_from_dict`` keys) or in builder sections (see
:mod:`rllib_k15.runs.experiment`). Unknown algorithms are looked up in RLlib's registry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rllib_k15.runs.experiment import apply_sections, load_experiment_file, resolve_algorithm


def _parse_json_arg(flag: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(
            f"error: {flag} is not valid JSON ({err.msg} at char {err.pos}): {text!r}"
        ) from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {flag} must be a JSON object, got {text!r}")
    return value


def build_config_from_args(args: argparse.Namespace):
    """Algorithm class, config and stop criteria from -f / --algo / --config / --stop."""
    sections: dict[str, dict] = {}
    flat: dict[str, Any] = {}
    stop: dict[str, Any] = {}
    algo_name = args.algo
    sources = []
    args.run_settings = {}  # `run:` section of the experiment file(s)
    if args.file:
        spec = load_experiment_file(args.file)
        sections, stop, algo_name = spec["sections"], spec["stop"], algo_name or spec["algo"]
        args.run_settings.update(spec["run"])
        sources.append(spec["source"])
    if args.config:
        if Path(args.config).is_file():
            spec = load_experiment_file(args.config)
            for name, values in spec["sections"].items():
                sections.setdefault(name, {}).update(values)
            stop = {**stop, **spec["stop"]}
            args.run_settings.update(spec["run"])
            algo_name = algo_name or spec["algo"]
            sources.append(spec["source"])
        else:
            payload = _parse_json_arg("--config", args.config)
            if all(isinstance(v, dict) for v in payload.values()) and payload:
                for name, values in payload.items():
                    sections.setdefault(name, {}).update(values)
            else:
                flat = payload
    if getattr(args, "overrides", None):  # --set: deep-merged, checked like a file
        from rllib_k15.commands.train import load_experiment

        spec, _ = load_experiment(None, args.overrides)
        for name, values in spec["sections"].items():
            sections[name] = _deep_merge(sections.get(name, {}), values)
        stop = _deep_merge(stop, spec["stop"])
        args.run_settings.update(spec["run"])
        algo_name = spec["algo"] or algo_name
        sources.append(spec["source"])
    if not algo_name:
        raise SystemExit("error: --algo is required (or an `algo:` key in the -f/--config file)")
    algo_cls = resolve_algorithm(algo_name)
    config = algo_cls.get_default_config()
    apply_sections(config, sections, source=", ".join(sources) or "--config")
    if flat:
        unknown = [k for k in flat if not hasattr(config, k)]
        if unknown:
            raise SystemExit(f"error: --config has unknown field(s) {unknown} for {algo_name}")
        config.update_from_dict(flat)
    if args.env:
        config.environment(args.env)
    if args.stop:
        stop = {**stop, **_parse_json_arg("--stop", args.stop)}
    return algo_cls, config, stop or {"training_iteration": 1}


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resume(args: argparse.Namespace):
    """Tuner of the experiment in ``args.resume``: unfinished and errored trials continue from
    their latest checkpoint (Tune's own experiment state; see docs/operating_long_runs.md)."""
    from ray import tune

    path = Path(args.resume).expanduser().resolve()
    if not tune.Tuner.can_restore(str(path)):
        raise FileNotFoundError(f"--resume: {str(path)!r} is not a Tune experiment directory")
    algo_cls = resolve_algorithm(args.algo or "K15MirrorDescent")
    return tune.Tuner.restore(str(path), trainable=algo_cls, resume_errored=True)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        return _report(_resume(args).fit())
    algo_cls, config, stop = build_config_from_args(args)
    config.validate()  # fail before Ray starts, with the offending field named
    if getattr(config, "env", None) and hasattr(config, "eval_env_config"):
        from rllib_k15.runs.trainer import preflight

        preflight(config)  # env id, env_config, dataset files
    if hasattr(config, "problems_per_iteration"):  # K15MirrorDescent: what it will cost
        from rllib_k15.runs.trainer import budget_line

        print(budget_line(config, stop.get("training_iteration"), stop), flush=True)
    from ray import tune

    every = args.checkpoint_freq
    if every is None:
        every = args.run_settings.get("checkpoint_every", 0)
    keep = args.keep_checkpoints
    if keep is None:
        keep = args.run_settings.get("keep_checkpoints")
    run_config = tune.RunConfig(
        name=args.name,
        stop=stop,
        storage_path=str(Path(args.storage_path).expanduser().resolve())
        if args.storage_path
        else None,
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_frequency=every,
            checkpoint_at_end=args.checkpoint_at_end,
            num_to_keep=keep,
        ),
        verbose=1,
    )
    tuner = tune.Tuner(algo_cls, param_space=config, run_config=run_config)
    return _report(tuner.fit())


def _report(results) -> int:
    errors = [r.error for r in results if r.error]
    for result in results:
        print(
            f"trial finished: iterations={result.metrics.get('training_iteration')} "
            f"checkpoint={result.checkpoint.path if result.checkpoint else None}"
        )
    return 1 if errors else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ray.rllib.algorithms.algorithm import Algorithm

    algo = Algorithm.from_checkpoint(str(Path(args.checkpoint).expanduser().resolve()))
    try:
        if not hasattr(algo, "evaluate_held_out"):
            print(json.dumps(algo.evaluate(), default=str, indent=2))
            return 0
        algo.config._is_frozen = False
        algo.config.eval_problems = args.problems
        algo.config.eval_samples = args.samples
        result = algo.evaluate_held_out()
        print(json.dumps(result, indent=2))
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps({"checkpoint": args.checkpoint, **result}) + "\n")
    finally:
        algo.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rllib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an algorithm through Ray Tune")
    train.add_argument(
        "--algo", "--run", dest="algo", help="K15MirrorDescent or an RLlib algorithm (PPO, …)"
    )
    train.add_argument("--env", help="environment id, e.g. k15/Arithmetic-v0")
    train.add_argument("--config", help="JSON string, JSON file or YAML file with config fields")
    train.add_argument(
        "-f",
        "--config-file",
        dest="file",
        help="experiment file (YAML) with builder sections and stop",
    )
    train.add_argument("--stop", help="stop criteria as JSON, e.g. '{\"training_iteration\": 20}'")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one field (repeatable; value read as YAML; applied after -f and "
        "--config, checked like a file), e.g. --set training.max_response_tokens=64",
    )
    train.add_argument(
        "--checkpoint-freq",
        type=int,
        default=None,
        help="checkpoint every N iterations (0 = off; default: `run.checkpoint_every` or 0)",
    )
    train.add_argument(
        "--checkpoint-at-end", action="store_true", help="checkpoint when the trial ends"
    )
    train.add_argument(
        "--keep-checkpoints",
        type=int,
        default=None,
        help="keep only the N newest checkpoints (default: `run.keep_checkpoints` or all)",
    )
    train.add_argument(
        "--resume",
        metavar="EXPERIMENT_DIR",
        help="continue a stopped/crashed `rllib train` experiment (Tuner.restore)",
    )
    train.add_argument("--storage-path", help="where Tune writes results (default ~/ray_results)")
    train.add_argument("--name", help="experiment name")
    train.set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="held-out Pass@1 of a checkpoint")
    ev.add_argument("checkpoint")
    ev.add_argument("--problems", type=int, default=64)
    ev.add_argument("--samples", type=int, default=4)
    ev.add_argument("--out", help="append the result as a JSON line to this file")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
