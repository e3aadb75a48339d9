"""K15Config: the ``.training(...)`` builder and ``validate()`` for K15MirrorDescent.

Every K15-specific field is declared and documented once, with its type, default and
trade-off, in :class:`rllib_k15.algorithm.k15_fields.K15Fields`. YAML files under
``tuned_examples/`` map 1:1 onto the builder methods (``environment:``, ``training:``,
``env_runners:``, ``learners:``, ``debugging:`` sections), see :func:`rllib_k15.yaml_config`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.from_config import _NotProvided as NotProvidedType

from rllib_k15.algorithm.async_rollouts import async_rollout_errors
from rllib_k15.algorithm.k15_fields import K15Fields
from rllib_k15.algorithm.lora import lora_errors
from rllib_k15.core.losses import LogprobReduction, LossAggregation, LossType
from rllib_k15.core.rewards import Baseline
from rllib_k15.distributed.deepspeed_config import learner_setting_errors
from rllib_k15.hardware import resolve_autocast

_DEFAULTS = K15Fields()
# name -> (default, help), in declaration order: the shape the trainer, the experiment files
# and the tests read. Derived from K15Fields, which declares (and documents) each field once.
logger = logging.getLogger(__name__)

K15_FIELDS: dict[str, tuple[Any, str]] = {
    f.name: (getattr(_DEFAULTS, f.name), f.metadata["help"]) for f in fields(K15Fields)
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

    On top of RLlib's ``AlgorithmConfig`` it has one attribute per field of
    :class:`~rllib_k15.algorithm.k15_fields.K15Fields` (same name, type and default; the
    annotations below mirror it), set through :meth:`training`.

    >>> from rllib_k15 import K15Config
    >>> config = (K15Config().environment("k15/Arithmetic-v0", env_config={"difficulty": 1})
    ...           .training(tau=0.1, samples_per_problem=8, length_penalty_warmup_iters=5))
    """

    hf_model: str
    loss: str
    loss_aggregation: str
    clip_eps: float
    grpo_kl_beta: float
    rest_top_k: int
    o1_pruner_lambda: float
    o1_pruner_reference_stats: str | None
    tau: float
    baseline: str
    samples_per_problem: int
    problems_per_iteration: int
    max_response_tokens: int
    dynamic_sampling: bool
    dynamic_sampling_max_rounds: int
    async_rollouts: bool
    mask_truncated_responses: bool
    overlong_buffer_tokens: int
    overlong_penalty_weight: float
    temperature: float
    top_p: float
    logprob_reduction: str
    length_penalty_weight: float
    length_penalty_warmup_iters: int
    num_epochs: int
    minibatch_size: int
    micro_batch_size: int
    padding_free: bool
    padding_free_bin_tokens: int | None
    shared_prompt_packing: bool
    shared_prompt_bin_tokens: int | None
    attn_implementation: str | None
    lora: dict[str, Any] | None
    optimizer: str
    muon_update_rms: float
    weight_decay: float
    adam_betas: tuple[float, float]
    reference_logprobs: str
    reset_optimizer_each_iteration: bool
    autocast_bf16: bool | str
    bf16_rounding: str
    gradient_checkpointing: bool
    engine: str
    engine_options: dict[str, Any]
    repeat_detection: bool
    repeat_config: dict[str, Any]
    repeat_penalty: float
    sampling: dict[str, Any]
    partial_rollout_max_tokens: int | None
    partial_rollout_train_old_segments: bool
    partial_rollout_max_groups: int | None
    eval_interval: int
    eval_problems: int
    eval_samples: int
    eval_env_config: dict[str, Any]
    use_splits: bool
    env_runner_sample_timeout_s: float | str | None
    env_runner_min_tokens_per_s: float
    deepspeed: dict[str, Any] | None

    def __init__(self, algo_class=None):
        from rllib_k15.algorithm.algorithm import K15MirrorDescent

        super().__init__(algo_class=algo_class or K15MirrorDescent)
        defaults = K15Fields()  # a fresh object for each mutable default (dicts)
        for f in fields(K15Fields):
            setattr(self, f.name, getattr(defaults, f.name))
        from rllib_k15.algorithm.env_runner import ReasoningEnvRunner

        self.env_runner_cls = ReasoningEnvRunner
        self.num_env_runners = 0
        self.lr = 2e-6
        self.grad_clip = 1.0
        self.grad_clip_by = "global_norm"

    def training(
        self,
        *,
        hf_model: str | NotProvidedType = NotProvided,
        loss: str | NotProvidedType = NotProvided,
        loss_aggregation: str | NotProvidedType = NotProvided,
        clip_eps: float | NotProvidedType = NotProvided,
        grpo_kl_beta: float | NotProvidedType = NotProvided,
        rest_top_k: int | NotProvidedType = NotProvided,
        o1_pruner_lambda: float | NotProvidedType = NotProvided,
        o1_pruner_reference_stats: str | None | NotProvidedType = NotProvided,
        tau: float | NotProvidedType = NotProvided,
        baseline: str | NotProvidedType = NotProvided,
        samples_per_problem: int | NotProvidedType = NotProvided,
        problems_per_iteration: int | NotProvidedType = NotProvided,
        max_response_tokens: int | NotProvidedType = NotProvided,
        dynamic_sampling: bool | NotProvidedType = NotProvided,
        dynamic_sampling_max_rounds: int | NotProvidedType = NotProvided,
        async_rollouts: bool | NotProvidedType = NotProvided,
        mask_truncated_responses: bool | NotProvidedType = NotProvided,
        overlong_buffer_tokens: int | NotProvidedType = NotProvided,
        overlong_penalty_weight: float | NotProvidedType = NotProvided,
        temperature: float | NotProvidedType = NotProvided,
        top_p: float | NotProvidedType = NotProvided,
        logprob_reduction: str | NotProvidedType = NotProvided,
        length_penalty_weight: float | NotProvidedType = NotProvided,
        length_penalty_warmup_iters: int | NotProvidedType = NotProvided,
        num_epochs: int | NotProvidedType = NotProvided,
        minibatch_size: int | NotProvidedType = NotProvided,
        micro_batch_size: int | NotProvidedType = NotProvided,
        padding_free: bool | NotProvidedType = NotProvided,
        padding_free_bin_tokens: int | None | NotProvidedType = NotProvided,
        shared_prompt_packing: bool | NotProvidedType = NotProvided,
        shared_prompt_bin_tokens: int | None | NotProvidedType = NotProvided,
        attn_implementation: str | None | NotProvidedType = NotProvided,
        lora: dict[str, Any] | None | NotProvidedType = NotProvided,
        optimizer: str | NotProvidedType = NotProvided,
        muon_update_rms: float | NotProvidedType = NotProvided,
        weight_decay: float | NotProvidedType = NotProvided,
        adam_betas: tuple[float, float] | NotProvidedType = NotProvided,
        reference_logprobs: str | NotProvidedType = NotProvided,
        reset_optimizer_each_iteration: bool | NotProvidedType = NotProvided,
        autocast_bf16: bool | str | NotProvidedType = NotProvided,
        bf16_rounding: str | NotProvidedType = NotProvided,
        gradient_checkpointing: bool | NotProvidedType = NotProvided,
        engine: str | NotProvidedType = NotProvided,
        engine_options: dict[str, Any] | NotProvidedType = NotProvided,
        repeat_detection: bool | NotProvidedType = NotProvided,
        repeat_config: dict[str, Any] | NotProvidedType = NotProvided,
        repeat_penalty: float | NotProvidedType = NotProvided,
        sampling: dict[str, Any] | NotProvidedType = NotProvided,
        partial_rollout_max_tokens: int | None | NotProvidedType = NotProvided,
        partial_rollout_train_old_segments: bool | NotProvidedType = NotProvided,
        partial_rollout_max_groups: int | None | NotProvidedType = NotProvided,
        eval_interval: int | NotProvidedType = NotProvided,
        eval_problems: int | NotProvidedType = NotProvided,
        eval_samples: int | NotProvidedType = NotProvided,
        eval_env_config: dict[str, Any] | NotProvidedType = NotProvided,
        use_splits: bool | NotProvidedType = NotProvided,
        env_runner_sample_timeout_s: float | str | None | NotProvidedType = NotProvided,
        env_runner_min_tokens_per_s: float | NotProvidedType = NotProvided,
        deepspeed: dict[str, Any] | None | NotProvidedType = NotProvided,
        **kwargs,
    ) -> K15Config:
        """RLlib's ``training()`` plus the K15 fields.

        Each K15 keyword sets the attribute of the same name; its meaning, type and default
        are documented on :class:`~rllib_k15.algorithm.k15_fields.K15Fields` (``help(K15Fields)``
        or ``K15_FIELDS[name][1]``). Keywords left at ``NotProvided`` keep the current value.
        ``num_epochs`` and ``minibatch_size`` are K15 fields here and do not reach RLlib's
        ``training()``; every other keyword (``lr``, ``grad_clip``, ...) goes to
        ``AlgorithmConfig.training``, which raises ``TypeError`` for an unknown one.

        A relative ``hf_model`` / ``o1_pruner_reference_stats`` path that exists is made
        absolute here, in the driver: Ray actors need not share the driver's working directory.
        """
        # first statement: locals() holds exactly the arguments
        own = {k: v for k, v in locals().items() if k in K15_FIELDS and v is not NotProvided}
        super().training(**kwargs)
        for name, value in own.items():
            setattr(self, name, _absolute_if_local_path(value) if name in PATH_FIELDS else value)
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
                "lora": dict(self.lora) if self.lora else None,
                "padding_free": self.padding_free,
                "padding_free_bin_tokens": self.padding_free_bin_tokens,
                "shared_prompt_packing": self.shared_prompt_packing,
                "shared_prompt_bin_tokens": self.shared_prompt_bin_tokens,
                "attn_implementation": self.attn_implementation,
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
        for note in self.resolve_splits():
            logger.warning(note)

    def resolve_splits(self) -> list[str]:
        """Fill in the default ``train`` / ``test`` splits (``use_splits``; see
        :mod:`rllib_k15.algorithm.default_splits`); returns notes on what was cut or is weak.
        Idempotent, so it also runs in ``validate``."""
        if not self.use_splits or not self.env or not isinstance(self.env, str):
            return []
        from rllib_k15.algorithm.default_splits import resolve_splits

        resolved = resolve_splits(
            self.env,
            self.env_config,
            self.eval_env_config,
            eval_problems=self.eval_problems,
            evaluates=bool(self.eval_interval),
        )
        if resolved.env_config != dict(self.env_config or {}):
            self.env_config = resolved.env_config
        if resolved.eval_env_config != dict(self.eval_env_config or {}):
            self.eval_env_config = resolved.eval_env_config
        return resolved.notes

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
        yield (
            f"`partial_rollout_max_tokens` ({budget!r}) must be None or an integer >= 0 "
            "(None/0 = off)"
        )
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


def _dynamic_sampling_errors(c: K15Config):
    """DAPO dynamic sampling: a bool, a round count, and no partial rollouts."""
    if not isinstance(c.dynamic_sampling, bool):
        yield f"`dynamic_sampling` ({c.dynamic_sampling!r}) must be true or false"
    rounds = c.dynamic_sampling_max_rounds
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
        yield f"`dynamic_sampling_max_rounds` ({rounds!r}) must be an integer >= 0"
    if c.dynamic_sampling is True and c.partial_rollout_max_tokens:
        yield (
            "`dynamic_sampling` does not work with partial rollouts yet "
            f"(`partial_rollout_max_tokens` = {c.partial_rollout_max_tokens}): a group's "
            "rewards are known only when its last segment finishes; turn one of them off"
        )


def _overlong_errors(c: K15Config):
    """The DAPO overlong options: a buffer inside the cap, a non-negative weight, a bool."""
    if not isinstance(c.mask_truncated_responses, bool):
        yield f"`mask_truncated_responses` ({c.mask_truncated_responses!r}) must be true or false"
    buffer, cap = c.overlong_buffer_tokens, c.max_response_tokens
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 0:
        yield f"`overlong_buffer_tokens` ({buffer!r}) must be an integer >= 0 (0 = off)"
    elif buffer and isinstance(cap, int) and buffer >= cap:
        yield (
            f"`overlong_buffer_tokens` ({buffer}) must be < max_response_tokens ({cap}): the "
            "punishment ramps up over the last tokens before the cap"
        )
    if not _is_number(c.overlong_penalty_weight) or c.overlong_penalty_weight < 0:
        yield f"`overlong_penalty_weight` ({c.overlong_penalty_weight!r}) must be a number >= 0"


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
        ("loss_aggregation", LossAggregation),
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
    if not isinstance(c.padding_free, bool):
        yield f"`padding_free` ({c.padding_free!r}) must be true or false"
    bins = c.padding_free_bin_tokens
    if bins is not None and (not isinstance(bins, int) or isinstance(bins, bool) or bins < 1):
        yield f"`padding_free_bin_tokens` ({bins!r}) must be an integer >= 1 or null"
    if c.attn_implementation is not None and not isinstance(c.attn_implementation, str):
        yield f"`attn_implementation` ({c.attn_implementation!r}) must be a string or null"
    yield from _shared_prompt_errors(c)
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
    timeout = c.env_runner_sample_timeout_s
    if timeout not in ("auto", None) and (not _is_number(timeout) or timeout <= 0):
        yield f"`env_runner_sample_timeout_s` ({timeout!r}) must be 'auto', None or a number > 0"
    if not _is_number(c.env_runner_min_tokens_per_s) or c.env_runner_min_tokens_per_s <= 0:
        yield (
            f"`env_runner_min_tokens_per_s` ({c.env_runner_min_tokens_per_s!r}) must be a "
            "number > 0"
        )
    if not isinstance(c.length_penalty_warmup_iters, int) or c.length_penalty_warmup_iters < 0:
        yield (
            f"`length_penalty_warmup_iters` ({c.length_penalty_warmup_iters!r}) must be an "
            "integer >= 0"
        )
    if not isinstance(c.repeat_penalty, (int, float)) or c.repeat_penalty < 0:
        yield f"`repeat_penalty` ({c.repeat_penalty!r}) must be a number >= 0"
    yield from _overlong_errors(c)
    yield from _dynamic_sampling_errors(c)
    yield from async_rollout_errors(c)
    yield from lora_errors(c.lora)
    if c.lora and c.deepspeed is not None:
        yield "`lora` does not work with `deepspeed` yet: use full fine-tuning there"
    if c.optimizer not in ("adamw", "muon"):
        yield f"`optimizer` ({c.optimizer!r}) must be 'adamw' or 'muon'"
    elif c.optimizer == "muon" and c.deepspeed is not None:
        yield "`optimizer` 'muon' does not work with `deepspeed` (it builds its own optimizer)"
    if not isinstance(c.muon_update_rms, (int, float)) or not c.muon_update_rms > 0:
        yield f"`muon_update_rms` ({c.muon_update_rms!r}) must be a number > 0"
    if c.loss_aggregation != LossAggregation.SEQ_MEAN_TOKEN_MEAN.value and c.loss != "grpo":
        yield (
            f"`loss_aggregation` ({c.loss_aggregation!r}) applies to the token-level loss "
            f"`grpo`; `{c.loss}` is sequence-level: choose `logprob_reduction` instead"
        )
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


def _shared_prompt_errors(c: K15Config) -> Iterator[str]:
    """`shared_prompt_packing` needs a kernel that takes a custom 4-D attention mask."""
    if not isinstance(c.shared_prompt_packing, bool):
        yield f"`shared_prompt_packing` ({c.shared_prompt_packing!r}) must be true or false"
        return
    bins = c.shared_prompt_bin_tokens
    if bins is not None and (not isinstance(bins, int) or isinstance(bins, bool) or bins < 1):
        yield f"`shared_prompt_bin_tokens` ({bins!r}) must be an integer >= 1 or null"
    if not c.shared_prompt_packing:
        return
    if c.attn_implementation not in (None, "sdpa", "eager"):
        yield (
            f"`shared_prompt_packing` needs `attn_implementation` sdpa or eager (a custom "
            f"4-D attention mask), not {c.attn_implementation!r}"
        )
    if c.padding_free:
        yield "`shared_prompt_packing` and `padding_free` are two layouts: choose one"
