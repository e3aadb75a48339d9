"""Image + instruction prompts and teacher-forced response log-probs for a VLM.

A VLM's prompt is the chat-templated instruction with the model's image placeholder,
which its processor expands into one token per image feature (16 for ``tiny-random-llava``,
hundreds for real models), plus the image tensors the vision tower reads. The learner scores
a response exactly as for text (:func:`rllib_k15.core.sequences.token_logprobs`), with
the image tensors in the same forward:

    log π(y_t | image, x, y_<t) = logits[t-1, y_t] - logsumexp(logits[t-1])

so the gradient of the policy loss reaches the multimodal projector and, unless frozen, the
vision tower.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rllib_k15.core.sequences import pack_sequences, token_logprobs

__all__ = ["ImagePrompt", "load_processor", "image_prompt", "multimodal_response_logprobs"]


@dataclass(frozen=True)
class ImagePrompt:
    """One prompt for a VLM.

    token_ids:    the chat-templated prompt, image placeholder expanded by the processor.
    pixel_values: the processor's image tensor for this prompt (leading batch dim removed).
    extra:        other per-image tensors the model's forward takes (``image_sizes``,
                  ``image_grid_thw``, ...), leading batch dim removed.
    """

    token_ids: list[int]
    pixel_values: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


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


def image_prompt(processor: Any, user_message: str, image: Any) -> ImagePrompt:
    """The :class:`ImagePrompt` for one instruction and one image (a ``PIL.Image`` or
    encoded bytes, as ``Problem.metadata["image"]`` holds)."""
    if isinstance(image, (bytes, bytearray)):
        from k15_envs.render import decode_image

        image = decode_image(bytes(image))
    text = _prompt_text(processor, user_message)
    inputs = processor(images=[image], text=[text], return_tensors="pt", add_special_tokens=False)
    ids = [int(i) for i in inputs["input_ids"][0]]
    extra = {
        key: value[0]
        for key, value in inputs.items()
        if key not in ("input_ids", "attention_mask", "pixel_values")
        and isinstance(value, torch.Tensor)
    }
    return ImagePrompt(ids, inputs["pixel_values"][0], extra)


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
    pixel_values = torch.stack([p.pixel_values for p in prompts]).to(dtype)
    extra = {key: torch.stack([p.extra[key] for p in prompts]) for key in prompts[0].extra}
    logits = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        pixel_values=pixel_values,
        use_cache=False,
        **extra,
    ).logits
    return token_logprobs(logits, packed.input_ids) * packed.response_mask
