"""ReasoningEnvRunner pieces that need no training: repeat cutting and its penalty."""

import pytest
from support import toy_env

from rllib_k15 import K15Config
from rllib_k15.algorithm.env_runner import ReasoningEnvRunner
from rllib_k15.engine import Completion


@pytest.fixture(scope="module")
def runner(tiny_model_dir):
    config = (
        K15Config()
        .environment(toy_env.ENV_ID)
        .training(
            hf_model=str(tiny_model_dir),
            engine="hf",
            engine_options={"dtype": "float32"},
            repeat_penalty=0.7,
        )
    )
    runner = ReasoningEnvRunner(config=config)
    yield runner
    runner.stop()


def test_a_looping_completion_is_cut_and_penalised(runner):
    loop = [11, 12, 13, 14] * 30  # period 4, 120 tokens
    completion = Completion(
        token_ids=[5, 6, 7] + loop, logprobs=[-1.0] * 123, text="x", finish_reason="length"
    )
    cut = runner._cut_loop(completion)
    assert cut.finish_reason == "repeat"
    assert len(cut.token_ids) == len(cut.logprobs) < 123
    assert cut.token_ids == completion.token_ids[: len(cut.token_ids)]
    verdict = runner._penalise_loop(cut, runner.reasoning_env.verify(None, "zebra"))
    assert (verdict.reward, verdict.correct, verdict.reason) == (-0.7, False, "repeat")


def test_normal_completion_is_untouched(runner):
    completion = Completion(
        token_ids=list(range(100, 160)), logprobs=[-1.0] * 60, text="ok", finish_reason="stop"
    )
    assert runner._cut_loop(completion) is completion
