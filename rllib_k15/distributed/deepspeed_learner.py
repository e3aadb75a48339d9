"""K15DeepSpeedLearner: the K15 learner with a DeepSpeed ZeRO engine instead of torch DDP.

Selected by the config, not by code::

    config = (K15Config().environment("k15/Arithmetic-v0")
              .learners(num_learners=2)                      # Ray actors, one rank each
              .training(deepspeed={"zero_stage": 3}))        # DeepSpeedSettings fields

What changes against :class:`~rllib_k15.algorithm.learner.K15TorchLearner` (the maths does not):

* build: the RLModule is wrapped in ``deepspeed.initialize`` (config from
  :func:`~rllib_k15.distributed.deepspeed_config.build_deepspeed_config`) instead of DDP;
  RLlib's Ray Train backend already set up ``torch.distributed`` (gloo on CPU, NCCL on GPU).
* backward / step: ``engine.backward`` per micro-batch, ``engine.step()`` per minibatch;
  DeepSpeed reduces (ZeRO-2/3: reduce-scatters) the gradients across learners and clips
  the global norm (``grad_clip``).
* minibatches: ``minibatch_size`` stays the GLOBAL number of responses per optimizer step;
  each of the N learners takes ``minibatch_size / N`` rows of its shard, and all learners run
  the same number of steps (collectives must match even if the shards differ in length).
* optimizer reset: clears the wrapped AdamW's state — under ZeRO that is each rank's shard.
  The sharded moments are not part of checkpoints (they are reset every iteration anyway);
  with ``reset_optimizer_each_iteration=False`` a restored run restarts them from zero.
* ZeRO-3 weights: gathered once per update on all ranks; learner 0 serves RLlib's
  ``get_state`` (EnvRunner weight sync, checkpoints) from that copy (:mod:`.deepspeed_module`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rllib_k15.algorithm.columns import (
    ATTENTION_MASK,
    IMAGE_PREFIX,
    INPUT_IDS,
    RESPONSE_MASK,
)
from rllib_k15.algorithm.learner import K15TorchLearner
from rllib_k15.distributed.deepspeed_config import (
    build_deepspeed_config,
    import_deepspeed,
    make_adamw,
)
from rllib_k15.distributed.deepspeed_module import DeepSpeedRLModule, held_bytes

__all__ = ["K15DeepSpeedLearner", "global_norm_clip", "idle_forward_row"]


def global_norm_clip(config: Any) -> float | None:
    """RLlib's ``grad_clip`` as DeepSpeed's global-norm clip (the only mode it has)."""
    if config.grad_clip is None:
        return None
    if config.grad_clip_by != "global_norm":
        raise ValueError(
            f"`grad_clip_by` ({config.grad_clip_by!r}) must be 'global_norm' with `deepspeed` "
            "(DeepSpeed clips the global gradient norm only)"
        )
    return float(config.grad_clip)


def _all_reduce_max(value: int) -> int:
    """max over all ranks of an integer (a collective; every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def idle_forward_row(columns: dict) -> dict[str, torch.Tensor]:
    """The first row of a batch's forward inputs: tokens, masks and, for image problems,
    the image tensors. A ZeRO-3 idle forward must call every submodule the real forwards
    call (a VLM's vision tower too), or the ranks' parameter gathers stop matching."""
    names = [k for k in columns if k in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK)]
    names += [k for k in columns if k.startswith(IMAGE_PREFIX)]
    return {k: torch.as_tensor(columns[k][:1]) for k in names}


def _hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RLModule state -> HF names: CausalLMRLModule keeps the HF model as ``lm``."""
    return {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}


class K15DeepSpeedLearner(K15TorchLearner):
    """K15TorchLearner whose module runs in a DeepSpeed engine (one per learner actor)."""

    # ----------------------------------------------------------------- build
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        params = self.get_parameters(self._module[module_id])
        optimizer = make_adamw(
            config.deepspeed,
            params,
            lr=config.lr,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
        )
        self.register_optimizer(
            module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr
        )

    def _make_modules_ddp_if_necessary(self) -> None:
        """DeepSpeed engines instead of DDP (RLlib calls this at the end of ``build``)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "K15DeepSpeedLearner needs torch.distributed set up by RLlib's learner actors: "
                "use `.learners(num_learners=N)` with N >= 1 together with `deepspeed`"
            )
        deepspeed = import_deepspeed()
        self.ds_config = build_deepspeed_config(
            self.config.deepspeed,
            micro_batch_size=self.config.micro_batch_size,
            grad_clip=global_norm_clip(self.config),
        )
        # DeepSpeed picks its device from LOCAL_RANK, which RLlib's learner actors do not
        # set; each actor sees only its own GPU(s), so that is the learner's device index.
        if self._device.type == "cuda":
            os.environ["LOCAL_RANK"] = str(self._device.index or 0)
        else:
            os.environ.setdefault("LOCAL_RANK", "0")
        for module_id in list(self._module.keys()):
            engine, *_ = deepspeed.initialize(
                model=self._module[module_id],
                optimizer=self.get_optimizer(module_id),
                config=self.ds_config,
                dist_init_required=False,
            )
            wrapper = DeepSpeedRLModule(engine, keeps_full_state=self._learner_index == 0)
            self._module.add_module(module_id, wrapper, override=True)
            wrapper.refresh_full_state()  # collective: build runs on all learners at once

    def _wrapper(self, module_id=None) -> DeepSpeedRLModule:
        return self._module[module_id or next(iter(self._module.keys()))]

    # ----------------------------------------------------------------- one iteration
    def update(self, batch=None, *, training_data=None, **kwargs) -> Any:
        if training_data is not None:
            training_data.solve_refs()
            batch = training_data.batch
        if batch is not None and hasattr(batch, "policy_batches"):
            kwargs = self._global_minibatching(batch, kwargs)
        results = super().update(batch=batch, **kwargs)
        for module_id in self._module.keys():
            self._wrapper(module_id).refresh_full_state()  # ZeRO-3: the one gather
        return results

    def _global_minibatching(self, batch, kwargs: dict) -> dict:
        """Global ``minibatch_size`` -> rows per learner; the same step count on every rank."""
        world = dist.get_world_size()
        rows = _all_reduce_max(max(len(b) for b in batch.policy_batches.values()))
        minibatch = kwargs.get("minibatch_size")
        if minibatch:
            per_learner = max(1, minibatch // world)
            epochs = kwargs.get("num_epochs") or 1
            kwargs = {
                **kwargs,
                "minibatch_size": per_learner,
                "num_total_minibatches": math.ceil(rows * epochs / per_learner),
            }
        return kwargs

    @torch.no_grad()
    def compute_reference_logprobs(self, columns, module=None) -> np.ndarray:
        """Score through the engine; under ZeRO-3 every rank runs as many forwards as the
        busiest one (each forward all-gathers parameters, a collective)."""
        if module is not None:  # a frozen plain module (GRPO's initial policy): local
            return super().compute_reference_logprobs(columns, module)
        wrapper = self._wrapper()
        out = super().compute_reference_logprobs(columns, wrapper)
        if wrapper.zero3:
            done = len(self._micro_batches(columns))
            self._idle_forwards(wrapper, columns, _all_reduce_max(done) - done)
        return out

    def _idle_forwards(self, wrapper: DeepSpeedRLModule, columns, count: int) -> None:
        """Forwards on one row whose result is dropped: they only take part in the gathers."""
        if count <= 0:
            return
        row = idle_forward_row(columns)
        was_training = wrapper.training
        wrapper.eval()
        for _ in range(count):
            wrapper.forward_train(row)
        wrapper.train(was_training)

    # ----------------------------------------------------------------- one optimizer step
    def _backward(self, loss: torch.Tensor) -> None:
        self._wrapper().engine.backward(loss)

    def _step_optimizers(self) -> float:
        """DeepSpeed reduces, clips and steps. Returns the global grad norm before clipping
        (ZeRO-1/2/3); ZeRO-0 in fp32 does not compute one, so there it is this learner's own
        norm before the all-reduce (RLlib then averages it over learners)."""
        engine = self._wrapper().engine
        local = None
        if engine.zero_optimization_stage() == 0:
            grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
            local = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        engine.step()
        norm = engine.get_global_grad_norm()
        if norm is not None:
            return float(norm)
        return local if local is not None else float("nan")

    # ----------------------------------------------------------------- state
    def _get_optimizer_state(self) -> dict:
        """Sharded per rank (and reset every iteration): not checkpointed, see module doc."""
        return {}

    def _set_optimizer_state(self, state: dict) -> None:
        return None

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights under HF names. ZeRO-3: learner 0's gathered copy (no collective)."""
        wrapper = self._wrapper()
        if not wrapper.zero3:
            return super().hf_state_dict()
        return _hf_names({k: torch.as_tensor(v) for k, v in wrapper.get_state().items()})

    def full_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights under HF names on EVERY learner. Collective under ZeRO-3: call it on
        all learners at once (``learner_group.foreach_learner``)."""
        wrapper = self._wrapper()
        if not wrapper.zero3:
            return {k: v.clone() for k, v in super().hf_state_dict().items()}
        return _hf_names(wrapper.gather_full_state(keep=True))

    def memory_report(self) -> dict[str, int]:
        """Bytes of parameters and optimizer state this learner holds (see ``held_bytes``)."""
        return held_bytes(self._wrapper().engine)
