"""K15MirrorDescent: the Kimi k1.5 online policy mirror descent loop as an RLlib Algorithm.

One ``training_step`` is one mirror-descent iteration i (DESIGN §2):

    ProblemBuffer.sample ─► EnvRunners: engine generates k responses per problem, env verifies
      ─► rewards + length reward (after warm-up) + per-problem baseline (build_train_batch)
      ─► LearnerGroup.update: ref log-probs of π_θi, optimizer reset, OPMD minibatch steps
      ─► sync_weights: θ_{i+1} into the EnvRunners' engines in place

Launch::

    rllib train --algo K15MirrorDescent --env k15/Arithmetic-v0 \\
        --config tuned_examples/quickstart_smollm2.yaml
    # or
    algo = K15Config().environment("k15/Arithmetic-v0").training(tau=0.1).build_algo(); algo.train()
"""

from __future__ import annotations

import time

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rllib_k15.algorithm.batching import Rollout, build_train_batch
from rllib_k15.algorithm.config import K15Config
from rllib_k15.core.rewards import length_penalty_weight
from rllib_k15.env_factory import make_reasoning_env
from rllib_k15.sampling.problem_buffer import ProblemBuffer
from rllib_k15.sampling.strategies import SamplingConfig

K15_RESULTS = "k15"  # namespace of the iteration's reward/length statistics
EVAL_RESULTS = "k15_eval"  # held-out Pass@1 and tokens
PROBLEM_BUFFER_STATE = "problem_buffer"


class K15MirrorDescent(Algorithm):
    @classmethod
    def get_default_config(cls) -> K15Config:
        return K15Config()

    def setup(self, config: K15Config) -> None:
        super().setup(config)
        probe = make_reasoning_env(self.config.env, self.config.env_config).unwrapped
        try:
            difficulty = [probe.problem(i).difficulty for i in range(len(probe))]
        finally:
            probe.close()
        self.problem_buffer = ProblemBuffer(
            difficulty, SamplingConfig(**self.config.sampling), seed=self.config.seed or 0
        )
        self._pad_token_id = _pad_token_id(self.config.model_path)

    # ------------------------------------------------------------------ the iteration
    def training_step(self) -> None:
        cfg: K15Config = self.config
        iteration = self.training_iteration
        indices = self.problem_buffer.sample(cfg.problems_per_iteration, iteration=iteration)

        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            rollouts, runner_metrics = self._sample(indices, iteration)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        for problem_index in indices:
            self.problem_buffer.record(
                problem_index, [r.correct for r in rollouts if r.problem_index == problem_index]
            )

        weight = length_penalty_weight(
            iteration, cfg.length_penalty_warmup_iters, cfg.length_penalty_weight
        )
        columns, stats = build_train_batch(
            rollouts,
            pad_token_id=self._pad_token_id,
            tau=cfg.tau,
            baseline=cfg.baseline,
            length_weight=weight,
            iteration=iteration,
        )
        for name, value in stats.items():
            self.metrics.log_value((K15_RESULTS, name), value, window=1)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            start = time.perf_counter()
            learner_results = self.learner_group.update(
                batch=MultiAgentBatch(
                    {DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=len(rollouts)
                ),
                minibatch_size=cfg.minibatch_size,
                num_epochs=cfg.num_epochs,
                shuffle_batch_per_epoch=cfg.num_epochs > 1,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    )
                },
            )
            train_seconds = time.perf_counter() - start
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        n_train_tokens = float(columns["loss_mask"].sum())
        self.metrics.log_value(
            (K15_RESULTS, "train_tokens_per_s"), n_train_tokens / train_seconds, window=1
        )

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )

        if cfg.eval_interval and (iteration + 1) % cfg.eval_interval == 0:
            for name, value in self.evaluate_held_out().items():
                self.metrics.log_value((EVAL_RESULTS, name), value, window=1)

    def _sample(self, indices: list[int], iteration: int) -> tuple[list[Rollout], list]:
        group = self.env_runner_group
        n_remote = group.num_healthy_remote_workers()
        if n_remote == 0:
            runner = self.env_runner
            rollouts = runner.sample(problem_indices=indices, iteration=iteration)
            return rollouts, [runner.get_metrics()]
        shards = [list(map(int, s)) for s in np.array_split(indices, n_remote)]
        funcs = [
            (
                lambda er, s=shard: (
                    er.sample(problem_indices=s, iteration=iteration),
                    er.get_metrics(),
                )
            )
            for shard in shards
        ]
        results = group.foreach_env_runner(funcs, local_env_runner=False)
        return [r for rs, _ in results for r in rs], [m for _, m in results]

    def evaluate_held_out(self) -> dict[str, float]:
        """Held-out Pass@1 with the current weights (see ``eval_*`` config fields)."""
        cfg = self.config
        kwargs = {
            "num_problems": cfg.eval_problems,
            "samples": cfg.eval_samples,
            "max_tokens": cfg.max_response_tokens,
        }
        if self.env_runner_group.num_healthy_remote_workers() == 0:
            return self.env_runner.evaluate(**kwargs)
        return self.env_runner_group.foreach_env_runner(
            lambda er: er.evaluate(**kwargs), local_env_runner=False, remote_worker_ids=[1]
        )[0]

    # ------------------------------------------------------------------ checkpointing
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[PROBLEM_BUFFER_STATE] = self.problem_buffer.get_state()
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if PROBLEM_BUFFER_STATE in state:
            self.problem_buffer.set_state(state[PROBLEM_BUFFER_STATE])


def _pad_token_id(model_path: str) -> int:
    from rllib_k15.models import load_tokenizer

    tok = load_tokenizer(model_path)
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
