"""K15MirrorDescent: the Kimi k1.5 online policy mirror descent loop as an RLlib Algorithm.

One ``training_step`` is one mirror-descent iteration i (docs/design.md §2):

    ProblemBuffer.sample ─► EnvRunners: engine generates k responses per problem, env verifies
      ─► rewards + length reward (after warm-up) + per-problem baseline (build_train_batch)
      ─► LearnerGroup.update: ref log-probs of π_θi, optimizer reset, OPMD minibatch steps
      ─► sync_weights: θ_{i+1} into the EnvRunners' engines in place

With partial rollouts on (``partial_rollout_max_tokens``) the sampling box becomes
:func:`rllib_k15.rollout.driver.run_partial_iteration`: one segment per response, the
unfinished ones kept in a driver-side :class:`~rllib_k15.rollout.groups.GroupStore`
(checkpointed with the algorithm), and only groups whose k members all finished trained.

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

from rllib_k15.algorithm.async_rollouts import AsyncRolloutsMixin
from rllib_k15.algorithm.batching import build_train_batch
from rllib_k15.algorithm.config import K15Config
from rllib_k15.algorithm.sharding import (
    reseed_engine,
    sample_deadline_s,
    sample_shards,
    shard_seed,
)
from rllib_k15.core.rewards import length_penalty_weight
from rllib_k15.env_factory import make_reasoning_env
from rllib_k15.metric_names import (
    DYNAMIC_FILTERED_FRAC,
    DYNAMIC_SAMPLING_ROUNDS,
    ENV_RUNNER_SHARDS_REDONE,
    ENV_RUNNERS_HUNG,
    EVAL_RESULTS,
    GENERATION_SECONDS,
    K15_RESULTS,
    LEARNER_UPDATE_SECONDS,
    SAMPLING_SECONDS,
    SCORING_SECONDS,
    TRAIN_TOKENS_PER_S,
    WEIGHT_SYNC_SECONDS,
)
from rllib_k15.rollout.driver import run_partial_iteration
from rllib_k15.rollout.dynamic_sampling import split_informative
from rllib_k15.rollout.groups import GroupStore
from rllib_k15.rollout.records import Rollout
from rllib_k15.sampling.problem_buffer import ProblemBuffer
from rllib_k15.sampling.strategies import SamplingConfig

PROBLEM_BUFFER_STATE = "problem_buffer"
PARTIAL_ROLLOUTS_STATE = "partial_rollouts"  # the GroupStore of unfinished responses
ASYNC_ROLLOUTS_STATE = "async_rollouts"  # the draw of the sampling in flight (async_rollouts)
# SAMPLING_SECONDS is this iteration's sampling wall time; GENERATION_SECONDS and
# SCORING_SECONDS are summed over EnvRunners (parallel remote runners: > wall time)


class K15MirrorDescent(AsyncRolloutsMixin, Algorithm):
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
        self.partial_groups: GroupStore | None = None
        cfg = self.config
        if cfg.partial_rollout_max_tokens:
            segments = -(-cfg.max_response_tokens // cfg.partial_rollout_max_tokens)  # ceil
            self.partial_groups = GroupStore(
                cfg.partial_rollout_max_groups or cfg.problems_per_iteration * segments,
                cfg.samples_per_problem,
            )
        self._async_setup()

    # ------------------------------------------------------------------ accessors
    @property
    def local_learner(self):
        """The learner in this process (``num_learners=0``: the default on one machine).

        With remote learners (``num_learners >= 1``) there is none here: use
        ``learner_group.foreach_learner(fn)``. Tests, benchmarks and notebooks read the
        policy's weights through it (``algo.local_learner.hf_state_dict()``).
        """
        learner = getattr(self.learner_group, "_learner", None)
        if learner is None:
            raise RuntimeError(
                "this algorithm's learners are remote actors (num_learners >= 1): use "
                "algo.learner_group.foreach_learner(...)"
            )
        return learner

    # ------------------------------------------------------------------ the iteration
    def training_step(self) -> None:
        cfg: K15Config = self.config
        iteration = self.training_iteration
        start = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            if cfg.async_rollouts:  # sampled while the last update ran (async_rollouts.py)
                indices, rollouts, runner_metrics = self._take_async_rollouts(iteration)
                sampled = rollouts
            elif self.partial_groups is None:
                indices = self.problem_buffer.sample(cfg.problems_per_iteration, iteration)
                rollouts, runner_metrics = self._sample(indices, iteration)
                sampled = rollouts
                if cfg.dynamic_sampling:
                    indices, sampled, rollouts, runner_metrics = self._sample_more_informative(
                        indices, rollouts, runner_metrics, iteration
                    )
            else:
                step = run_partial_iteration(
                    self.partial_groups, self.problem_buffer,
                    lambda idx, conts: self._sample(idx, iteration, conts),
                    problems_per_iteration=cfg.problems_per_iteration, iteration=iteration,
                )  # fmt: skip
                indices, rollouts = step.new_problems, step.trained
                sampled = rollouts
                runner_metrics = step.runner_output
                for name, value in step.metrics.items():
                    self.metrics.log_value((K15_RESULTS, name), value, window=1)
        self.last_problem_indices = list(indices)  # new problems in draw order; `k15 train`
        self._log_seconds(SAMPLING_SECONDS, time.perf_counter() - start)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        for name in (GENERATION_SECONDS, SCORING_SECONDS):  # the runners' metric names too
            self._log_seconds(name, self.metrics.peek((ENV_RUNNER_RESULTS, name), default=0.0))
        for problem_index in dict.fromkeys(r.problem_index for r in sampled):  # graded groups
            self.problem_buffer.record(
                problem_index, [r.correct for r in sampled if r.problem_index == problem_index]
            )
        if not rollouts:  # partial rollouts: no group complete yet; the weights stay π_θi
            self._maybe_evaluate(iteration)
            return
        if cfg.async_rollouts:  # iteration i+1 samples with θ_i during this update
            self._start_async_rollouts(iteration + 1)

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
            train_on_old_segments=cfg.partial_rollout_train_old_segments,
            mask_truncated=cfg.mask_truncated_responses,
            overlong_buffer_tokens=cfg.overlong_buffer_tokens,
            overlong_penalty_weight=cfg.overlong_penalty_weight,
            max_response_tokens=cfg.max_response_tokens,
        )
        for name, value in stats.items():
            self.metrics.log_value((K15_RESULTS, name), value, window=1)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            start = time.perf_counter()
            learner_results = self.learner_group.update(
                batch=MultiAgentBatch(
                    {DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=len(rollouts)
                ),
                minibatch_size=even_minibatch_size(len(rollouts), cfg.minibatch_size),
                num_epochs=cfg.num_epochs,
                shuffle_batch_per_epoch=cfg.num_epochs > 1,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    )
                },
            )
            train_seconds = time.perf_counter() - start
        self._update_window, self._policy_version = (
            (start, start + train_seconds),
            self._policy_version + 1,
        )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        n_train_tokens = float(columns["loss_mask"].sum())
        self.metrics.log_value(
            (K15_RESULTS, TRAIN_TOKENS_PER_S), n_train_tokens / train_seconds, window=1
        )
        # this iteration's seconds (RLlib's TIMERS are EMAs with coefficient 0.01)
        self.metrics.log_value((K15_RESULTS, LEARNER_UPDATE_SECONDS), train_seconds, window=1)

        if not cfg.async_rollouts:  # async: the next take syncs, once nothing is in flight
            with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
                start = time.perf_counter()
                self._sync_weights_to_env_runners()
            self._engine_version = self._policy_version
            sync_seconds = time.perf_counter() - start
            self.metrics.log_value((K15_RESULTS, WEIGHT_SYNC_SECONDS), sync_seconds, window=1)

        self._maybe_evaluate(iteration)

    def _sync_weights_to_env_runners(self) -> None:
        """θ into every EnvRunner's engine, in place. With only the local EnvRunner (the
        default layout) the learner's inference state goes straight to it: RLlib's
        ``EnvRunnerGroup.sync_weights`` first ``ray.put``s the whole state for remote
        runners even when there are none — a copy of every weight into the object store per
        iteration (135M: 1-4.5 s in fp32, ~0.6 s in bf16 on a 2-core box)."""
        group = self.env_runner_group
        if group.num_remote_workers() or group.local_env_runner is None:
            group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
            return
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE
        from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

        state = self.learner_group.get_state(
            components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
        )[COMPONENT_LEARNER]
        keep = (COMPONENT_RL_MODULE, WEIGHTS_SEQ_NO)  # what RLlib's own sync hands over
        group.local_env_runner.set_state({k: v for k, v in state.items() if k in keep})

    def _log_seconds(self, name: str, seconds: float) -> None:
        self.metrics.log_value((K15_RESULTS, name), float(seconds), window=1)

    def _maybe_evaluate(self, iteration: int) -> None:
        if self.config.eval_interval and (iteration + 1) % self.config.eval_interval == 0:
            for name, value in self.evaluate_held_out().items():
                self.metrics.log_value((EVAL_RESULTS, name), value, window=1)

    def _sample_more_informative(
        self, indices: list[int], rollouts: list[Rollout], runner_metrics: list, iteration: int
    ) -> tuple[list[int], list[Rollout], list[Rollout], list]:
        """Dynamic sampling (:mod:`rllib_k15.rollout.dynamic_sampling`): drop the groups
        with equal rewards, sample new problems for them (at most
        ``dynamic_sampling_max_rounds`` rounds). Returns every drawn problem, every graded
        rollout (the sampler records them all), the informative ones (trained) and the
        runners' metrics of every round."""
        cfg = self.config
        indices, sampled, runner_metrics = list(indices), list(rollouts), list(runner_metrics)
        kept, flat = split_informative(rollouts)
        flat_groups, rounds = len(flat), 0
        while rounds < cfg.dynamic_sampling_max_rounds:
            missing = cfg.problems_per_iteration - len({r.problem_index for r in kept})
            more = self.problem_buffer.sample(missing, iteration) if missing > 0 else []
            if not more:
                break
            rounds += 1
            new, metrics = self._sample(more, iteration, round_=rounds)
            indices += more
            sampled += new
            runner_metrics += metrics
            informative, flat = split_informative(new)
            kept += informative
            flat_groups += len(flat)
        self.metrics.log_value((K15_RESULTS, DYNAMIC_SAMPLING_ROUNDS), rounds, window=1)
        self.metrics.log_value(
            (K15_RESULTS, DYNAMIC_FILTERED_FRAC), flat_groups / max(len(indices), 1), window=1
        )
        return indices, sampled, kept, runner_metrics

    def _sample(
        self,
        indices: list[int],
        iteration: int,
        continuations: dict | None = None,
        round_: int = 0,
    ) -> tuple[list[Rollout], list]:
        """Sample ``indices`` on the EnvRunners. With ``continuations`` (partial rollouts:
        problem -> unfinished responses) one segment per response (``sample_segments``);
        the returned items are then finished Rollouts and unfinished PartialRollouts.
        ``round_`` > 0: an extra sampling round of the iteration (its own seeds)."""
        rollouts, metrics, redone, hung = self._sample_on_runners(
            indices, iteration, continuations, round_
        )
        self._log_shard_faults(redone, hung)
        return rollouts, metrics

    def _log_shard_faults(self, redone: int, hung: int) -> None:
        self.metrics.log_value(
            (K15_RESULTS, ENV_RUNNER_SHARDS_REDONE), redone, reduce="lifetime_sum"
        )
        self.metrics.log_value((K15_RESULTS, ENV_RUNNERS_HUNG), hung, reduce="lifetime_sum")

    def _sample_on_runners(
        self, indices: list[int], iteration: int, continuations: dict | None = None, round_: int = 0
    ) -> tuple[list, list, int, int]:
        """``_sample``'s work without touching the metrics logger (the async thread runs it):
        (rollouts, runner metrics, shards redone, runners hung)."""
        group = self.env_runner_group
        seed = self.config.seed or 0

        def call(er, shard_index: int, shard: list[int]):  # runs in the EnvRunner
            reseed_engine(er, shard_seed(seed, iteration, shard_index, round_))
            if continuations is not None:
                conts = {p: continuations[p] for p in shard if p in continuations}
                return er.sample_segments(shard, conts, iteration), er.get_metrics()
            return er.sample(problem_indices=shard, iteration=iteration), er.get_metrics()

        if group.num_remote_env_runners() == 0:
            rollouts, metrics = call(self.env_runner, 0, list(indices))
            return rollouts, [metrics], 0, 0
        n_shards = max(1, group.num_healthy_remote_workers())
        shards = [list(map(int, s)) for s in np.array_split(indices, n_shards)]
        run = sample_shards(
            group,
            shards,
            call,
            restore=lambda: self.restore_env_runners(group),
            restore_timeout_s=self.config.env_runner_restore_timeout_s,
            deadline_s=self._sample_deadline_s(max(len(s) for s in shards)),
            kill=lambda ids: kill_env_runners(group, ids),
        )
        rollouts = [r for rs, _ in run.results for r in rs]
        return rollouts, [m for _, m in run.results], run.redone, run.hung

    def _sample_deadline_s(self, problems_per_shard: int) -> float | None:
        """``env_runner_sample_timeout_s``: a number, None (no deadline) or "auto" — derived
        from the shard's token budget at ``env_runner_min_tokens_per_s``."""
        cfg = self.config
        if cfg.env_runner_sample_timeout_s != "auto":
            return cfg.env_runner_sample_timeout_s
        per_call = min(cfg.max_response_tokens, cfg.partial_rollout_max_tokens or 1 << 62)
        tokens = problems_per_shard * cfg.samples_per_problem * per_call
        return sample_deadline_s(tokens, cfg.env_runner_min_tokens_per_s, floor_s=120.0)

    def restore_env_runners(self, env_runner_group) -> list[int]:
        """RLlib's restore plus the learner's weights: a restarted runner's engine starts
        from the base model, and the local runner's state RLlib copies holds no weights."""
        with self._restore_lock:
            restored = super().restore_env_runners(env_runner_group)
        if restored and not self._push_engine_weights(restored):  # async: the engines' θ
            env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                to_worker_indices=restored,
                inference_only=True,
            )
        return restored

    def evaluate_held_out(self) -> dict[str, float]:
        """Held-out Pass@1 with the current weights (see ``eval_*`` config fields)."""
        cfg = self.config
        if cfg.async_rollouts:  # wait for the sampling in flight, then send the learner's θ
            self._settle_async_rollouts()
            self._sync_engines()
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
        if self.partial_groups is not None:
            state[PARTIAL_ROLLOUTS_STATE] = self.partial_groups.get_state()
        if self.config.async_rollouts:
            state[ASYNC_ROLLOUTS_STATE] = self._async_state()
        return state

    def set_state(self, state) -> None:
        saved = state.get(PARTIAL_ROLLOUTS_STATE)
        if saved and saved["groups"] and self.partial_groups is None:
            raise ValueError(
                f"the checkpoint holds {len(saved['groups'])} groups of unfinished partial "
                "rollouts but `partial_rollout_max_tokens` is off; turn it on to restore them"
            )
        super().set_state(state)
        if PROBLEM_BUFFER_STATE in state:
            self.problem_buffer.set_state(state[PROBLEM_BUFFER_STATE])
        if saved is not None and self.partial_groups is not None:
            self.partial_groups.set_state(saved)
        self._set_async_state(state.get(ASYNC_ROLLOUTS_STATE))

    def cleanup(self) -> None:
        if getattr(self, "_in_flight", None) is not None:
            self._in_flight.close()  # no sampling thread may outlive the runners
        super().cleanup()


def even_minibatch_size(n_rows: int, minibatch_size: int) -> int:
    """Minibatch size for a batch of ``n_rows``: m = ⌈n_rows / minibatch_size⌉ minibatches of
    ⌈n_rows / m⌉ rows.

    RLlib cycles through the batch to fill every minibatch to the exact size, so a batch
    that is not a multiple of it would have rows trained twice. With partial rollouts the
    batch (the groups complete this iteration) varies; e.g. 40 rows with minibatch_size 32
    become 2 × 20 instead of 32 + (8 + 24 repeated). At most m − 1 rows repeat.
    """
    m = -(-n_rows // minibatch_size)
    return -(-n_rows // m)


def _pad_token_id(model_path: str) -> int:
    from rllib_k15.models import load_tokenizer

    tok = load_tokenizer(model_path)
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def kill_env_runners(group, runner_ids: list[int]) -> None:
    """Kill hung EnvRunner actors so Ray restarts them, and mark them unhealthy so the next
    ``restore_env_runners`` brings them back (with the learner's weights). RLlib 2.60 exposes
    the actor handles only through ``EnvRunnerGroup._worker_manager``."""
    import ray

    manager = group._worker_manager
    actors = manager.actors()
    for runner_id in runner_ids:
        ray.kill(actors[runner_id], no_restart=False)
        manager.set_actor_state(runner_id, healthy=False)
