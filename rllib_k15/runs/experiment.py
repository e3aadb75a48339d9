"""Experiment files: YAML/JSON that map 1:1 onto the AlgorithmConfig builder.

A file has builder sections, each the keyword arguments of the builder method of the same
name, plus an optional ``stop`` dict and ``algo`` name::

    algo: K15MirrorDescent
    environment: {env: k15/Arithmetic-v0, env_config: {difficulty: 1}}
    training: {tau: 0.1, samples_per_problem: 8}
    env_runners: {num_env_runners: 0}
    debugging: {seed: 0}
    stop: {training_iteration: 20}
    run: {checkpoint_every: 5, keep_checkpoints: 3}   # optional, see RUN_FIELDS

Loading is strict: an unknown section or field fails before any work starts, naming the
file, the section and the field. Files are read with OmegaConf (YAML, so JSON works too).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

__all__ = ["ExperimentSpec", "apply_sections", "load_experiment_file", "resolve_algorithm"]

BUILDER_SECTIONS = (
    "environment",
    "training",
    "env_runners",
    "learners",
    "rl_module",
    "debugging",
    "resources",
    "framework",
    "evaluation",
    "reporting",
    "checkpointing",
    "fault_tolerance",
    "api_stack",
    "callbacks",
)
OTHER_KEYS = ("algo", "stop", "name", "run")
# `run:` section: how a run is operated, not what is trained (docs/operating_long_runs.md)
RUN_FIELDS = {
    "checkpoint_every": "save a checkpoint every N iterations (and after the last one)",
    "keep_checkpoints": "keep the newest N checkpoints, delete older ones",
}


class ExperimentSpec(dict):
    """Parsed experiment file: ``sections`` (builder kwargs), ``stop``, ``algo``, ``run``,
    ``source``."""


def load_experiment_file(path: str | Path) -> ExperimentSpec:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path}: {where}not valid YAML/JSON: {problem}") from None
    except OmegaConfBaseException as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: expected a mapping of builder sections, got {type(raw).__name__}"
        )
    unknown = [k for k in raw if k not in BUILDER_SECTIONS + OTHER_KEYS]
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key(s) {unknown}; expected builder sections "
            f"{list(BUILDER_SECTIONS)} or {list(OTHER_KEYS)}"
        )
    sections = {k: v for k, v in raw.items() if k in BUILDER_SECTIONS}
    for name, values in sections.items():
        if not isinstance(values, dict):
            raise ValueError(f"{path}: section `{name}` must be a mapping, got {values!r}")
    stop = raw.get("stop") or {}
    if not isinstance(stop, dict):
        raise ValueError(
            f"{path}: `stop` must be a mapping like {{training_iteration: 20}}, got {stop!r}"
        )
    run = raw.get("run") or {}
    if not isinstance(run, dict):
        raise ValueError(
            f"{path}: `run` must be a mapping like {{checkpoint_every: 5}}, got {run!r}"
        )
    for key, value in run.items():
        if key not in RUN_FIELDS:
            raise ValueError(f"{path}: unknown field {key!r} in `run`; known: {list(RUN_FIELDS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{path}: `run.{key}` ({value!r}) must be an integer >= 1")
    return ExperimentSpec(
        sections=sections, stop=stop, algo=raw.get("algo"), run=run, source=str(path)
    )


def apply_sections(config: Any, sections: dict[str, dict], source: str = "<config>") -> Any:
    """Call ``config.<section>(**values)`` for each section, with strict field checking."""
    for section, values in sections.items():
        method = getattr(config, section, None)
        if method is None or not callable(method):
            raise ValueError(
                f"{source}: {type(config).__name__} has no builder section `{section}`"
            )
        allowed = _allowed_kwargs(config, section, method)
        bad = [k for k in values if allowed is not None and k not in allowed]
        if bad:
            raise ValueError(
                f"{source}: unknown field(s) {bad} in section `{section}` of "
                f"{type(config).__name__}"
            )
        method(**values)
    return config


def _allowed_kwargs(config: Any, section: str, method) -> set[str] | None:
    params = inspect.signature(method).parameters
    names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    if section == "training":
        extra = getattr(config, "extra_training_fields", None)
        fields = set(extra()) if callable(extra) else set()
        base = type(config).__mro__[1].training if fields else None
        if base is not None:
            names |= set(inspect.signature(base).parameters)
        return names | fields
    if any(p.kind is p.VAR_KEYWORD for p in params.values()) and len(names) <= 1:
        return None  # cannot tell; let the builder raise
    return names


def resolve_algorithm(name: str):
    """``K15MirrorDescent`` (this package) or any algorithm of RLlib's registry (e.g. PPO)."""
    if name in ("K15MirrorDescent", "K15", "k15"):
        from rllib_k15.algorithm.algorithm import K15MirrorDescent

        return K15MirrorDescent
    from ray.rllib.algorithms.registry import ALGORITHMS

    if name not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm `algo` ({name!r}); known: K15MirrorDescent, "
            f"{', '.join(sorted(ALGORITHMS))}"
        )
    algo_cls, _ = ALGORITHMS[name]()
    return algo_cls
