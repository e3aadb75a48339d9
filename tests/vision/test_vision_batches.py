"""Image problems through the rollout helpers and the train batch: prompts carry the image
to the engine and the pixel tensor to the learner's rows; unsupported routes fail loudly."""

from __future__ import annotations

import gymnasium as gym
import k15_envs  # noqa: F401 - registers the image envs
import numpy as np
import pytest

from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.algorithm.columns import IMAGE_PREFIX
from rllib_k15.engine.base import Completion, RolloutEngine
from rllib_k15.rollout.generate import RolloutSettings, generate_rollouts, generate_segments
from rllib_k15.rollout.prompts import encode_problems
from rllib_k15.vision.sequences import image_prompt, load_processor


class _ScriptedVLMEngine(RolloutEngine):
    """Answers every prompt with the same text and records what it was given (a unit test
    of the rollout helpers; the real engine is tests/vision/test_vision_vllm.py)."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.calls = []

    def generate(self, prompt_token_ids, params, *, images=None):
        self.calls.append((prompt_token_ids, images))
        ids = self.tokenizer("\\boxed{5}", add_special_tokens=False)["input_ids"]
        done = Completion(ids, [-0.5] * len(ids), "\\boxed{5}", "stop")
        return [[done] * params.n for _ in prompt_token_ids]

    def load_weights(self, state_dict):
        raise NotImplementedError

    def close(self):
        pass


@pytest.fixture(scope="module")
def env():
    made = gym.make("k15/RenderedArithmetic-v0", difficulty=1, size=10).unwrapped
    yield made
    made.close()


def test_rollouts_send_images_and_rows_carry_pixels(tiny_vlm_dir, env):
    engine = _ScriptedVLMEngine(load_processor(tiny_vlm_dir))
    settings = RolloutSettings(samples_per_problem=2, temperature=1.0, top_p=1.0,
                               max_response_tokens=8)  # fmt: skip
    rollouts, stats = generate_rollouts(engine, env, [0, 1, 2], settings)
    ((prompt_ids, images),) = engine.calls
    assert images == [env.problem(i).metadata["image"] for i in range(3)]
    assert len(rollouts) == 6 and stats.finished == 6
    assert all(r.image_inputs["pixel_values"].shape == (1, 3, 32, 32) for r in rollouts)
    assert [r.correct for r in rollouts] == [env.problem(r.problem_index).answer == "5"
                                             for r in rollouts]  # fmt: skip
    columns, _ = build_train_batch(
        rollouts, pad_token_id=engine.tokenizer.pad_token_id, tau=0.1, baseline="mean",
        length_weight=0.0, iteration=1,
    )  # fmt: skip
    pixels = columns[IMAGE_PREFIX + "pixel_values"]
    assert pixels.shape == (6, 1, 3, 32, 32)
    assert columns[IMAGE_PREFIX + "pixel_attention_mask"].shape == (6, 1, 32, 32)
    assert np.array_equal(pixels[0], rollouts[0].image_inputs["pixel_values"])
    assert not np.array_equal(pixels[0], pixels[2])  # another problem, another image


def test_text_problems_keep_the_text_path(tiny_model_dir):
    from rllib_k15.models import load_tokenizer

    class TextEngine(_ScriptedVLMEngine):
        def __init__(self):
            self.processor, self.tokenizer, self.calls = None, load_tokenizer(tiny_model_dir), []

    text_env = gym.make("k15/Arithmetic-v0", size=5).unwrapped
    prompts = encode_problems(TextEngine(), [text_env.problem(i) for i in range(3)])
    assert prompts.images is None and prompts.image_inputs is None
    assert len(prompts.token_ids) == 3


def test_image_problems_without_a_vlm_fail_clearly(env):
    class NoProcessor(_ScriptedVLMEngine):
        def __init__(self):
            self.processor, self.tokenizer, self.calls = None, None, []

    engine = NoProcessor()
    with pytest.raises(ValueError, match="image problems need a vision-language model"):
        encode_problems(engine, [env.problem(0)])
    settings = RolloutSettings(samples_per_problem=2, temperature=1.0, top_p=1.0,
                               max_response_tokens=8, partial_rollout_max_tokens=4)  # fmt: skip
    with pytest.raises(ValueError, match="image problems need a vision-language model"):
        generate_segments(engine, env, [0], {}, settings, 1)
    assert not engine.calls  # nothing was generated without its image


def test_partial_rollouts_resend_the_image_with_every_segment(tiny_vlm_dir, env):
    """A response cut by the per-iteration budget continues next segment from the
    unexpanded prompt + its tokens, with its image again; the finished rollout's prompt is
    the learner's (expanded) one and it carries the image tensors."""
    processor = load_processor(tiny_vlm_dir)
    answer = processor.tokenizer("\\boxed{5}", add_special_tokens=False)["input_ids"]
    budget = len(answer) - 2  # the scripted answer needs two segments

    class Continuing(_ScriptedVLMEngine):  # segment 2 writes the rest of the answer
        def generate(self, prompt_token_ids, params, *, images=None):
            self.calls.append((prompt_token_ids, images))
            rest = answer[budget:] if len(self.calls) > 1 else answer
            return [[Completion(rest, [-0.5] * len(rest), "", "stop")] for _ in prompt_token_ids]

    engine = Continuing(processor)
    settings = RolloutSettings(samples_per_problem=2, temperature=1.0, top_p=1.0,
                               max_response_tokens=16,
                               partial_rollout_max_tokens=budget)  # fmt: skip
    first, _ = generate_segments(engine, env, [0, 1], {}, settings, 1)
    assert all(r.response_ids == tuple(answer[:budget]) for r in first)  # all unfinished
    continuations = {p: [r for r in first if r.problem_index == p] for p in (0, 1)}
    second, stats = generate_segments(engine, env, [0, 1], continuations, settings, 2)

    images = [env.problem(i).metadata["image"] for i in (0, 1)]
    for (rows, sent), step in zip(engine.calls, (0, budget)):
        assert sent == [images[0]] * 2 + [images[1]] * 2  # each row with its own image
        for row, problem in zip(rows, (0, 0, 1, 1)):
            prompt = image_prompt(processor, env.problem(problem).prompt, images[problem])
            assert row == [*prompt.engine_token_ids, *answer[:step]]
    assert stats.finished == 4
    for r in second:
        prompt = image_prompt(processor, env.problem(r.problem_index).prompt,
                              images[r.problem_index])  # fmt: skip
        assert r.prompt_ids == prompt.token_ids  # expanded: what the learner reads
        assert r.response_ids[:budget] == answer[:budget] and r.num_segments == 2
        assert np.array_equal(r.image_inputs["pixel_values"],
                              prompt.image_inputs["pixel_values"].numpy())  # fmt: skip


def test_endpoint_engine_tells_apart_one_question_with_two_images(tiny_vlm_dir, env):
    """The endpoint engine remembers each image prompt by its ids AND its image: the same
    question over another image (which a real VLM may expand into another prompt) keeps its
    own record. No server is contacted (the model id is given)."""
    from rllib_k15.engine.openai_engine import OpenAIEndpointEngine, _image_prompt_key

    engine = OpenAIEndpointEngine(
        "http://127.0.0.1:9/v1", tokenizer_model=tiny_vlm_dir, model="k15"
    )
    try:
        first, second = env.problem(0).metadata["image"], env.problem(1).metadata["image"]
        a = engine.encode_image_prompt("What is shown?", first)
        b = engine.encode_image_prompt("What is shown?", second)
        assert a.engine_token_ids == b.engine_token_ids
        keys = {_image_prompt_key(a.engine_token_ids, first),
                _image_prompt_key(b.engine_token_ids, second)}  # fmt: skip
        assert len(keys) == 2 and keys <= set(engine._image_prompts)
        from rllib_k15.vision.sequences import as_image

        assert _image_prompt_key([1], as_image(first)) == _image_prompt_key([1], as_image(first))
    finally:
        engine.close()
