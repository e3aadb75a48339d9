"""The offline trainers (SFT on shortest rejection samples, DPO) on Ray Train workers with
DeepSpeed — the same ``train_sft`` / ``train_dpo`` loops, the same config builder as the RL
learners (:mod:`.deepspeed_config`).

    from rllib_k15.distributed.offline import distributed_sft
    metrics = distributed_sft("smollm2-135m-instruct", examples, SFTConfig(batch_size=8),
                              "runs/sft", num_workers=2, deepspeed={"zero_stage": 2})

:func:`run_distributed` starts ``ray.train.torch.TorchTrainer`` (backend gloo on CPU, NCCL
on GPU); each worker builds a DeepSpeed engine with :func:`deepspeed_engine` and passes the
engine as the model plus :class:`DeepSpeedStep` as ``step_fn``. Differences from one process:

* the data is split into equal shards (the last ones padded by wrap-around, as torch's
  DistributedSampler does) after dropping too-long examples, so every rank runs the same
  number of steps — DeepSpeed's collectives must match;
* ``batch_size`` stays global: each of N workers takes ``batch_size / N`` rows;
* the loss is each worker's token mean, averaged over workers (not one global token mean);
* the model is gathered (ZeRO-3) and saved once, by rank 0, as a plain HF directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from rllib_k15.distributed.deepspeed_config import (
    DeepSpeedSettings,
    build_deepspeed_config,
    dist_backend,
    import_deepspeed,
    make_adamw,
)

__all__ = [
    "DeepSpeedStep",
    "deepspeed_engine",
    "distributed_dpo",
    "distributed_sft",
    "equal_shard",
    "run_distributed",
    "save_gathered",
]

T = TypeVar("T")
METRICS_FILE = "train_metrics.json"  # rank 0's metrics, written next to the saved model


def equal_shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s share: ceil(n / world) items each, padded by wrap-around.

    shard_r = [items[(r + world·j) mod n] for j < ceil(n / world)]
    """
    if not items:
        raise ValueError("nothing to shard: the data set is empty")
    per_rank = math.ceil(len(items) / world)
    return [items[(rank + world * j) % len(items)] for j in range(per_rank)]


def deepspeed_engine(
    model: torch.nn.Module,
    settings: DeepSpeedSettings | Mapping[str, Any],
    *,
    lr: float,
    weight_decay: float,
    micro_batch_size: int,
    grad_clip: float | None,
):
    """``deepspeed.initialize`` on an already set-up process group, with our AdamW."""
    deepspeed = import_deepspeed()
    config = build_deepspeed_config(
        settings, micro_batch_size=micro_batch_size, grad_clip=grad_clip
    )
    optimizer = make_adamw(settings, model.parameters(), lr=lr, weight_decay=weight_decay)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config, dist_init_required=False
    )
    return engine


class DeepSpeedStep:
    """``step_fn`` of the offline trainers: the engine reduces, clips and updates."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, loss: torch.Tensor) -> float:
        self.engine.backward(loss)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")


def save_gathered(engine: Any, tokenizer: Any, out_dir: str | Path) -> None:
    """Save the full model as a plain HF dir on rank 0 (collective under ZeRO-3: every
    rank must call it). Weights are saved in the dtype they were trained in."""
    deepspeed = import_deepspeed()
    model = engine.module
    is_zero3 = engine.zero_optimization_stage() == 3
    rank = torch.distributed.get_rank()
    with deepspeed.zero.GatheredParameters(
        list(model.parameters()), modifier_rank=None, enabled=is_zero3
    ):
        state = (
            {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if rank == 0
            else None
        )
    if rank == 0:
        model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)


def run_distributed(
    train_fn: Callable[[dict], None],
    train_config: Mapping[str, Any],
    *,
    num_workers: int,
    deepspeed: DeepSpeedSettings | Mapping[str, Any] | None = None,
    use_gpu: bool | None = None,
    storage_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run ``train_fn(config)`` on ``num_workers`` Ray Train workers; returns the metrics of
    the run's result (Ray Train V2: those of the last reported checkpoint, if any).

    ``config`` is ``train_config`` plus ``"deepspeed"`` (the settings as a dict). The
    process group backend follows the hardware (:func:`dist_backend`).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"`num_workers` ({num_workers!r}) must be an integer >= 1")
    settings = DeepSpeedSettings.from_dict(deepspeed or {})
    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={**dict(train_config), "deepspeed": settings.to_dict()},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend=dist_backend(use_gpu)),
        run_config=RunConfig(storage_path=str(storage_path) if storage_path else None),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return dict(result.metrics or {})


# ------------------------------------------------------------------- the worker loops
def _write_metrics(out_dir: str | Path, metrics: Mapping[str, Any]) -> None:
    """Rank 0 writes the run's metrics next to the model (``train_metrics.json``): Ray Train
    V2 attaches reported metrics to checkpoints only, and the trainers save no checkpoint."""
    if torch.distributed.get_rank() != 0:
        return
    keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, list))}
    (Path(out_dir) / METRICS_FILE).write_text(json.dumps(keep, indent=2) + "\n")


def _sft_worker(config: dict) -> None:
    import ray.train

    from rllib_k15.long2short.sft import SFTConfig, encode_sft_examples, train_sft
    from rllib_k15.long2short.training import load_for_training

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model, tokenizer, _ = load_for_training(config["model"])
    cfg = SFTConfig(**config["sft"])
    # drop too-long examples BEFORE sharding: every rank must run the same number of steps
    kept = [ex for ex in config["examples"] if encode_sft_examples(tokenizer, [ex], cfg)[1] == 0]
    cfg = dataclasses.replace(cfg, batch_size=_per_rank(cfg.batch_size, world), progress=False)
    engine = deepspeed_engine(
        model,
        config["deepspeed"],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        micro_batch_size=cfg.batch_size,
        grad_clip=cfg.max_grad_norm,
    )
    metrics = train_sft(engine, tokenizer, equal_shard(kept, rank, world), cfg,
                        step_fn=DeepSpeedStep(engine))  # fmt: skip
    save_gathered(engine, tokenizer, config["out_dir"])
    skipped = len(config["examples"]) - len(kept)
    _write_metrics(config["out_dir"], {**metrics, "sft/num_skipped_too_long": skipped})


def _dpo_worker(config: dict) -> None:
    import ray.train

    from rllib_k15.long2short.dpo_train import DPOTrainConfig, encode_pairs, train_dpo
    from rllib_k15.long2short.training import load_for_training

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model, tokenizer, _ = load_for_training(config["model"])
    cfg = DPOTrainConfig(**config["dpo"])
    kept = [p for p in config["pairs"] if encode_pairs(tokenizer, [p], cfg)[1] == 0]
    cfg = dataclasses.replace(cfg, batch_size=_per_rank(cfg.batch_size, world), progress=False)
    engine = deepspeed_engine(
        model,
        config["deepspeed"],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        micro_batch_size=2 * cfg.batch_size,  # chosen and rejected rows
        grad_clip=cfg.max_grad_norm,
    )
    metrics = train_dpo(engine, None, tokenizer, equal_shard(kept, rank, world), cfg,
                        step_fn=DeepSpeedStep(engine))  # fmt: skip
    save_gathered(engine, tokenizer, config["out_dir"])
    skipped = len(config["pairs"]) - len(kept)
    _write_metrics(config["out_dir"], {**metrics, "dpo/num_skipped_too_long": skipped})


def _per_rank(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be divisible by `num_workers` ({world}): "
            "each worker takes batch_size / num_workers rows per step"
        )
    return batch_size // world


def distributed_sft(
    model: str | Path,
    examples: Sequence[Any],
    config: Any,
    out_dir: str | Path,
    *,
    num_workers: int = 2,
    deepspeed: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """:func:`rllib_k15.long2short.sft.train_sft` on ``num_workers`` DeepSpeed ranks; saves
    the fine-tuned model to ``out_dir`` and returns rank 0's metrics."""
    train_config = {
        "model": str(model),
        "examples": list(examples),
        "sft": dataclasses.asdict(config),
        "out_dir": str(Path(out_dir).resolve()),
    }
    run_distributed(_sft_worker, train_config, num_workers=num_workers, deepspeed=deepspeed,
                    **run_kwargs)  # fmt: skip
    return json.loads((Path(train_config["out_dir"]) / METRICS_FILE).read_text())


def distributed_dpo(
    model: str | Path,
    pairs: Sequence[Any],
    config: Any,
    out_dir: str | Path,
    *,
    num_workers: int = 2,
    deepspeed: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """:func:`rllib_k15.long2short.dpo_train.train_dpo` (π_ref = the starting model) on
    ``num_workers`` DeepSpeed ranks; saves to ``out_dir``, returns rank 0's metrics."""
    train_config = {
        "model": str(model),
        "pairs": list(pairs),
        "dpo": dataclasses.asdict(config),
        "out_dir": str(Path(out_dir).resolve()),
    }
    run_distributed(_dpo_worker, train_config, num_workers=num_workers, deepspeed=deepspeed,
                    **run_kwargs)  # fmt: skip
    return json.loads((Path(train_config["out_dir"]) / METRICS_FILE).read_text())
