"""Train on ``split: train``, evaluate on ``split: test`` — by default, for every env that can.

Every k15 env that serves problems takes ``split`` (``k15_envs.splits``: a problem's split is
a hash of its content, so the two are disjoint whatever seeds either side uses). With
``use_splits: true`` (the default) the trainer fills in what the user left out:

    env_config      = {"split": "train", **env_config}
    eval_env_config = {"split": "test", "size": eval_problems, **eval_env_config}

(the held-out env is ``env_config`` updated by ``eval_env_config``, as always; ``size`` only
where the env takes it, so the held-out env generates just the problems it evaluates). An
explicit ``split`` wins, ``split: null`` included (the unsplit env; the held-out set is then
unsplit too). Envs without a ``split`` argument (your own, registered with
``ray.tune.register_env``) are left alone.

When the default split cannot supply the ``size`` asked for (1-digit addition has 100
distinct problems: ~90 train, ~10 test), ``size`` is cut to the split's distinct problems and
the note says so; an explicit ``split`` with a too-large ``size`` still fails with
``SplitError``. Idempotent: the result is its own fixed point (it carries ``split``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SplitConfigs", "env_parameters", "resolve_splits", "eval_split_kwargs"]

SMALL_TEST_SET = 30  # distinct held-out problems below which the note warns


@dataclass
class SplitConfigs:
    """The effective ``env_config`` / ``eval_env_config`` and what changed, for the log."""

    env_config: dict[str, Any]
    eval_env_config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def env_parameters(env_id: str) -> set[str] | None:
    """The keyword arguments a gymnasium-registered env's class takes; None when unknown
    (an id registered with ``ray.tune.register_env``, or a factory without a signature)."""
    import sys

    import gymnasium as gym
    import k15_envs  # noqa: F401  (registers the k15/* ids)

    if sys.modules.get("ray") is not None:
        from ray.tune.registry import ENV_CREATOR, _global_registry

        if _global_registry.contains(ENV_CREATOR, env_id):
            return None
    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(__import__(module, fromlist=[name]), name)
    try:
        params = inspect.signature(entry).parameters
    except (TypeError, ValueError):
        return None
    return set(params)


def _fit_size(
    env_id: str, env_config: dict[str, Any], what: str, notes: list[str], given: dict[str, Any]
) -> int | None:
    """Build the env once; when its default split is short of ``size``, the distinct count.
    ``given``: the user's own ``what`` dict, named when the env refuses a field."""
    from k15_envs.splits import SplitError

    from rllib_k15.env_factory import make_reasoning_env

    try:
        make_reasoning_env(env_id, env_config).close()
    except TypeError as err:  # gym passes env_config as keyword arguments
        raise ValueError(
            f"`{what}` ({given!r}) does not fit environment {env_id!r}: {err}"
        ) from None
    except SplitError as err:
        if not err.found:
            raise
        size = env_config.get("size")
        wanted = f"size={size}" if size is not None else "the env's default size"
        notes.append(
            f"{what}: the {env_config['split']!r} split of {env_id} has only {err.found} "
            f"distinct problems, fewer than {wanted}; using {err.found}"
        )
        return err.found
    return None


def resolve_splits(
    env_id: str,
    env_config: dict[str, Any] | None,
    eval_env_config: dict[str, Any] | None,
    *,
    eval_problems: int,
    evaluates: bool,
) -> SplitConfigs:
    """The env configs with the default ``train`` / ``test`` splits filled in (module doc).

    ``evaluates``: whether the run evaluates held-out problems (only then is the held-out
    env built here to check its size)."""
    train, held_out = dict(env_config or {}), dict(eval_env_config or {})
    params = env_parameters(env_id)
    if params is None or "split" not in params:
        return SplitConfigs(train, held_out)
    notes: list[str] = []
    if "split" not in train:
        train["split"] = "train"
        if "size" in params:
            found = _fit_size(env_id, train, "env_config", notes, dict(env_config or {}))
            if found is not None:
                train["size"] = found
    if "split" not in held_out:
        held_out["split"] = "test" if train["split"] == "train" else train["split"]
        if "size" in params and "size" not in held_out:
            held_out["size"] = eval_problems
        if evaluates and "size" in params and held_out["split"] is not None:
            given = dict(eval_env_config or {})
            found = _fit_size(env_id, {**train, **held_out}, "eval_env_config", notes, given)
            if found is not None:
                held_out["size"] = found
                if found < SMALL_TEST_SET:
                    notes.append(
                        f"eval_env_config: {found} held-out problems are too few for a "
                        "held-out claim; use harder levels or a larger test_fraction"
                    )
    if held_out.get("split") is None and train.get("split") is None:
        notes.append("unsplit env (split: null): the held-out problems may be training ones")
    return SplitConfigs(train, held_out, notes)


def eval_split_kwargs(
    env_id: str, env_kwargs: dict[str, Any], split: str | None, problems: int
) -> tuple[dict[str, Any], list[str]]:
    """``k15 eval``'s env kwargs: ``split`` (default ``"test"``) and ``size = problems``
    filled in where the env takes them and the user did not set them (the user's split
    wins, and still gets ``size``: an env's default size can exceed what a split holds); a
    split that is short of ``problems`` is cut to its distinct problems (with a note)."""
    kwargs, notes = dict(env_kwargs), []
    params = env_parameters(env_id)
    if params is None or "split" not in params:
        return kwargs, notes
    kwargs.setdefault("split", split)
    if kwargs["split"] is not None and "size" in params and "size" not in kwargs:
        kwargs["size"] = problems
        found = _fit_size(env_id, kwargs, "--env-kwargs", notes, dict(env_kwargs))
        if found is not None:
            kwargs["size"] = found
    return kwargs, notes
