"""Problems to engine prompts, for text and image problems alike.

A text problem's prompt is its chat-templated ``Problem.prompt``. A problem with an image
(``Problem.metadata["image"]``: the ``k15/Rendered*-v0`` and ``k15/ImageQA-v0`` envs) needs
a vision-language model: the engine's processor builds the prompt with the image
placeholder expanded (:func:`rllib_k15.vision.sequences.image_prompt`), the image goes to
the engine as multimodal input, and the processor's image tensors go with each response
to the learner, which scores the response with the image in the forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ProblemPrompts", "encode_problems", "generate_for"]


@dataclass(frozen=True)
class ProblemPrompts:
    """The engine inputs of a list of problems.

    token_ids:    one prompt per problem, as the learner reads it (a VLM's image
                  placeholder expanded by its processor).
    engine_token_ids: the prompts as the engine takes them (None: ``token_ids``; a VLM's
                  prompt before the expansion, which vLLM does itself).
    images:       the problems' encoded images (None: text problems).
    image_inputs: the processor's image tensors per problem (``pixel_values``, ...), as
                  numpy arrays (float32 for floating ones); None for text problems.
    """

    token_ids: list[list[int]]
    engine_token_ids: list[list[int]] | None = None
    images: list[bytes] | None = None
    image_inputs: list[dict[str, np.ndarray]] | None = None


def encode_problems(engine: Any, problems: Sequence[Any]) -> ProblemPrompts:
    """Prompts for ``problems`` (all text or all images: one env's problems)."""
    images = [p.metadata.get("image") for p in problems]
    if all(image is None for image in images):
        return ProblemPrompts([engine.encode_prompt(p.prompt) for p in problems])
    if any(image is None for image in images):
        raise ValueError("a batch mixes text problems and image problems")
    encoded = [engine.encode_image_prompt(p.prompt, image) for p, image in zip(problems, images)]
    return ProblemPrompts(
        [e.token_ids for e in encoded],
        [e.engine_token_ids for e in encoded],
        list(images),
        [{key: _numpy(value) for key, value in e.image_inputs.items()} for e in encoded],
    )


def _numpy(tensor: Any) -> np.ndarray:
    """A processor tensor as numpy (floating ones in float32: numpy has no bf16)."""
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def generate_for(engine: Any, prompts: ProblemPrompts, params: Any) -> list:
    """``engine.generate`` on the prompts, with their images when they have some."""
    if prompts.images is None:
        return engine.generate(prompts.token_ids, params)
    return engine.generate(prompts.engine_token_ids, params, images=prompts.images)
