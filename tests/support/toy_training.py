"""K15Configs on the toy env (``toy_env``) and a tiny model, and running them.

``toy_config`` is the common part: the toy env, ``hf_model``, the HF engine in fp32, seed 0.
Two presets on top of it, each shared by several test files:

- ``learning_config``: 64 problems, 8 × 8 one-token samples per iteration, minibatches of 16
  (the learning, bf16, weight-sync and baseline-loss tests on the peaked tiny model);
  ``learning_run_config`` is test_learning's run of it (also checkpoint and Tune tests).
- ``exact_toy_config``: 4 × 4 samples with the learner in fp32 too (the reliability tests
  compare runs number for number).

Every helper takes K15Config.training fields as keywords; they override the preset's.
"""

from __future__ import annotations

from typing import Any

from rllib_k15 import K15Config
from support import toy_env

HF_FP32 = {"engine": "hf", "engine_options": {"dtype": "float32"}}

LEARNING = {
    "samples_per_problem": 8,
    "problems_per_iteration": 8,
    "max_response_tokens": 1,
    "minibatch_size": 16,  # 4 optimizer steps per iteration: ratios move off 1
    "micro_batch_size": 32,
}

EXACT = {
    "autocast_bf16": False,
    "samples_per_problem": 4,
    "problems_per_iteration": 4,
    "max_response_tokens": 1,
    "minibatch_size": 16,
    "micro_batch_size": 16,
    "lr": 3e-5,
    "tau": 0.1,
}


def toy_config(
    model_dir, env_id: str | None = None, env_config: dict | None = None, **training: Any
) -> K15Config:
    """K15Config on ``env_id`` (default: the toy env) with ``env_config`` (default 16
    problems), ``hf_model=model_dir``, the HF engine in fp32 and seed 0; ``training`` adds
    or overrides K15Config.training fields."""
    fields = {"hf_model": str(model_dir), **HF_FP32, **training}
    env_config = {"size": 16} if env_config is None else env_config
    return (
        K15Config()
        .environment(env_id or toy_env.ENV_ID, env_config=env_config)
        .training(**fields)
        .debugging(seed=0)
    )


def learning_config(model_dir, **training: Any) -> K15Config:
    """``toy_config`` with 64 problems and the ``LEARNING`` batch (8 problems × 8 samples of
    one token, 4 optimizer steps per iteration)."""
    return toy_config(model_dir, env_config={"size": 64}, **{**LEARNING, **training})


def learning_run_config(engine: str, model_dir, **training: Any) -> K15Config:
    """test_learning's run: ``learning_config`` on ``engine`` ("hf" | "vllm", fp32; vLLM with
    a small KV cache, eager), lr 3e-5, τ 0.1, one epoch."""
    options = {"dtype": "float32"}
    if engine == "vllm":
        options.update(kv_cache_gib=0.25, max_model_len=512, enforce_eager=True)
    fields = {"num_epochs": 1, "lr": 3e-5, "tau": 0.1, **training}
    return learning_config(model_dir, engine=engine, engine_options=options, **fields)


def exact_toy_config(
    model_dir, env_id: str | None = None, env_config: dict | None = None, **training: Any
) -> K15Config:
    """``toy_config`` with the ``EXACT`` fields: HF engine and learner in fp32 (fast,
    deterministic; the reliability tests compare runs number for number)."""
    return toy_config(model_dir, env_id, env_config, **{**EXACT, **training})


def policy_weights(algo) -> dict[str, Any]:
    """A copy of the policy's weights (HF names) from the algorithm's local learner."""
    return {k: v.detach().clone() for k, v in algo.local_learner.hf_state_dict().items()}


def train_with_weights(config: K15Config, iterations: int) -> tuple[list[dict], dict, dict]:
    """Build ``config``'s algorithm, train ``iterations`` times, stop it: (the results, the
    policy's weights before, after)."""
    algo = config.build_algo()
    try:
        before = policy_weights(algo)
        results = [algo.train() for _ in range(iterations)]
        after = policy_weights(algo)
    finally:
        algo.stop()
    return results, before, after
