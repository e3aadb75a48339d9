"""An RLModule whose training forward runs through a DeepSpeed engine (RLlib's
``TorchDDPRLModule``, but for DeepSpeed), and the ZeRO-3 gather that weight sync needs.

The engine wraps the whole :class:`~rllib_k15.algorithm.rl_module.CausalLMRLModule`, so
every training forward enters it through ``engine(batch)``: DeepSpeed's hooks (ZeRO-3
parameter all-gathers, backward bookkeeping) need that entry. The wrapped module keeps its
plain Hugging Face parameter names, so checkpoints and EnvRunner weights look exactly like
those of a single-process run.

ZeRO-3 shards the parameters: no rank holds the whole model, and RLlib reads the weights
(weight sync to the EnvRunners, checkpoints) from learner 0 ALONE, where a collective gather
would deadlock. So after every update — and after build and restore — all ranks gather the
parameters together once (:meth:`DeepSpeedRLModule.refresh_full_state`); learner 0 keeps a
CPU copy and serves ``get_state`` from it: one gather, then RLlib's normal broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

__all__ = ["DeepSpeedRLModule", "held_bytes", "storage_bytes"]


class DeepSpeedRLModule(RLModule, torch.nn.Module):
    """Wrap ``engine.module`` (an RLModule) so RLlib's Learner can keep calling it.

    keeps_full_state: whether this rank keeps the gathered ZeRO-3 weights (learner 0 does:
    it is the one RLlib asks for weights and checkpoints).
    """

    framework = "torch"

    def __init__(self, engine: Any, *, keeps_full_state: bool) -> None:
        torch.nn.Module.__init__(self)
        # RLModule.__init__ is not called (as in TorchDDPRLModule): only its interface is used.
        self.engine = engine
        inner = self.unwrapped()
        self.observation_space = inner.observation_space
        self.action_space = inner.action_space
        self.inference_only = inner.inference_only
        self.learner_only = getattr(inner, "learner_only", False)
        self.model_config = inner.model_config
        self.catalog = getattr(inner, "catalog", None)
        self.config = getattr(inner, "config", None)
        self.keeps_full_state = keeps_full_state
        self._full_state: dict[str, torch.Tensor] | None = None

    # ----------------------------------------------------------------- forward passes
    def unwrapped(self) -> RLModule:
        return self.engine.module

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self.engine(batch, **kwargs)

    def _forward(self, *args, **kwargs):
        return self.unwrapped()._forward(*args, **kwargs)

    def _forward_inference(self, *args, **kwargs):
        return self.unwrapped()._forward_inference(*args, **kwargs)

    def _forward_exploration(self, *args, **kwargs):
        return self.unwrapped()._forward_exploration(*args, **kwargs)

    def is_stateful(self) -> bool:
        return self.unwrapped().is_stateful()

    def get_initial_state(self) -> Any:
        return self.unwrapped().get_initial_state()

    def get_inference_action_dist_cls(self, *args, **kwargs):
        return self.unwrapped().get_inference_action_dist_cls(*args, **kwargs)

    def get_exploration_action_dist_cls(self, *args, **kwargs):
        return self.unwrapped().get_exploration_action_dist_cls(*args, **kwargs)

    def get_train_action_dist_cls(self, *args, **kwargs):
        return self.unwrapped().get_train_action_dist_cls(*args, **kwargs)

    # ----------------------------------------------------------------- ZeRO-3 weights
    @property
    def zero3(self) -> bool:
        """Whether the parameters are sharded across ranks (ZeRO stage 3)."""
        return bool(self.engine.zero_optimization_partition_weights())

    def gather_full_state(self, keep: bool = True) -> dict[str, torch.Tensor] | None:
        """The whole model's state dict on CPU (``keep``) — COLLECTIVE under ZeRO-3: every
        rank must call it at the same time. Without ZeRO-3 it is a local copy."""
        inner = self.unwrapped()
        if not self.zero3:
            return _cpu_copy(inner.state_dict()) if keep else None
        deepspeed = _deepspeed()
        with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
            return _cpu_copy(inner.state_dict()) if keep else None

    def refresh_full_state(self) -> None:
        """Gather the ZeRO-3 shards once (collective) and keep them where RLlib reads them."""
        if self.zero3:
            self._full_state = self.gather_full_state(keep=self.keeps_full_state)

    def get_state(self, *args, inference_only: bool = False, **kwargs) -> dict[str, Any]:
        if not self.zero3:
            return self.unwrapped().get_state(*args, inference_only=inference_only, **kwargs)
        if self._full_state is None:
            raise RuntimeError(
                "ZeRO-3: this learner does not hold the gathered weights (learner 0 does; "
                "RLlib reads weights and checkpoints from it). To compare all learners call "
                "`gather_full_state()` on every learner at once (LearnerGroup.foreach_learner)."
            )
        # bf16 shards (DeepSpeed's bf16 mode) as fp32: numpy has no bf16
        return convert_to_numpy({k: _fp32_if_half(v) for k, v in self._full_state.items()})

    def set_state(self, state: dict[str, Any]) -> None:
        """Load full weights into the module AND the optimizer's fp32 master copy (ZeRO
        steps from that copy: without the refresh the next step would undo the load).
        Under ZeRO-3 this is collective (LearnerGroup.set_state calls every learner): rank 0
        writes into the gathered parameters, DeepSpeed re-shards them on exit."""
        inner = self.unwrapped()
        if not self.zero3:
            inner.set_state(state)
        else:
            tensors = convert_to_torch_tensor(state)
            deepspeed = _deepspeed()
            with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=0):
                if torch.distributed.get_rank() == 0:
                    inner.load_state_dict(tensors, strict=False)
        optimizer = self.engine.optimizer
        if hasattr(optimizer, "refresh_fp32_params"):
            optimizer.refresh_fp32_params()
        self.refresh_full_state()

    # ----------------------------------------------------------------- checkpoints
    def save_to_path(self, path=None, *, state=None, **kwargs):
        """Saved as the plain inner module (its class, full weights): `k15 export` and
        non-DeepSpeed runs can load it."""
        state = self.get_state() if state is None else state
        return self.unwrapped().save_to_path(path, state=state, **kwargs)

    def get_metadata(self, *args, **kwargs):
        return self.unwrapped().get_metadata(*args, **kwargs)

    def get_ctor_args_and_kwargs(self):
        return self.unwrapped().get_ctor_args_and_kwargs()

    def get_checkpointable_components(self):
        return []


def _fp32_if_half(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() and tensor.itemsize < 4 else tensor


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _deepspeed():
    from rllib_k15.distributed.deepspeed_config import import_deepspeed

    return import_deepspeed()


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def storage_bytes(tensors: Iterable[torch.Tensor], seen: set[int] | None = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once;
    ``seen`` carries the storages already counted across calls)."""
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        if t.device.type == "meta" or t.numel() == 0:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def held_bytes(engine: Any) -> dict[str, int]:
    """Bytes of parameters and optimizer state this rank actually holds.

    Counts every distinct storage once: the module's parameters (under ZeRO-3 the local
    shard ``ds_tensor``; the full ``data`` is released between uses), DeepSpeed's flat
    parameter partitions (ZeRO-1/2: full-precision-of-training copy + fp32 partition;
    ZeRO-3: fp32 partition) and the Adam moments of the wrapped torch optimizer.
    """
    params = [
        p.ds_tensor if hasattr(p, "ds_tensor") else p.data for p in engine.module.parameters()
    ]
    zero_opt = engine.optimizer
    flat = []
    for name in (
        "bit16_groups_flat",
        "single_partition_of_fp32_groups",
        "fp16_partitioned_groups_flat",
        "fp32_partitioned_groups_flat",
    ):
        flat.extend(_tensors(getattr(zero_opt, name, None)))
    base = getattr(zero_opt, "optimizer", zero_opt)
    seen: set[int] = set()
    param_bytes = storage_bytes(params, seen) + storage_bytes(flat, seen)
    optim_bytes = storage_bytes(_tensors(list(base.state.values())), seen)
    return {"param_bytes": param_bytes, "optimizer_state_bytes": optim_bytes}
