"""A VLM policy's learner side on the tiny random Idefics3: the prompt carries the image, the
image changes the response log-probs, and the policy gradient reaches the projector and
(when trainable) the vision tower — or leaves a frozen tower untouched."""

from __future__ import annotations

import gymnasium as gym
import k15_envs  # noqa: F401 - registers the image envs
import pytest
import torch
from transformers import AutoModelForImageTextToText

from rllib_k15.vision.sequences import image_prompt, load_processor, multimodal_response_logprobs
from rllib_k15.vision.tiny_vlm import IMAGE_TOKEN


@pytest.fixture(scope="module")
def rendered():
    env = gym.make("k15/RenderedArithmetic-v0", difficulty=2, size=8, render={"noise": 4.0})
    yield env.unwrapped
    env.close()


@pytest.fixture(scope="module")
def processor(tiny_vlm_dir):
    return load_processor(tiny_vlm_dir)


def _model(path):
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)


def _responses(processor, texts):
    return [processor.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_the_prompt_carries_the_image(processor, rendered):
    problem = rendered.problem(0)
    prompt = image_prompt(processor, problem.prompt, problem.metadata["image"])
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert prompt.token_ids.count(image_id) == 4  # (32 / 8)² patches, pixel-shuffled by 2
    assert prompt.engine_token_ids.count(image_id) == 1  # vLLM expands the placeholder itself
    assert prompt.pixel_values.shape == (1, 3, 32, 32)  # one image, no splitting
    assert prompt.image_inputs["pixel_attention_mask"].shape == (1, 32, 32)
    text = processor.tokenizer.decode(prompt.token_ids)
    assert problem.prompt in text and text.rstrip().endswith("assistant")


def test_the_image_changes_the_response_logprobs(tiny_vlm_dir, processor, rendered):
    model = _model(tiny_vlm_dir).eval()
    a, b = rendered.problem(0), rendered.problem(1)
    assert a.metadata["question"] != b.metadata["question"] and a.prompt == b.prompt
    prompts = [image_prompt(processor, p.prompt, p.metadata["image"]) for p in (a, b, a)]
    responses = _responses(processor, ["The answer is \\boxed{7}."] * 3)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        logprobs = multimodal_response_logprobs(model, prompts, responses, pad)
        alone = multimodal_response_logprobs(model, prompts[1:2], responses[1:2], pad)
    same_text = logprobs.sum(dim=1)
    # same instruction and response, other image: other log-probs; same image: the same
    assert (same_text[0] - same_text[1]).abs() > 1e-2
    assert torch.allclose(logprobs[0], logprobs[2], atol=1e-5)
    assert torch.allclose(logprobs[1, : alone.shape[1]], alone[0], atol=1e-4)  # padding-free
    assert (logprobs[:, : len(prompts[0].token_ids)] == 0).all()  # only responses are scored


def _step(model, processor, rendered, *, freeze_vision: bool):
    vision = model.model.vision_model
    projector = model.model.connector
    if freeze_vision:
        vision.requires_grad_(False)
    before = {
        "vision": [p.detach().clone() for p in vision.parameters()],
        "projector": [p.detach().clone() for p in projector.parameters()],
        "language": [p.detach().clone() for p in model.model.text_model.parameters()],
    }
    problems = [rendered.problem(i) for i in range(4)]
    prompts = [image_prompt(processor, p.prompt, p.metadata["image"]) for p in problems]
    responses = _responses(processor, [f"\\boxed{{{p.answer}}}" for p in problems])
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logprobs = multimodal_response_logprobs(
        model, prompts, responses, processor.tokenizer.pad_token_id
    )
    loss = -(advantages * logprobs.sum(dim=1)).mean()  # a policy-gradient surrogate
    loss.backward()
    grad_norm = {
        "vision": sum(p.grad.norm() for p in vision.parameters() if p.grad is not None),
        "projector": sum(p.grad.norm() for p in projector.parameters()),
    }
    optimizer.step()
    moved = {
        name: max((a - b).abs().max().item() for a, b in zip(params, module.parameters()))
        for (name, params), module in zip(
            before.items(), (vision, projector, model.model.text_model)
        )
    }
    return grad_norm, moved


def test_policy_gradient_reaches_the_vision_tower_and_projector(tiny_vlm_dir, processor, rendered):
    grad_norm, moved = _step(_model(tiny_vlm_dir).train(), processor, rendered, freeze_vision=False)
    assert grad_norm["vision"] > 0 and grad_norm["projector"] > 0
    assert moved["vision"] > 0 and moved["projector"] > 0 and moved["language"] > 0


def test_a_frozen_vision_tower_stays_put(tiny_vlm_dir, processor, rendered):
    grad_norm, moved = _step(_model(tiny_vlm_dir).train(), processor, rendered, freeze_vision=True)
    assert grad_norm["vision"] == 0 and moved["vision"] == 0
    assert moved["projector"] > 0 and moved["language"] > 0
