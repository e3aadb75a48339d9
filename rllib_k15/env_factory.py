"""Making reasoning envs by id — the one place every command and the trainer use.

An id registered with ``ray.tune.register_env`` (Ray ships the creator to remote
EnvRunners: the way to train on your own env) wins; otherwise ``gym.make`` (all ``k15/``
ids, registered by importing ``k15_envs``). The env's ``unwrapped`` must implement the
``k15_envs.ReasoningEnv`` contract. Importing this module does not import Ray.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["make_reasoning_env", "make_unwrapped_env"]


def make_reasoning_env(env_id: str, env_config: dict[str, Any] | None = None) -> Any:
    """The (wrapped) env for ``env_id``; a clear error names the id and the known ones."""
    import gymnasium as gym

    try:
        import k15_envs  # noqa: F401  (registers the k15/* ids)
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the k15-envs package is needed: pip install -e ./envs") from err

    # Ray's registry holds ids registered with ray.tune.register_env, before or after
    # ray.init(); consult it only when Ray is in use (imported)
    if sys.modules.get("ray") is not None:
        from ray.tune.registry import ENV_CREATOR, _global_registry

        if _global_registry.contains(ENV_CREATOR, env_id):
            return _global_registry.get(ENV_CREATOR, env_id)(dict(env_config or {}))
    try:
        return gym.make(env_id, **(env_config or {}))
    except gym.error.Error as err:
        known = sorted(k for k in gym.registry if k.startswith("k15/"))
        raise ValueError(
            f"environment `env` ({env_id!r}) cannot be made: {err}. Registered k15 envs: {known}"
        ) from err


def make_unwrapped_env(env_id: str, env_config: dict[str, Any] | None = None) -> Any:
    """The env's ``unwrapped`` ``k15_envs.ReasoningEnv`` (problems, verifier) for ``env_id``."""
    return make_reasoning_env(env_id, env_config).unwrapped
