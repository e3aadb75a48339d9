"""K15Config: the ``.training(...)`` builder and ``validate()`` for K15MirrorDescent.

Every K15-specific field is documented once, here, with its trade-off. YAML files under
``tuned_examples/`` map 1:1 onto the builder methods (``environment:``, ``training:``,
``env_runners:``, ``learners:``, ``debugging:`` sections), see :func:`rllib_k15.yaml_config`.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_k15.core.losses import LogprobReduction, LossType
from rllib_k15.core.rewards import Baseline
from rllib_k15.hardware import resolve_autocast

# name -> (default, help). The single source of truth for K15 fields: defaults, docs
# (README table, CLI help) and `training()` kwargs are all generated from it.
K15_FIELDS: dict[str, tuple[Any, str]] = {
    "hf_model": (
        "smollm2-135m-instruct",
        "Policy to train: a model-registry name (`k15 model list`) or a local HF directory.",
    ),
    "loss": (
        "opmd",
        "Registered policy loss (rllib_k15.core.losses.LossType). `opmd` is Kimi k1.5 eq. (3).",
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
        8,
        "k responses per problem. More samples = better baseline and more groups with reward variance, at linear generation cost.",
    ),
    "problems_per_iteration": (
        16,
        "Problems sampled per iteration. Batch = problems × k responses.",
    ),
    "max_response_tokens": (
        256,
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
        32,
        "Responses per optimizer step. Batch / minibatch_size optimizer steps per epoch.",
    ),
    "micro_batch_size": (
        8,
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
    "reset_optimizer_each_iteration": (
        True,
        "Reset optimizer state at each iteration start (report §2.3.2: each iteration is a new problem). Off = moments carry over (ablation).",
    ),
    "autocast_bf16": (
        "auto",
        "Learner forward/backward in bf16 autocast over fp32 master weights: ≈4× faster matmuls on GPUs and AVX512-BF16/AMX CPUs, ~40× SLOWER where bf16 is emulated (AVX2-only CPUs). `auto` decides from the hardware (rllib_k15.hardware).",
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
    "eval_interval": (0, "Evaluate held-out Pass@1 every N iterations (0 = never)."),
    "eval_problems": (
        32,
        "Held-out problems per evaluation (indices disjoint from training via `eval_env_config`).",
    ),
    "eval_samples": (4, "Samples per held-out problem (Pass@1 is averaged over them)."),
    "eval_env_config": ({}, "env_config overrides for the held-out set (e.g. another seed)."),
}


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
        """RLlib's ``training()`` plus the K15 fields (see ``K15_FIELDS``)."""
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in K15_FIELDS}
        super().training(**kwargs)
        for name, value in own.items():
            if value is not NotProvided:
                setattr(self, name, value)
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
            },
        )

    def get_default_learner_class(self):
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
    if not 0 < c.top_p <= 1:
        yield f"`top_p` ({c.top_p!r}) must be in (0, 1]"
    if c.temperature < 0:
        yield f"`temperature` ({c.temperature!r}) must be >= 0"
    if c.length_penalty_weight < 0:
        yield f"`length_penalty_weight` ({c.length_penalty_weight!r}) must be >= 0"
    if not isinstance(c.length_penalty_warmup_iters, int) or c.length_penalty_warmup_iters < 0:
        yield f"`length_penalty_warmup_iters` ({c.length_penalty_warmup_iters!r}) must be an integer >= 0"
    if not isinstance(c.repeat_penalty, (int, float)) or c.repeat_penalty < 0:
        yield f"`repeat_penalty` ({c.repeat_penalty!r}) must be a number >= 0"
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
    if c.samples_per_problem == 1 and c.loss == "opmd":
        yield "`samples_per_problem` (1) gives a zero advantage for every response; use >= 2"
    if c.env is None:
        yield "`env` is not set; call .environment('k15/Arithmetic-v0', env_config={...})"
    try:
        _ = c.model_path
    except FileNotFoundError as err:
        yield f"`hf_model` ({c.hf_model!r}): {err}"
