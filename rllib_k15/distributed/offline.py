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
from rllib_k15.metric_names import DPO_NUM_SKIPPED, SFT_NUM_SKIPPED

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


@dataclasses.dataclass(frozen=True)
class _Trainer:
    """What differs between the SFT and the DPO worker."""

    config_cls: type
    fits: Callable[[Any, Any, Any], bool]
    """(tokenizer, item, config) -> whether the item is within ``max_length``."""
    train: Callable[[Any, Any, list, Any, Any], dict[str, Any]]
    """(engine, tokenizer, shard, config, step_fn) -> metrics."""
    rows_per_item: int
    """Forward rows per data item (DPO: a chosen and a rejected row)."""
    skipped: str
    """Metric name of the number of too-long items dropped."""


def _trainer(kind: str) -> _Trainer:
    """The trainer ``kind`` ("sft" or "dpo"); imported on the worker."""
    if kind == "sft":
        from rllib_k15.long2short.sft import SFTConfig, encode_sft_examples, train_sft

        return _Trainer(
            SFTConfig,
            fits=lambda tokenizer, ex, cfg: encode_sft_examples(tokenizer, [ex], cfg)[1] == 0,
            train=lambda engine, tokenizer, shard, cfg, step: train_sft(
                engine, tokenizer, shard, cfg, step_fn=step
            ),
            rows_per_item=1,
            skipped=SFT_NUM_SKIPPED,
        )
    if kind == "dpo":
        from rllib_k15.long2short.dpo_train import DPOTrainConfig, encode_pairs, train_dpo

        return _Trainer(
            DPOTrainConfig,
            fits=lambda tokenizer, pair, cfg: encode_pairs(tokenizer, [pair], cfg)[1] == 0,
            # ref_model=None: π_ref = the starting model
            train=lambda engine, tokenizer, shard, cfg, step: train_dpo(
                engine, None, tokenizer, shard, cfg, step_fn=step
            ),
            rows_per_item=2,
            skipped=DPO_NUM_SKIPPED,
        )
    raise ValueError(f"unknown offline trainer {kind!r}")


def _worker(config: dict) -> None:
    """One Ray Train worker of :func:`distributed_sft` / :func:`distributed_dpo`: load the
    model, drop too-long items, take this rank's shard, train with a DeepSpeed engine,
    save (rank 0) and write the metrics."""
    import ray.train

    from rllib_k15.long2short.training import load_for_training

    trainer = _trainer(config["trainer"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model, tokenizer, _ = load_for_training(config["model"])
    cfg = trainer.config_cls(**config["settings"])
    # drop too-long items BEFORE sharding: every rank must run the same number of steps
    kept = [item for item in config["data"] if trainer.fits(tokenizer, item, cfg)]
    cfg = dataclasses.replace(cfg, batch_size=_per_rank(cfg.batch_size, world), progress=False)
    engine = deepspeed_engine(
        model,
        config["deepspeed"],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        micro_batch_size=trainer.rows_per_item * cfg.batch_size,
        grad_clip=cfg.max_grad_norm,
    )
    shard = equal_shard(kept, rank, world)
    metrics = trainer.train(engine, tokenizer, shard, cfg, DeepSpeedStep(engine))
    save_gathered(engine, tokenizer, config["out_dir"])
    skipped = len(config["data"]) - len(kept)
    _write_metrics(config["out_dir"], {**metrics, trainer.skipped: skipped})


def _per_rank(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be divisible by `num_workers` ({world}): "
            "each worker takes batch_size / num_workers rows per step"
        )
    return batch_size // world


def _distribute(
    kind: str,
    model: str | Path,
    data: Sequence[Any],
    config: Any,
    out_dir: str | Path,
    num_workers: int,
    deepspeed: Mapping[str, Any] | None,
    run_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Run :func:`_worker` with trainer ``kind``; returns rank 0's metrics."""
    train_config = {
        "trainer": kind,
        "model": str(model),
        "data": list(data),
        "settings": dataclasses.asdict(config),
        "out_dir": str(Path(out_dir).resolve()),
    }
    run_distributed(_worker, train_config, num_workers=num_workers, deepspeed=deepspeed,
                    **run_kwargs)  # fmt: skip
    return json.loads((Path(train_config["out_dir"]) / METRICS_FILE).read_text())


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
    return _distribute("sft", model, examples, config, out_dir, num_workers, deepspeed, run_kwargs)


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
    return _distribute("dpo", model, pairs, config, out_dir, num_workers, deepspeed, run_kwargs)
