"""One home for the DeepSpeed configuration of every trainer (RL learners and offline SFT/DPO).

A user writes a few settings (``training(deepspeed={"zero_stage": 3})`` or the ``deepspeed:``
block of a YAML); :func:`build_deepspeed_config` turns them into the dict that
``deepspeed.initialize(config=...)`` takes, and :func:`dist_backend` picks the
``torch.distributed`` backend. The RLlib learner (:mod:`.deepspeed_learner`) and the Ray
Train runner of the offline trainers (:mod:`.offline`) both call these two functions, so the
two paths cannot drift apart.

ZeRO stages (what each rank holds, P = parameters, G = gradients, O = optimizer state):

====== ============================== ==============================================
stage  sharded across the N ranks     use when
====== ============================== ==============================================
0      nothing (DDP-like all-reduce)  the model + Adam state fit on one device
1      O                              Adam state (2× fp32 P) is what does not fit
2      O, G                           + gradients; same traffic as DDP: the default
3      O, G, P                        the parameters alone do not fit; costs one
                                      all-gather of P per forward and per backward
====== ============================== ==============================================

Offload moves the optimizer state (``offload_optimizer``, stage >= 1) or the parameters
(``offload_params``, stage 3) to host RAM: it trades GPU memory for PCIe traffic and is a
no-op on a CPU-only machine.

Gradient accumulation is driven by the caller (``managed_gradient_accumulation: false``):
every ``engine.backward`` accumulates, and ``engine.step()`` is the boundary that reduces and
updates. That fits the learner's variable number of micro-batches per optimizer step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "DeepSpeedSettings",
    "build_deepspeed_config",
    "dist_backend",
    "import_deepspeed",
    "learner_setting_errors",
    "make_adamw",
    "resolve_bf16",
]

_FIELD_DOCS = {
    "zero_stage": "ZeRO stage 0-3 (see the module docstring): 2 shards gradients and Adam "
    "state at DDP's traffic; 3 also shards the parameters (an all-gather per forward/backward).",
    "offload_optimizer": "Keep the Adam state in host RAM (stage >= 1): frees 2× fp32 "
    "parameters of GPU memory per rank for PCIe traffic and a CPU Adam step. No-op on CPU.",
    "offload_params": "Keep the parameters in host RAM between uses (stage 3 only). Slowest "
    "option; for models that do not fit even when sharded. No-op on CPU.",
    "bf16": "bf16 weights/activations with fp32 master weights: true, false or 'auto' "
    "(rllib_k15.hardware: GPUs with bf16, AVX512-BF16/AMX CPUs). Emulated and slow on "
    "AVX2-only CPUs.",
    "overlap_comm": "Overlap gradient reduction with the backward pass (stage 2/3). Faster on "
    "GPUs; more buffer memory.",
    "reduce_bucket_size": "Elements per gradient-reduction bucket (stage 1-3). Larger = "
    "fewer, bigger messages, more memory.",
    "extra": "Raw DeepSpeed config keys merged last (escape hatch, e.g. "
    "{'zero_optimization': {'stage3_max_live_parameters': 1e8}}).",
}


@dataclass(frozen=True)
class DeepSpeedSettings:
    """The user-facing DeepSpeed settings (the ``deepspeed`` config field)."""

    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    bf16: bool | str = "auto"
    overlap_comm: bool = False
    reduce_bucket_size: int = 50_000_000
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        errors = list(_setting_errors(self))
        if errors:
            raise ValueError("Invalid `deepspeed` settings:\n  " + "\n  ".join(errors))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | DeepSpeedSettings) -> DeepSpeedSettings:
        """Settings from a config dict; unknown keys are an error naming the key."""
        if isinstance(values, DeepSpeedSettings):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"`deepspeed` ({values!r}) must be a dict of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"`deepspeed` has unknown keys {unknown}; known: {sorted(known)} "
                "(raw DeepSpeed keys go under `extra`)"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["extra"] = dict(self.extra)
        return out

    @staticmethod
    def field_docs() -> dict[str, str]:
        """One line per setting (CLI help, docs)."""
        return dict(_FIELD_DOCS)


def _setting_errors(s: DeepSpeedSettings):
    if (
        not isinstance(s.zero_stage, int)
        or isinstance(s.zero_stage, bool)
        or not (0 <= s.zero_stage <= 3)
    ):
        yield f"`deepspeed.zero_stage` ({s.zero_stage!r}) must be 0, 1, 2 or 3"
    for name in ("offload_optimizer", "offload_params", "overlap_comm"):
        if not isinstance(getattr(s, name), bool):
            yield f"`deepspeed.{name}` ({getattr(s, name)!r}) must be true or false"
    if s.offload_optimizer is True and s.zero_stage == 0:
        yield "`deepspeed.offload_optimizer` (true) needs `zero_stage` >= 1 (got 0)"
    if s.offload_params is True and s.zero_stage != 3:
        yield f"`deepspeed.offload_params` (true) needs `zero_stage` 3 (got {s.zero_stage!r})"
    if s.bf16 not in (True, False, "auto"):
        yield f"`deepspeed.bf16` ({s.bf16!r}) must be true, false or 'auto'"
    bucket = s.reduce_bucket_size
    if not isinstance(bucket, int) or isinstance(bucket, bool) or bucket < 1:
        yield f"`deepspeed.reduce_bucket_size` ({bucket!r}) must be an integer >= 1"
    if not isinstance(s.extra, Mapping):
        yield f"`deepspeed.extra` ({s.extra!r}) must be a dict of raw DeepSpeed keys"


def resolve_bf16(setting: bool | str) -> bool:
    """``"auto"`` -> bf16 only where the hardware has native bf16 matmuls (rllib_k15.hardware)."""
    from rllib_k15.hardware import preferred_dtype

    if setting == "auto":
        return preferred_dtype() == "bfloat16"
    return bool(setting)


def dist_backend(use_gpu: bool | None = None) -> str:
    """``torch.distributed`` backend: ``nccl`` between GPUs, ``gloo`` on CPU.

    ``use_gpu=None`` asks torch whether this process sees a GPU.
    """
    if use_gpu is None:
        import torch

        use_gpu = torch.cuda.is_available()
    return "nccl" if use_gpu else "gloo"


def _merge(base: dict, extra: Mapping) -> dict:
    """Recursive dict update: ``extra`` wins, nested dicts merge key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def build_deepspeed_config(
    settings: DeepSpeedSettings | Mapping[str, Any],
    *,
    micro_batch_size: int,
    grad_clip: float | None,
    bf16: bool | None = None,
) -> dict[str, Any]:
    """The ``deepspeed.initialize(config=...)`` dict for these settings.

    micro_batch_size: rows per forward/backward on one rank (bookkeeping only: the caller
    feeds the engine itself). grad_clip: global-norm clip, None/0 = off. bf16: the resolved
    precision decision (default: :func:`resolve_bf16` of ``settings.bf16`` on this host).
    """
    s = DeepSpeedSettings.from_dict(settings)
    if not isinstance(micro_batch_size, int) or micro_batch_size < 1:
        raise ValueError(f"`micro_batch_size` ({micro_batch_size!r}) must be an integer >= 1")
    if grad_clip is not None and grad_clip < 0:
        raise ValueError(f"`grad_clip` ({grad_clip!r}) must be None or >= 0")
    use_bf16 = resolve_bf16(s.bf16) if bf16 is None else bf16
    zero: dict[str, Any] = {"stage": s.zero_stage}
    if s.zero_stage >= 1:
        zero["reduce_bucket_size"] = s.reduce_bucket_size
        zero["overlap_comm"] = s.overlap_comm
    if s.zero_stage == 3:
        # Small tensors (norms, biases) stay whole on every rank: gathering them costs more
        # latency than the memory they take.
        zero["stage3_param_persistence_threshold"] = 10_000
    if s.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": _has_gpu()}
    if s.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": _has_gpu()}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(grad_clip or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": bool(use_bf16)},
        "fp16": {"enabled": False},
        # our AdamW (torch) under ZeRO; with offload DeepSpeed's CPU Adam is used instead
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return _merge(config, s.extra)


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def import_deepspeed():
    """Import deepspeed with the accelerator pinned to the hardware.

    Without a GPU, ``DS_ACCELERATOR=cpu`` is set first so DeepSpeed does not probe for
    accelerators (and never picks a half-installed one); with a GPU it detects CUDA itself.
    """
    if not _has_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as err:  # pragma: no cover - depends on the install route
        raise ImportError(
            "DeepSpeed is not installed: `pip install 'rllib-k15[cpu]'` (or `[gpu]`) installs "
            "deepspeed==0.19.8"
        ) from err
    return deepspeed


def make_adamw(
    settings: DeepSpeedSettings | Mapping[str, Any],
    params,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
):
    """The AdamW every DeepSpeed trainer uses: torch's, or DeepSpeed's CPU Adam (AdamW mode)
    when the optimizer state is offloaded to host RAM (DeepSpeed refuses a torch optimizer
    there; the CPU Adam op is JIT-compiled on first use and needs a C++ compiler)."""
    s = DeepSpeedSettings.from_dict(settings)
    if s.offload_optimizer:
        import_deepspeed()
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(
            params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, adamw_mode=True
        )
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def learner_setting_errors(
    deepspeed: Mapping[str, Any] | None,
    *,
    num_learners: int,
    minibatch_size: Any,
    grad_clip_by: str,
) -> list[str]:
    """Messages for a K15Config whose ``deepspeed`` field is set (empty list = fine)."""
    if deepspeed is None:
        return []
    try:
        DeepSpeedSettings.from_dict(deepspeed)
    except ValueError as err:
        return [str(err)]
    errors = []
    if not isinstance(num_learners, int) or num_learners < 1:
        errors.append(
            f"`deepspeed` needs learner actors with a process group: `num_learners` "
            f"({num_learners!r}) must be >= 1 (.learners(num_learners=N))"
        )
    elif isinstance(minibatch_size, int) and minibatch_size % num_learners:
        errors.append(
            f"`minibatch_size` ({minibatch_size}) must be divisible by `num_learners` "
            f"({num_learners}): each learner takes minibatch_size / num_learners rows per step"
        )
    if grad_clip_by != "global_norm":
        errors.append(
            f"`grad_clip_by` ({grad_clip_by!r}) must be 'global_norm' with `deepspeed` "
            "(DeepSpeed clips the global gradient norm only)"
        )
    return errors
