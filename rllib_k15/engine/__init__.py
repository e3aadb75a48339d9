"""Rollout engines: one interface (``RolloutEngine``), two local backends and a remote one.

- ``VLLMEngine`` — vLLM (CPU or GPU build), the production sampler of the EnvRunners.
- ``HFEngine`` — plain ``transformers.generate``, the numerical reference and fallback.
- ``OpenAIEndpointEngine`` — any OpenAI-compatible ``/v1/completions`` server (``k15 serve``,
  vLLM's own); evaluation only (``k15 eval --endpoint URL``): it cannot load weights.

``make_engine("vllm" | "hf", model, **kwargs)`` picks a local one by name. The endpoint
engine takes a URL, not a model, so it is built directly:
``OpenAIEndpointEngine(url, tokenizer_model=...)``. The backends are imported lazily:
``import rllib_k15.engine`` pulls in neither vLLM, transformers nor openai.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams, encode_chat

if TYPE_CHECKING:
    from rllib_k15.engine.hf_engine import HFEngine
    from rllib_k15.engine.openai_engine import OpenAIEndpointEngine
    from rllib_k15.engine.vllm_engine import VLLMEngine

__all__ = [
    "ENGINES",
    "Completion",
    "HFEngine",
    "OpenAIEndpointEngine",
    "RolloutEngine",
    "SamplingParams",
    "VLLMEngine",
    "encode_chat",
    "make_engine",
]

# engine name -> "module:class", resolved on first use (engines built on a local model)
ENGINES: dict[str, str] = {
    "vllm": "rllib_k15.engine.vllm_engine:VLLMEngine",
    "hf": "rllib_k15.engine.hf_engine:HFEngine",
}
# not in ENGINES: make_engine resolves its argument as a model, this engine takes a URL
_OPENAI_ENGINE = "rllib_k15.engine.openai_engine:OpenAIEndpointEngine"


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
    if name == "OpenAIEndpointEngine":
        return _load(_OPENAI_ENGINE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
