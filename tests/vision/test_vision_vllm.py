"""The VLM through the real vLLM engine (CPU): images go in as vLLM's multimodal input, the
sampled tokens depend on the image, and the engine's log-probs are the learner's (the
teacher-forced forward with the image), so OPMD's importance-free update sees the policy
that sampled."""

from __future__ import annotations

import gymnasium as gym
import k15_envs  # noqa: F401 - registers the image envs
import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from rllib_k15.engine.base import SamplingParams
from rllib_k15.vision.sequences import image_prompt, load_processor, multimodal_response_logprobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_engine(tiny_vlm_dir):
    pytest.importorskip("vllm")
    from rllib_k15.engine.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        tiny_vlm_dir, seed=0, dtype="float32", max_model_len=512, kv_cache_gib=0.1,
        enforce_eager=True,
    )  # fmt: skip
    yield engine
    engine.close()


def test_vllm_samples_from_the_image_and_reports_the_learners_logprobs(tiny_vlm_dir, vlm_engine):
    processor = load_processor(tiny_vlm_dir)
    # the bundled image questions (colored circles, bar charts): images that differ a lot
    # even at the tiny model's 32 x 32 pixels, where rendered sums look alike
    env = gym.make("k15/ImageQA-v0", num_workers=1).unwrapped
    problems = [env.problem(i) for i in range(4)]
    prompts = [image_prompt(processor, p.prompt, p.metadata["image"]) for p in problems]
    images = [p.metadata["image"] for p in problems]
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    with_images = vlm_engine.generate([p.engine_token_ids for p in prompts], greedy, images=images)
    swapped = vlm_engine.generate(
        [p.engine_token_ids for p in prompts], greedy, images=images[::-1]
    )
    ids = [g[0].token_ids for g in with_images]
    assert ids != [g[0].token_ids for g in swapped]  # the image steers the answer

    vlm_engine.reseed(0)
    groups = vlm_engine.generate(
        [p.engine_token_ids for p in prompts], SamplingParams(n=2, temperature=1.0, max_tokens=12),
        images=images,
    )  # fmt: skip
    flat = [(prompt, c) for prompt, g in zip(prompts, groups, strict=True) for c in g]
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        learner = multimodal_response_logprobs(
            model, [p for p, _ in flat], [c.token_ids for _, c in flat],
            processor.tokenizer.pad_token_id,
        )  # fmt: skip
    gaps = []
    for row, (prompt, completion) in enumerate(flat):
        start = len(prompt.token_ids)
        ours = learner[row, start : start + completion.num_tokens].numpy()
        gaps.append(np.abs(ours - np.array(completion.logprobs)))
    gap = np.concatenate(gaps)
    assert gap.max() < 1e-3, gap.max()
    env.close()


def test_weight_sync_into_the_vlm_engine_is_verified(tiny_vlm_dir, vlm_engine):
    """The learner's HF-named state (``model.text_model.*``, ``model.vision_model.*``)
    loads into vLLM's Idefics3 in place, changes what it samples, and the sync is checked:
    the engine reports the fingerprinted tensors under the HF names, and they match."""
    from safetensors.torch import load_file

    from rllib_k15.engine.fingerprint import check_synced, pick_names

    processor = load_processor(tiny_vlm_dir)
    env = gym.make("k15/RenderedArithmetic-v0", difficulty=2, size=3).unwrapped
    problems = [env.problem(i) for i in range(3)]
    prompts = [
        image_prompt(processor, p.prompt, p.metadata["image"]).engine_token_ids for p in problems
    ]
    images = [p.metadata["image"] for p in problems]
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    before = [g[0].token_ids for g in vlm_engine.generate(prompts, greedy, images=images)]
    original = {k: v.float() for k, v in load_file(tiny_vlm_dir / "model.safetensors").items()}
    generator = torch.Generator().manual_seed(0)
    perturbed = {
        k: v + 0.5 * v.std() * torch.randn(v.shape, generator=generator) if v.numel() > 1 else v
        for k, v in original.items()
    }
    try:
        vlm_engine.load_weights(perturbed)
        after = [g[0].token_ids for g in vlm_engine.generate(prompts, greedy, images=images)]
        assert after != before
        names = pick_names(list(perturbed))
        assert names and all(n.startswith("model.text_model.") for n in names)
        held = vlm_engine.weight_fingerprints(names)
        assert check_synced({n: perturbed[n] for n in names}, held, vlm_engine.torch_dtype)
    finally:
        vlm_engine.load_weights(original)
    restored = [g[0].token_ids for g in vlm_engine.generate(prompts, greedy, images=images)]
    assert restored == before
    env.close()


def test_evaluate_grades_image_problems_on_the_vlm(vlm_engine):
    """``evaluate`` (what ``k15 eval`` and the trainer's held-out eval run) on an image env:
    every problem is sampled with its image and graded by the text task's verifier."""
    from rllib_k15.evaluation.evaluate import evaluate

    env = gym.make("k15/RenderedArithmetic-v0", difficulty=1, size=6)
    result = evaluate(vlm_engine, env, num_problems=6, samples=2, max_tokens=6, seed=0,
                      progress=False)  # fmt: skip
    assert result.num_problems == 6 and 0.0 <= result.pass_at_1 <= 1.0
    assert result.mean_tokens > 0
    env.close()


def test_partial_rollouts_on_image_problems_equal_one_generation(tiny_vlm_dir, vlm_engine):
    """Greedy partial rollouts (3 tokens per segment) produce the tokens of one uninterrupted
    greedy generation: every segment continues with its image (a segment without it would
    continue another distribution), and the finished rollouts' log-probs are the learner's
    teacher-forced ones with the image."""
    from rllib_k15.rollout.generate import RolloutSettings, generate_segments

    env = gym.make("k15/ImageQA-v0", num_workers=1).unwrapped
    indices = [0, 1, 2, 3]
    problems = [env.problem(i) for i in indices]
    processor = load_processor(tiny_vlm_dir)
    prompts = [image_prompt(processor, p.prompt, p.metadata["image"]) for p in problems]
    whole = vlm_engine.generate(
        [p.engine_token_ids for p in prompts], SamplingParams(temperature=0.0, max_tokens=9),
        images=[p.metadata["image"] for p in problems],
    )  # fmt: skip
    settings = RolloutSettings(samples_per_problem=1, temperature=0.0, top_p=1.0,
                               max_response_tokens=9, partial_rollout_max_tokens=3)  # fmt: skip
    finished, pending = {}, {}
    for iteration in range(1, 5):
        out, _ = generate_segments(vlm_engine, env, indices, pending, settings, iteration)
        pending = {}
        for r in out:
            if hasattr(r, "reward"):
                finished[r.problem_index] = r
            else:
                pending.setdefault(r.problem_index, []).append(r)
        indices = sorted(pending)
        if not indices:
            break
    assert sorted(finished) == [0, 1, 2, 3]
    assert any(r.num_segments > 1 for r in finished.values())  # some did continue
    for i, group in enumerate(whole):
        assert list(finished[i].response_ids) == list(group[0].token_ids), i

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir, dtype=torch.float32).eval()
    rows = [finished[i] for i in range(4)]
    with torch.no_grad():
        learner = multimodal_response_logprobs(
            model, prompts, [r.response_ids for r in rows], processor.tokenizer.pad_token_id
        )
    for row, (prompt, r) in enumerate(zip(prompts, rows, strict=True)):
        assert list(r.prompt_ids) == prompt.token_ids
        start = len(prompt.token_ids)
        ours = learner[row, start : start + len(r.response_ids)].numpy()
        assert np.abs(ours - np.array(r.sample_logp)).max() < 1e-3
    env.close()
