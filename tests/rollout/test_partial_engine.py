"""A response continued over several iterations equals one uninterrupted generation.

Real engines (the shared tiny vLLM engine and the transformers reference) behind the real
EnvRunner: at temperature 0 with unchanged weights, ``sample_segments`` over several
iterations (prompt + tokens so far as the new prompt each time) must produce exactly the
token ids of ``sample`` with the whole ``max_response_tokens`` in one call, and the same
log-probs to 2e-3. Both engines are fp32 (the shared vLLM engine is pinned in
tests/conftest.py): in bf16 the continued segments' log-probs (other batch shapes, the
prompt + tokens so far re-prefilled) differ from the uninterrupted ones by up to ~0.06.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import toy_env  # the toy env of the training-loop tests
from support.segments import continue_until_finished

from rllib_k15 import K15Config
from rllib_k15.algorithm.env_runner import ReasoningEnvRunner

MAX_TOKENS, BUDGET, K = 20, 6, 2
PROBLEMS = [0, 1, 2]


@pytest.fixture(params=["hf", "vllm"])
def runner(request, tiny_model_dir):
    if request.param == "vllm":
        engine = request.getfixturevalue("vllm_tiny_engine")  # shared: never closed here
    else:
        from rllib_k15.engine import HFEngine

        engine = HFEngine(tiny_model_dir, dtype="float32")
    config = (
        K15Config()
        .environment(toy_env.ENV_ID, env_config={"size": 8})
        .training(
            hf_model=str(tiny_model_dir),
            engine=request.param,
            samples_per_problem=K,
            max_response_tokens=MAX_TOKENS,
            partial_rollout_max_tokens=BUDGET,
            temperature=0.0,
        )  # fmt: skip
    )
    runner = ReasoningEnvRunner(config=config)
    runner._engine = engine  # the engine under test instead of building another one
    yield runner
    runner._engine = None  # stop() must not close the shared engine
    runner.stop()


def test_continued_response_equals_uninterrupted_generation(runner) -> None:
    whole = runner.sample(problem_indices=PROBLEMS, iteration=0)
    expected = {(r.problem_index, i % K): r for i, r in enumerate(whole)}

    finished = continue_until_finished(runner.sample_segments, PROBLEMS, BUDGET)
    assert len(finished) == len(whole) == K * len(PROBLEMS)
    for r in finished:
        ref = expected[(r.problem_index, r.slot)]
        assert r.response_ids == ref.response_ids, (r.problem_index, r.slot)
        assert (r.finish_reason, r.reward, r.text) == (ref.finish_reason, ref.reward, ref.text)
        np.testing.assert_allclose(r.sample_logp, ref.sample_logp, atol=2e-3)
        n = len(r.response_ids)
        segments = -(-n // BUDGET)  # ceil: the last segment may be shorter
        assert r.num_segments == segments
        assert r.token_iterations == [t // BUDGET for t in range(n)]  # stamped per segment
