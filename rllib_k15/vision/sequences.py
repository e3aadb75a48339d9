"""Image + instruction prompts and teacher-forced response log-probs for a VLM.

A VLM's prompt is the chat-templated instruction with the model's image placeholder,
which its processor expands into the image's tokens (4 image tokens and their delimiters
for ``tiny-random-idefics3``, hundreds for real models), plus the image tensors the vision
tower reads (``pixel_values``, and e.g. ``pixel_attention_mask`` for Idefics3/SmolVLM).
The learner scores a response exactly as for text
(:func:`rllib_k15.core.sequences.token_logprobs`), with the image tensors in the same
forward:

    log π(y_t | image, x, y_<t) = logits[t-1, y_t] - logsumexp(logits[t-1])

so the gradient of the policy loss reaches the connector (projector) and, unless frozen,
the vision tower.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rllib_k15.core.sequences import pack_sequences, token_logprobs

__all__ = [
    "ImagePrompt",
    "as_image",
    "image_prompt",
    "is_vision_model",
    "load_processor",
    "multimodal_response_logprobs",
    "stack_image_inputs",
]


@dataclass(frozen=True)
class ImagePrompt:
    """One prompt for a VLM.

    token_ids:    the chat-templated prompt, image placeholder expanded by the processor:
                  what the learner's forward reads.
    engine_token_ids: the same prompt before the expansion (one placeholder per image):
                  what vLLM takes with the image, as it expands the placeholder itself
                  (already expanded ids would be expanded again).
    image_inputs: the processor's image tensors for this prompt (``pixel_values``,
                  ``pixel_attention_mask``, ``image_sizes``...), leading batch dim removed:
                  what the model's forward takes besides the tokens.
    """

    token_ids: list[int]
    engine_token_ids: list[int]
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.image_inputs["pixel_values"]


def is_vision_model(path: str | os.PathLike[str]) -> bool:
    """Whether the HF model directory ``path`` holds a vision-language model (its config
    has a ``vision_config``)."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def load_processor(name_or_path: str | os.PathLike[str]) -> Any:
    """The model directory's processor (image processor + tokenizer), pad token set."""
    from transformers import AutoProcessor

    from rllib_k15.models import resolve_model

    processor = AutoProcessor.from_pretrained(resolve_model(name_or_path))
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(processor, "image_processor", None) is None:
        raise ValueError(f"{name_or_path}: its processor has no image processor (not a VLM?)")
    return processor


def _prompt_text(processor: Any, user_message: str) -> str:
    """The chat-templated prompt text with one image placeholder before the message."""
    message = [{"type": "image"}, {"type": "text", "text": user_message}]
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(
            [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False
        )
    image_token = getattr(processor, "image_token", None)
    if not image_token:
        raise ValueError("the processor has neither a chat template nor an image_token")
    return processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{image_token}\n{user_message}"}],
        add_generation_prompt=True,
        tokenize=False,
    )


def as_image(image: Any) -> Any:
    """A ``PIL.Image`` from encoded bytes (``Problem.metadata["image"]``); images as they are."""
    if isinstance(image, (bytes, bytearray)):
        from k15_envs.render import decode_image

        return decode_image(bytes(image))
    return image


def image_prompt(processor: Any, user_message: str, image: Any) -> ImagePrompt:
    """The :class:`ImagePrompt` for one instruction and one image (a ``PIL.Image`` or
    encoded bytes, as ``Problem.metadata["image"]`` holds)."""
    image = as_image(image)
    text = _prompt_text(processor, user_message)
    inputs = processor(images=[[image]], text=[text], return_tensors="pt", add_special_tokens=False)
    ids = [int(i) for i in inputs["input_ids"][0]]
    image_inputs = {
        key: value[0]
        for key, value in inputs.items()
        if key not in ("input_ids", "attention_mask", "token_type_ids")
        and isinstance(value, torch.Tensor)
    }
    if "pixel_values" not in image_inputs:
        raise ValueError("the processor returned no pixel_values for the image")
    engine_ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ImagePrompt(ids, [int(i) for i in engine_ids], image_inputs)


def multimodal_response_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[ImagePrompt],
    responses: Sequence[Sequence[int]],
    pad_token_id: int,
) -> torch.Tensor:
    """Teacher-forced log-probs of each response token given its prompt's image and text;
    zero elsewhere. Returns ``(B, T)`` float32 over the right-padded ``prompt + response``."""
    packed = pack_sequences([p.token_ids for p in prompts], responses, pad_token_id)
    dtype = next(model.parameters()).dtype
    images = stack_image_inputs([p.image_inputs for p in prompts], dtype)
    logits = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        use_cache=False,
        **images,
    ).logits
    return token_logprobs(logits, packed.input_ids) * packed.response_mask


def stack_image_inputs(rows: Sequence[dict[str, Any]], dtype: torch.dtype) -> dict[str, Any]:
    """Per-row image tensors (torch or numpy) stacked into the forward's batch; floating
    ones (``pixel_values``) in the model's ``dtype``, masks and sizes as they are."""
    out = {}
    for key in rows[0]:
        stacked = torch.stack([torch.as_tensor(row[key]) for row in rows])
        out[key] = stacked.to(dtype) if stacked.is_floating_point() else stacked
    return out
