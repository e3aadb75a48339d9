"""The rollout-engine contract shared by the vLLM engine and the transformers reference.

EnvRunners talk to an engine through this interface only, so the sampler (vLLM on CPU or
GPU, or plain ``transformers.generate``) is a configuration choice:

- prompts go in as **token ids** (``encode_prompt`` applies the chat template), so a
  partial rollout can be continued later from ``prompt_ids + partial_response_ids``;
- ``generate`` returns ``params.n`` completions per prompt, in prompt order, each with the
  engine's log-probability of every generated token;
- ``load_weights`` replaces the weights in place (no restart) — the weight sync of one
  training iteration.

Log-prob convention (both engines): ``Completion.logprobs[t]`` is the log-probability of
``token_ids[t]`` under the distribution the token was sampled from — after temperature and
top-p. At ``temperature=1, top_p=1`` (the RL default) that is exactly the model's own
log π(token | prefix), comparable with the learner's teacher-forced log-probs. Greedy
decoding (``temperature=0``) reports the model's unscaled log-probs.

Seeds are engine-wide (set at construction): a per-request seed kills the vLLM-CPU engine
core (docs/design.md §4), so ``SamplingParams`` deliberately has no ``seed`` field.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["Completion", "FinishReason", "RolloutEngine", "SamplingParams", "encode_chat"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    n:           completions per prompt (the k of the report's per-problem baseline).
    temperature: 0 means greedy; 1 samples from the model itself (what RL needs).
    top_p:       nucleus mass; keep 1.0 for RL, where the log-probs must be the model's.
    max_tokens:  cap on generated tokens; a completion that hits it has
                 ``finish_reason == "length"`` (unfinished: a partial rollout).
    stop:        extra stop strings (EOS always stops); the stop string is not returned.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n ({self.n}) must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be >= 1")
        if isinstance(self.stop, str):  # a bare string would be split into characters
            object.__setattr__(self, "stop", (self.stop,))


@dataclass
class Completion:
    """One sampled response.

    token_ids:     generated token ids (EOS included when the model emitted it).
    logprobs:      log-prob of each generated token, ``len(logprobs) == len(token_ids)``.
    text:          decoded response without special tokens.
    finish_reason: "stop" (EOS or a stop string) or "length" (hit ``max_tokens``).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def encode_chat(tokenizer: Any, user_message: str) -> list[int]:
    """Token ids of a one-turn chat with the assistant turn opened (generation prompt)."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    return [int(i) for i in ids]


class RolloutEngine(ABC):
    """Samples completions for token-id prompts and accepts new weights in place."""

    tokenizer: Any  # a Hugging Face tokenizer with the model's chat template

    processor: Any = None  # a VLM's processor (image processor + tokenizer), else None

    def encode_prompt(self, user_message: str) -> list[int]:
        """The chat-templated prompt for one user message, ready for ``generate``."""
        return encode_chat(self.tokenizer, user_message)

    def encode_image_prompt(self, user_message: str, image: Any) -> Any:
        """The :class:`rllib_k15.vision.sequences.ImagePrompt` of one instruction and image
        (a VLM on an engine that takes images: ``generate(..., images=...)``)."""
        if self.processor is None:
            raise ValueError(
                f"{type(self).__name__} has no image processor: image problems need a "
                "vision-language model (e.g. tiny-random-idefics3, or a local HF VLM directory) "
                "on the vLLM engine"
            )
        from rllib_k15.vision.sequences import image_prompt

        return image_prompt(self.processor, user_message, image)

    @abstractmethod
    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, outer list in prompt order."""

    def generate_text(
        self, user_messages: Sequence[str], params: SamplingParams
    ) -> list[list[Completion]]:
        """Convenience: ``generate`` on the chat-templated ``user_messages``."""
        return self.generate([self.encode_prompt(m) for m in user_messages], params)

    @abstractmethod
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Replace the model weights in place (HF parameter names, any float dtype)."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine's memory and processes. Idempotent."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
