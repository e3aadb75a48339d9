"""What ``k15 serve SOURCE`` serves: a run directory, an RLlib checkpoint or a model.

    runs/k15                      a k15 run: its newest complete checkpoint (verified), or,
                                  before the first checkpoint, the run's base model
    runs/k15/checkpoints/iter_6   one K15MirrorDescent (RLlib) checkpoint
    smollm2-135m-instruct         a registered model name, or any local HF model directory

Checkpoints are exported (:func:`rllib_k15.runs.export.export_checkpoint`) into a staging
directory the server owns, in the engine's dtype; the run directory is only read, never
written, so serving a run that is still training cannot disturb it. The tokenizer and chat
template are the base model's, exactly what training and ``k15 eval`` used.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ServedWeights",
    "SourceError",
    "is_run_dir",
    "newest_checkpoint",
    "resolve_source",
    "run_base_model",
    "weights_from_checkpoint",
]


class SourceError(ValueError):
    """A SOURCE that is not a run, a checkpoint or a model; the message says what it is."""


@dataclass(frozen=True)
class ServedWeights:
    """A HF directory the engine can load, and where its weights came from.

    model_dir:  HF directory (config, safetensors, tokenizer with its chat template).
    iteration:  training iteration of the checkpoint, None for a plain model.
    checkpoint: the checkpoint directory exported into ``model_dir``, None for a model.
    """

    model_dir: Path
    iteration: int | None = None
    checkpoint: Path | None = None

    def describe(self) -> dict:
        """The ``k15`` block of ``/v1/models`` metadata."""
        return {
            "iteration": self.iteration,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "weights": str(self.model_dir),
        }


def is_run_dir(path: Path) -> bool:
    """A ``k15 train`` output directory (it holds run.json or checkpoints/)."""
    return path.is_dir() and ((path / "run.json").is_file() or (path / "checkpoints").is_dir())


def _is_checkpoint(path: Path) -> bool:
    return (path / "learner_group").is_dir()


def newest_checkpoint(
    run_dir: str | os.PathLike[str], *, verify: bool = True
) -> tuple[int, Path] | None:
    """(iteration, path) of the checkpoint ``checkpoints/latest`` names (with ``verify``,
    checked against its manifest: ``CheckpointCorruptError`` names a damaged file); None
    when the run has none yet. Read-only (unlike ``CheckpointManager``, which tidies the
    directory it manages)."""
    from rllib_k15.runs.checkpoints import CheckpointManager
    from rllib_k15.runs.integrity import verify_checkpoint

    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_symlink():
        return None
    target = (root / os.readlink(pointer)).resolve()
    iteration = CheckpointManager.iteration_of(target)
    if iteration is None:  # a pointer being swapped, or a checkpoint still being written
        return None
    if verify:
        verify_checkpoint(target)
    return iteration, target


def run_base_model(run_dir: Path) -> str:
    """The ``training.hf_model`` a run was started with (its experiment.yaml)."""
    from omegaconf import OmegaConf

    experiment = run_dir / "experiment.yaml"
    if not experiment.is_file():
        raise SourceError(
            f"{run_dir} has no checkpoint yet and no experiment.yaml to read its model from"
        )
    model = OmegaConf.select(OmegaConf.load(experiment), "training.hf_model")
    if not model:
        raise SourceError(f"{experiment} sets no training.hf_model")
    return str(model)


def weights_from_checkpoint(
    checkpoint: Path, iteration: int | None, staging_dir: Path, dtype: str
) -> ServedWeights:
    """Export ``checkpoint`` into ``staging_dir/<name>`` (atomically: a reader never sees a
    half-written directory) and describe it."""
    from rllib_k15.runs.export import export_checkpoint

    name = f"iter_{iteration:06d}" if iteration is not None else checkpoint.name
    target = staging_dir / name
    if not target.is_dir():
        tmp = staging_dir / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        export_checkpoint(checkpoint, tmp, dtype=dtype)
        tmp.rename(target)
    return ServedWeights(target, iteration, checkpoint)


def resolve_source(source: str, staging_dir: Path, dtype: str) -> ServedWeights:
    """The weights SOURCE names (see the module docstring); raises :class:`SourceError`."""
    from rllib_k15.models import ModelNotFoundError, resolve_model
    from rllib_k15.runs.checkpoints import CheckpointManager

    path = Path(source).expanduser()
    if is_run_dir(path):
        newest = newest_checkpoint(path)
        if newest is None:
            return ServedWeights(resolve_model(run_base_model(path)))
        iteration, checkpoint = newest
        return weights_from_checkpoint(checkpoint, iteration, staging_dir, dtype)
    if path.is_dir() and _is_checkpoint(path):
        iteration = CheckpointManager.iteration_of(path)
        return weights_from_checkpoint(path.resolve(), iteration, staging_dir, dtype)
    try:
        return ServedWeights(resolve_model(source))
    except ModelNotFoundError as err:
        raise SourceError(
            f"SOURCE {source!r} is not a k15 run directory (run.json / checkpoints/), not an "
            f"RLlib checkpoint (learner_group/) and not a model: {err}"
        ) from err
