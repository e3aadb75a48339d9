"""K15Config: the ``.training(...)`` builder and ``validate()`` for K15MirrorDescent.

Every K15-specific field is documented once, here, with its trade-off. YAML files under
``tuned_examples/`` map 1:1 onto the builder methods (``environment:``, ``training:``,
``env_runners:``, ``learners:``, ``debugging:`` sections), see :func:`rllib_k15.yaml_config`.
"""

from __future__ import annotations

import os
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_k15.core.losses import LogprobReduction, LossType
from rllib_k15.core.rewards import Baseline
from rllib_k15.distributed.deepspeed_config import learner_setting_errors
from rllib_k15.hardware import resolve_autocast

# name -> (default, help). The single source of truth for K15 fields: defaults, docs
# (README table, CLI help) and `training()` kwargs are all generated from it. The batch
# defaults (8 problems × 4 samples × ≤128 tokens, micro-batches of 4) are sized for the
# embedded 135M model on a 2-core CPU: the former 16 × 8 × 256 with micro-batches of 8
# took 7–20 min per iteration there and peaked at 9.6 GiB RSS (activations and the
# 8 × 257 × 49152 logits of a micro-batch were ~5 GiB of it). GPU runs set their own.
K15_FIELDS: dict[str, tuple[Any, str]] = {
    "hf_model": (
        "smollm2-135m-instruct",
        "Policy to train: a model-registry name (`k15 model list`) or a local HF directory.",
    ),
    "loss": (
        "opmd",
        "Registered policy loss (rllib_k15.core.losses.LossType): `opmd` Kimi k1.5 eq. (3); comparison algorithms (rllib_k15.core.losses.grpo, .rest, .o1_pruner) `grpo` DeepSeekMath (group mean/std advantage, token-level clipped ratio, KL to the initial model; ignores `tau` and `logprob_reduction`), `rest` (NLL of the best correct responses, no negative gradient: learns only from problems it already solves), `o1_pruner` (length-harmonizing reward with PPO clip; needs `o1_pruner_reference_stats`; ignores task reward shaping).",
    ),
    "clip_eps": (
        0.2,
        "`grpo` / `o1_pruner`: importance ratio π_θ/π_θi clipped to [1−ε, 1+ε]. Only acts from the second optimizer step of an iteration on (the first has ratio 1); smaller = more conservative within an iteration, larger lets π_θ move further from π_θi.",
    ),
    "grpo_kl_beta": (
        0.04,
        "`grpo`: β of the per-token k3 KL to the FIXED initial model (DeepSeekMath: 0.04). > 0 keeps a frozen copy of the start weights on each learner (one more model in memory, one more forward pass per iteration) and anchors long runs; 0 = no reference model (cheaper; the policy may drift further).",
    ),
    "rest_top_k": (
        1,
        "`rest`: correct responses fitted per problem, highest shaped reward first. 1 = the report's 'best response'; 0 = every correct one (more data per iteration, less selective). Problems without a correct response contribute nothing.",
    ),
    "o1_pruner_lambda": (
        2.0,
        "`o1_pruner`: λ of the accuracy term λ(A − Â_ref). Larger protects accuracy (a right answer where the reference model is often wrong earns more); smaller pushes harder on length.",
    ),
    "o1_pruner_reference_stats": (
        None,
        "`o1_pruner`: JSON file of per-problem L̂_ref (mean tokens) and Â_ref (accuracy) of K samples of the start model, made before training by rllib_k15.long2short.collect.collect_reference_stats (K is recorded in the file). Required for `o1_pruner`.",
    ),
    "tau": (
        0.1,
        "τ of the KL(π_θ‖π_θi) regulariser. Larger keeps each iteration closer to π_θi (stabler, slower); smaller learns faster but lets the log-ratio grow.",
    ),
    "baseline": (
        "mean",
        "Estimate of τ·log Z: `mean` reward (report's practical default, unbiased-ish, bounded) or `logsumexp` τ·log mean exp(r/τ) (exact for the surrogate but → max reward as τ → 0).",
    ),
    "samples_per_problem": (
        4,
        "k responses per problem. More samples = better baseline and more groups with reward variance, at linear generation cost.",
    ),
    "problems_per_iteration": (
        8,
        "Problems sampled per iteration. Batch = problems × k responses.",
    ),
    "max_response_tokens": (
        128,
        "Hard cap on response length; a response cut here is `truncated` and scores 0.",
    ),
    "temperature": (
        1.0,
        "Sampling temperature of the rollout engine. 1.0 samples π_θi itself, which the OPMD derivation assumes.",
    ),
    "top_p": (
        1.0,
        "Nucleus sampling; < 1 makes samples deviate from π_θi (biases the off-policy estimate).",
    ),
    "logprob_reduction": (
        "sum",
        "log π(y|x) as the `sum` of token log-probs (the report's sequence-level quantity) or the `token_mean` (length-normalised; weaker length bias, smaller gradient scale).",
    ),
    "length_penalty_weight": (
        0.0,
        "Weight of the Kimi length reward added to the task reward after warm-up. 0 disables it.",
    ),
    "length_penalty_warmup_iters": (
        0,
        "Iterations without the length reward at the start (the report warms up so the penalty does not slow early learning).",
    ),
    "num_epochs": (
        1,
        "Passes over each iteration's batch. >1 moves further from π_θi per iteration (the τ term holds it back).",
    ),
    "minibatch_size": (
        16,
        "Responses per optimizer step. Batch / minibatch_size optimizer steps per epoch.",
    ),
    "micro_batch_size": (
        4,
        "Responses per forward/backward pass (gradient accumulation). Lower saves memory, costs speed; no effect on the maths.",
    ),
    "weight_decay": (
        0.0,
        "AdamW weight decay. RL fine-tuning usually uses 0: the τ term already anchors θ to the previous iterate.",
    ),
    "adam_betas": (
        (0.9, 0.99),
        "AdamW betas. With a reset every iteration, a short β2 horizon lets the second moment warm up within one iteration.",
    ),
    "reference_logprobs": (
        "learner",
        "Where log π_θi (the τ-term's and the clip's reference) comes from. `learner`: one extra forward pass of the learner over the batch at iteration start (exact; also logs the engine/learner gap as logp_mismatch_*). `engine`: the log-probs the engine returned while sampling, no extra pass (~20 % of a CPU iteration in bench/rl_iteration.py). Valid only when the engine samples from π_θi unmodified: temperature 1, top_p 1, no partial rollouts; the engine/learner numeric gap (1.7e-5 per token in fp32 here, ~1e-2 in bf16 on GPUs) then enters the loss. Check logp_mismatch with `learner` before switching.",
    ),
    "reset_optimizer_each_iteration": (
        True,
        "Reset optimizer state at each iteration start (report §2.3.2: each iteration is a new problem). Off = moments carry over (ablation).",
    ),
    "autocast_bf16": (
        "auto",
        "Learner forward/backward in bf16 autocast over fp32 master weights: ≈4× faster matmuls on GPUs and AVX512-BF16/AMX CPUs, ~40× SLOWER where bf16 is emulated (AVX2-only CPUs). `auto` decides from the hardware (rllib_k15.hardware).",
    ),
    "bf16_rounding": (
        "dither",
        "How fp32 master weights become bf16 for a bf16 engine and the bf16-autocast learner forward (rllib_k15.core.rounding). `dither`: unbiased stochastic rounding with one dither per iteration shared by engine and learner, so updates far below the bf16 step (lr 1e-5 vs ~2e-4) still move the sampled policy — measured: the bf16 forward sees 98-100 % of the fp32 change in log π. `nearest`: round-to-nearest; on a bf16 checkpoint such updates round back to the old weights (the bf16 forward saw 10 % of the change) and small-lr runs stop learning. No effect in fp32.",
    ),
    "gradient_checkpointing": (
        False,
        "Recompute activations in backward: less memory for long responses, ~30% slower.",
    ),
    "engine": (
        "vllm",
        "Rollout engine: `vllm` (product path) or `hf` (transformers.generate; reference, slow).",
    ),
    "engine_options": (
        {},
        "Extra keyword arguments for the engine constructor (e.g. kv_cache_gib, max_model_len, enforce_eager).",
    ),
    "repeat_detection": (
        True,
        "End responses that fell into a loop (rllib_k15.rollout.repetition: a periodic tail or a repeated n-gram). They are cut after one copy of the loop, not verified, and get `-repeat_penalty`. vLLM cannot stop a request mid-flight from Python, so the cut happens after generation: it saves training tokens and gives the penalty, not generation time.",
    ),
    "repeat_config": (
        {},
        "Overrides of RepetitionConfig (max_period, min_repeats, min_tokens, ngram_size, max_ngram_repeats).",
    ),
    "repeat_penalty": (
        0.5,
        "Reward of a looping response is −repeat_penalty (a wrong answer gets 0), so loops are pushed down harder than honest mistakes.",
    ),
    "sampling": (
        {},
        "Problem sampling, the fields of rllib_k15.sampling.strategies.SamplingConfig: strategy (`uniform` | `curriculum` | `prioritized`), transition_iteration, hard_threshold, priority_floor.",
    ),
    "partial_rollout_max_tokens": (
        None,
        "Partial rollouts (report §2.6; rllib_k15.rollout.groups): each response gets at most this many NEW tokens per iteration; an unfinished one is stored and continued next iteration from where it stopped, under the new weights. None/0 = off. Smaller = an iteration no longer waits for its longest response (less idle engine time with heavy-tailed lengths) but more of each trained response comes from older policies, short siblings wait for their group, and every continuation re-reads its prefix (prefill). Must be < max_response_tokens.",
    ),
    "partial_rollout_train_old_segments": (
        False,
        "Partial rollouts: whether tokens generated in earlier iterations (by older policies than π_θi) enter the loss. False (default) masks them out — the OPMD surrogate assumes samples from π_θi — at the cost of fewer trained tokens per response; True trains on whole responses (more signal, off-policy by up to the response's age). Reference log-probs are recomputed for the whole response either way.",
    ),
    "partial_rollout_max_groups": (
        None,
        "Partial rollouts: bound on problem groups waiting for unfinished members. While the store is full no new problem is sampled; nothing is evicted. None = problems_per_iteration × ⌈max_response_tokens / partial_rollout_max_tokens⌉: every group finishes within that many iterations, so the bound never holds new problems back. Smaller caps memory/checkpoint size and group age (fewer off-policy tokens) but starves the engine of new problems while long responses finish (measured in bench/partial_rollouts.py).",
    ),
    "eval_interval": (0, "Evaluate held-out Pass@1 every N iterations (0 = never)."),
    "eval_problems": (
        32,
        "Held-out problems per evaluation (indices disjoint from training via `eval_env_config`).",
    ),
    "eval_samples": (4, "Samples per held-out problem (Pass@1 is averaged over them)."),
    "eval_env_config": ({}, "env_config overrides for the held-out set (e.g. another seed)."),
    "deepspeed": (
        None,
        "DeepSpeed ZeRO for the learners instead of torch DDP (rllib_k15.distributed; docs/scaling.md): None = off, else a dict of DeepSpeedSettings — zero_stage (0-3; default 2: gradients + Adam state sharded at DDP's traffic; 3 also shards parameters for an all-gather per forward/backward), offload_optimizer / offload_params (host RAM; GPU only gains), bf16 ('auto'), overlap_comm, reduce_bucket_size, extra (raw DeepSpeed keys). Needs num_learners >= 1; `minibatch_size` stays global (each of N learners takes 1/N). Adam moments are sharded and not checkpointed.",
    ),
}


PATH_FIELDS = ("hf_model", "o1_pruner_reference_stats")


def _absolute_if_local_path(value: Any) -> Any:
    """``value`` as an absolute path when it is a relative path to a file or a HF model
    directory, else unchanged (registered model names and None pass through)."""
    if not isinstance(value, (str, os.PathLike)) or os.path.isabs(value):
        return value
    if os.path.isfile(value) or os.path.isfile(os.path.join(value, "config.json")):
        return os.path.abspath(value)
    return value


class K15Config(AlgorithmConfig):
    """Config for :class:`rllib_k15.algorithm.algorithm.K15MirrorDescent`.

    >>> from rllib_k15 import K15Config
    >>> config = (K15Config().environment("k15/Arithmetic-v0", env_config={"difficulty": 1})
    ...           .training(tau=0.1, samples_per_problem=8, length_penalty_warmup_iters=5))
    """

    def __init__(self, algo_class=None):
        from rllib_k15.algorithm.algorithm import K15MirrorDescent

        super().__init__(algo_class=algo_class or K15MirrorDescent)
        for name, (default, _) in K15_FIELDS.items():
            setattr(self, name, default.copy() if isinstance(default, dict) else default)
        from rllib_k15.algorithm.env_runner import ReasoningEnvRunner

        self.env_runner_cls = ReasoningEnvRunner
        self.num_env_runners = 0
        self.lr = 2e-6
        self.grad_clip = 1.0
        self.grad_clip_by = "global_norm"

    def training(self, **kwargs) -> K15Config:
        """RLlib's ``training()`` plus the K15 fields (see ``K15_FIELDS``).

        A relative ``hf_model`` / ``o1_pruner_reference_stats`` path that exists is made
        absolute here, in the driver: Ray actors need not share the driver's working directory.
        """
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in K15_FIELDS}
        super().training(**kwargs)
        for name, value in own.items():
            if value is not NotProvided:
                setattr(
                    self, name, _absolute_if_local_path(value) if name in PATH_FIELDS else value
                )
        return self

    @staticmethod
    def extra_training_fields() -> tuple[str, ...]:
        """Names ``training()`` accepts on top of RLlib's own (for strict config files)."""
        return tuple(K15_FIELDS)

    @property
    def model_path(self) -> str:
        from rllib_k15.models import resolve_model

        return str(resolve_model(self.hf_model))

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_k15.algorithm.rl_module import CausalLMRLModule

        return RLModuleSpec(
            module_class=CausalLMRLModule,
            model_config={
                "model_path": self.model_path,
                "autocast_bf16": resolve_autocast(self.autocast_bf16),
                "gradient_checkpointing": self.gradient_checkpointing,
                # weight sync in the engine's dtype; bf16 with a per-iteration dither that
                # the (non-DeepSpeed) learner's bf16 forward shares (core/rounding.py)
                "engine_dtype": self.engine_dtype,
                "bf16_dither": self.bf16_rounding == "dither",
                "dither_forward": self.deepspeed is None,
                "seed": self.seed or 0,
            },
        )

    @property
    def engine_dtype(self) -> str:
        """The rollout engine's weight dtype: ``engine_options['dtype']``, 'auto' resolved."""
        from rllib_k15.hardware import decide_precision

        return decide_precision(self.engine_options.get("dtype", "auto")).dtype

    def get_default_learner_class(self):
        if self.deepspeed is not None:  # ZeRO engines instead of DDP
            from rllib_k15.distributed.deepspeed_learner import K15DeepSpeedLearner

            return K15DeepSpeedLearner
        from rllib_k15.algorithm.learner import K15TorchLearner

        return K15TorchLearner

    def validate(self) -> None:
        super().validate()
        errors = list(_field_errors(self))
        if errors:
            raise ValueError("Invalid K15Config:\n  " + "\n  ".join(errors))

    @property
    def train_batch_size_per_iteration(self) -> int:
        return self.problems_per_iteration * self.samples_per_problem


def _choice_error(name: str, value: Any, enum) -> str | None:
    try:
        enum(value)
    except ValueError:
        return f"`{name}` ({value!r}) must be one of {[e.value for e in enum]}"
    return None


def _partial_rollout_errors(c: K15Config):
    """Fields of partial rollouts (``partial_rollout_*``)."""
    budget, cap = c.partial_rollout_max_tokens, c.max_response_tokens
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or budget < 0
    ):
        yield f"`partial_rollout_max_tokens` ({budget!r}) must be None or an integer >= 0 (None/0 = off)"
    elif budget and isinstance(cap, int) and budget >= cap:
        yield (
            f"`partial_rollout_max_tokens` ({budget}) must be < max_response_tokens ({cap}) to "
            "split any response; use None to turn partial rollouts off"
        )
    groups = c.partial_rollout_max_groups
    if groups is not None and (
        not isinstance(groups, int) or isinstance(groups, bool) or groups < 1
    ):
        yield f"`partial_rollout_max_groups` ({groups!r}) must be None or an integer >= 1"
    if not isinstance(c.partial_rollout_train_old_segments, bool):
        yield (
            f"`partial_rollout_train_old_segments` ({c.partial_rollout_train_old_segments!r}) "
            "must be a bool"
        )


def _reference_errors(c: K15Config):
    """`reference_logprobs`: the engine's sampling log-probs are log π_θi only when the
    engine samples from π_θi unmodified."""
    if c.reference_logprobs not in ("learner", "engine"):
        yield f"`reference_logprobs` ({c.reference_logprobs!r}) must be 'learner' or 'engine'"
    elif c.reference_logprobs == "engine":
        changed = [f"{name}={getattr(c, name)!r}" for name in ("temperature", "top_p")
                   if getattr(c, name) != 1]  # fmt: skip
        if c.partial_rollout_max_tokens:
            changed.append(f"partial_rollout_max_tokens={c.partial_rollout_max_tokens!r}")
        if changed:
            yield (
                f"`reference_logprobs` ('engine') needs temperature 1, top_p 1 and no partial "
                f"rollouts (the sampling log-probs are not log π_θi otherwise); got "
                f"{', '.join(changed)}. Use 'learner'."
            )


def _baseline_loss_errors(c: K15Config):
    """Fields of the baseline losses (GRPO, ReST, O1-Pruner)."""
    if not isinstance(c.clip_eps, (int, float)) or not 0 < c.clip_eps < 1:
        yield f"`clip_eps` ({c.clip_eps!r}) must be a number in (0, 1)"
    if not isinstance(c.grpo_kl_beta, (int, float)) or c.grpo_kl_beta < 0:
        yield f"`grpo_kl_beta` ({c.grpo_kl_beta!r}) must be a number >= 0"
    if not isinstance(c.rest_top_k, int) or isinstance(c.rest_top_k, bool) or c.rest_top_k < 0:
        yield f"`rest_top_k` ({c.rest_top_k!r}) must be an integer >= 0 (0 = every correct one)"
    if not isinstance(c.o1_pruner_lambda, (int, float)) or c.o1_pruner_lambda < 0:
        yield f"`o1_pruner_lambda` ({c.o1_pruner_lambda!r}) must be a number >= 0"
    path = c.o1_pruner_reference_stats
    if c.loss == "o1_pruner" and not path:
        yield (
            "`o1_pruner_reference_stats` (None) must name the reference statistics file when "
            "`loss` is 'o1_pruner' (see rllib_k15.algorithm.o1_reference)"
        )
    elif path and not os.path.isfile(path):
        yield f"`o1_pruner_reference_stats` ({path!r}) is not a file"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sampling_error(sampling: Any) -> str | None:
    from rllib_k15.sampling.strategies import SamplingConfig

    if not isinstance(sampling, dict):
        return f"`sampling` ({sampling!r}) must be a mapping of SamplingConfig fields"
    try:
        SamplingConfig(**sampling)
    except (TypeError, ValueError) as err:
        return f"`sampling` ({sampling!r}): {err}"
    return None


def _field_errors(c: K15Config):
    """Yield one message per bad field, quoting the offending values."""
    for name, enum in (
        ("loss", LossType),
        ("baseline", Baseline),
        ("logprob_reduction", LogprobReduction),
    ):
        if (msg := _choice_error(name, getattr(c, name), enum)) is not None:
            yield msg
    for name in (
        "samples_per_problem",
        "problems_per_iteration",
        "max_response_tokens",
        "num_epochs",
        "minibatch_size",
        "micro_batch_size",
    ):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            yield f"`{name}` ({value!r}) must be an integer >= 1"
    if not isinstance(c.tau, (int, float)) or c.tau <= 0:
        yield f"`tau` ({c.tau!r}) must be a number > 0"
    if not _is_number(c.top_p) or not 0 < c.top_p <= 1:
        yield f"`top_p` ({c.top_p!r}) must be in (0, 1]"
    if not _is_number(c.temperature) or c.temperature < 0:
        yield f"`temperature` ({c.temperature!r}) must be a number >= 0"
    if not _is_number(c.length_penalty_weight) or c.length_penalty_weight < 0:
        yield f"`length_penalty_weight` ({c.length_penalty_weight!r}) must be a number >= 0"
    if (
        not isinstance(c.num_env_runners, int)
        or isinstance(c.num_env_runners, bool)
        or c.num_env_runners < 0
    ):
        yield f"`num_env_runners` ({c.num_env_runners!r}) must be an integer >= 0"
    if (msg := _sampling_error(c.sampling)) is not None:
        yield msg
    if not isinstance(c.length_penalty_warmup_iters, int) or c.length_penalty_warmup_iters < 0:
        yield f"`length_penalty_warmup_iters` ({c.length_penalty_warmup_iters!r}) must be an integer >= 0"
    if not isinstance(c.repeat_penalty, (int, float)) or c.repeat_penalty < 0:
        yield f"`repeat_penalty` ({c.repeat_penalty!r}) must be a number >= 0"
    if c.bf16_rounding not in ("dither", "nearest"):
        yield f"`bf16_rounding` ({c.bf16_rounding!r}) must be 'dither' or 'nearest'"
    if c.engine not in ("vllm", "hf"):
        yield f"`engine` ({c.engine!r}) must be 'vllm' or 'hf'"
    batch = (
        c.train_batch_size_per_iteration
        if isinstance(c.problems_per_iteration, int) and isinstance(c.samples_per_problem, int)
        else None
    )
    if batch and isinstance(c.minibatch_size, int) and c.minibatch_size > batch:
        yield (
            f"`minibatch_size` ({c.minibatch_size}) must be <= problems_per_iteration × "
            f"samples_per_problem ({c.problems_per_iteration} × {c.samples_per_problem} = {batch})"
        )
    if c.samples_per_problem == 1 and c.loss in ("opmd", "grpo"):
        yield "`samples_per_problem` (1) gives a zero advantage for every response; use >= 2"
    yield from _reference_errors(c)
    yield from _baseline_loss_errors(c)
    yield from _partial_rollout_errors(c)
    yield from learner_setting_errors(
        c.deepspeed,
        num_learners=c.num_learners,
        minibatch_size=c.minibatch_size,
        grad_clip_by=c.grad_clip_by,
    )
    if c.env is None:
        yield "`env` is not set; call .environment('k15/Arithmetic-v0', env_config={...})"
    try:
        _ = c.model_path
    except FileNotFoundError as err:
        yield f"`hf_model` ({c.hf_model!r}): {err}"
