"""Rollout engines: one interface (``RolloutEngine``), two backends.

- ``VLLMEngine`` — vLLM (CPU or GPU build), the production sampler of the EnvRunners.
- ``HFEngine`` — plain ``transformers.generate``, the numerical reference and fallback.

``make_engine("vllm" | "hf", model, **kwargs)`` picks one by name. The backends are
imported lazily: ``import rllib_k15.engine`` pulls in neither vLLM nor transformers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams, encode_chat

if TYPE_CHECKING:
    from rllib_k15.engine.hf_engine import HFEngine
    from rllib_k15.engine.vllm_engine import VLLMEngine

__all__ = [
    "ENGINES",
    "Completion",
    "HFEngine",
    "RolloutEngine",
    "SamplingParams",
    "VLLMEngine",
    "encode_chat",
    "make_engine",
]

# engine name -> "module:class", resolved on first use
ENGINES: dict[str, str] = {
    "vllm": "rllib_k15.engine.vllm_engine:VLLMEngine",
    "hf": "rllib_k15.engine.hf_engine:HFEngine",
}


def _load(spec: str) -> type[RolloutEngine]:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def make_engine(kind: str, model: str | os.PathLike[str], **kwargs: Any) -> RolloutEngine:
    """Build the engine called ``kind`` on ``model`` (a registered name or HF directory)."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of {sorted(ENGINES)}")
    from rllib_k15.models import resolve_model

    return _load(ENGINES[kind])(resolve_model(model), **kwargs)


def __getattr__(name: str) -> Any:
    if name == "VLLMEngine":
        return _load(ENGINES["vllm"])
    if name == "HFEngine":
        return _load(ENGINES["hf"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
