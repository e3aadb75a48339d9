"""The HTTP front of ``k15 serve``: Ray Serve LLM's OpenAI ingress plus what k15 adds.

``ray.serve.llm``'s ``OpenAiIngress`` already speaks the OpenAI protocol (chat and text
completions, streaming, ``/v1/models``) in front of vLLM's own OpenAI serving code. This
subclass adds, without touching the protocol:

- ``GET /health``: 200 with the served weights once the engine answers its health check,
  503 with the reason if it fails (Serve's own ``/-/healthz`` only says the proxy is up);
  while the application is still starting, Serve holds the request until the ingress is up;
- a ``max_tokens`` cap (``--max-tokens``): a request asking for more gets a 400 naming the
  field and the cap, instead of tying up the engine;
- the served weights' provenance in ``/v1/models`` metadata under ``"k15"`` (iteration,
  checkpoint), which ``k15 serve --watch`` updates after every in-place weight swap.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from ray.serve.llm.ingress import OpenAiIngress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

__all__ = ["K15Ingress", "requested_max_tokens"]


def requested_max_tokens(body: Any) -> tuple[str, int] | None:
    """(field, value) of the response-length request of a chat or completion body."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = getattr(body, field, None)
        if value is not None:
            return field, int(value)
    return None


class K15Ingress(OpenAiIngress):
    """``OpenAiIngress`` with a health route, a ``max_tokens`` cap and weight provenance.

    max_tokens_limit: largest ``max_tokens`` / ``max_completion_tokens`` a request may ask.
    weights:          the ``"k15"`` metadata block of the weights served at start.
    """

    def __init__(
        self,
        llm_deployments: dict,
        model_cards: dict,
        *,
        lora_paths: dict | None = None,
        max_tokens_limit: int,
        weights: dict,
    ) -> None:
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self._max_tokens_limit = max_tokens_limit
        self._weights = dict(weights)

    # ------------------------------------------------------------------ k15 additions
    async def set_weights(self, weights: dict) -> None:
        """Record the weights now served (called by the watcher after a swap)."""
        self._weights = dict(weights)

    async def weights(self) -> dict:
        return dict(self._weights)

    async def health(self) -> Response:
        try:
            for handle in self._default_serve_handles.values():
                await handle.check_health.remote()
        except Exception as err:  # noqa: BLE001 - any engine failure is "unhealthy"
            return JSONResponse(
                {"status": "unhealthy", "reason": f"{type(err).__name__}: {err}"},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return JSONResponse(
            {"status": "ok", "models": sorted(self._model_cards), "k15": self._weights}
        )

    def _check_max_tokens(self, body: Any) -> None:
        requested = requested_max_tokens(body)
        if requested is not None and requested[1] > self._max_tokens_limit:
            field, value = requested
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"`{field}` ({value}) exceeds this server's limit of {self._max_tokens_limit} "
                "tokens (k15 serve --max-tokens)",
            )

    # ------------------------------------------------------------------ overrides
    async def model(self, model_id: str):
        card = await super().model(model_id)
        if card is None:
            return None
        return card.model_copy(update={"metadata": {**card.metadata, "k15": self._weights}})

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        self._check_max_tokens(body)
        return await super().completions(body, request)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        if not body.messages:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "`messages` must not be empty")
        self._check_max_tokens(body)
        return await super().chat(body, request)
