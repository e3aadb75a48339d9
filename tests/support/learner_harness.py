"""A K15 learner built alone (no Algorithm) on the tiny model, and a random train batch.

Shared by the learner tests (OPMD and the baseline losses). Those check exact numerics
(accumulation invariance, masking, reference scores to 1e-5), so the learner runs in fp32
(``autocast_bf16=False``) unless a test passes ``autocast_bf16`` itself: under bf16 autocast
3+3+2 accumulated rows differ from the 8-row batch by ~3e-4 of the gradient's norm (bf16
rounding of differently padded micro-batches), not the 1e-5 of fp32 summation order.
"""

import numpy as np
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_k15 import K15Config
from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.rollout.records import Rollout
from support import toy_env

BATCH_ROWS = 8  # 2 problems × 4 samples


def build_learner(model_dir, **training):
    """A built learner for the toy env; ``training`` overrides K15Config.training fields."""
    training.setdefault("autocast_bf16", False)  # fp32 pinned: see the module docstring
    config = (
        K15Config()
        .environment(toy_env.ENV_ID)
        .training(
            hf_model=str(model_dir),
            lr=1e-3,
            samples_per_problem=4,
            problems_per_iteration=2,
            minibatch_size=BATCH_ROWS,
            **training,
        )
        .debugging(seed=0)
    )
    config.validate()
    env = toy_env.FirstLetterEnv()
    spaces = {DEFAULT_MODULE_ID: (env.observation_space, env.action_space)}
    learner = config.build_learner(env=None, spaces=spaces)
    learner.build()
    return learner


def random_columns(seed: int = 0, iteration: int = 0) -> dict[str, np.ndarray]:
    """Train columns of 2 groups × 4 random responses (2-8 tokens), alternating 0/1 reward."""
    rng = np.random.default_rng(seed)
    rollouts = []
    for j in range(BATCH_ROWS):
        n = int(rng.integers(2, 9))
        rollouts.append(
            Rollout(
                problem_index=j // 4,
                problem_id=str(j // 4),
                prompt_ids=rng.integers(5, 1000, 6).tolist(),
                response_ids=rng.integers(5, 1000, n).tolist(),
                sample_logp=[-5.0] * n,
                finish_reason="stop",
                reward=float(j % 2),
                correct=bool(j % 2),
                reason="",
            )
        )
    cols, _ = build_train_batch(
        rollouts, pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=iteration
    )
    return cols


def update(learner, cols: dict[str, np.ndarray]):
    """One learner update on a copy of ``cols`` as a single minibatch."""
    batch = MultiAgentBatch(
        {DEFAULT_MODULE_ID: SampleBatch({k: v.copy() for k, v in cols.items()})}, BATCH_ROWS
    )
    return learner.update(batch=batch, minibatch_size=BATCH_ROWS, num_epochs=1)
