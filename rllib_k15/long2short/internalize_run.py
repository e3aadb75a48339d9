"""The resumable run of :mod:`rllib_k15.long2short.internalize` (settings, the loop over
rounds/epochs, checkpoints, evaluation, the report and its figure); the pure pieces live in
:mod:`rllib_k15.long2short.internalize`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rllib_k15.long2short.internalize import (
    CHECKPOINT,
    DELIMITER,
    METRICS,
    PROBLEMS_FILE,
    REPORT_JSON,
    REPORT_PNG,
    STATE,
    Encoded,
    InternalizeError,
    MulProblem,
    RemovalLoss,
    ResettableAdamW,
    encode_problems,
    final_answer,
    generate_problems,
    removal_epochs,
    write_problems_jsonl,
)
from rllib_k15.long2short.step_records import Refuse, jsonable, load_record, write_json
from rllib_k15.long2short.training import StepLog, run_epochs
from rllib_k15.metric_names import SFT_GRAD_NORM, SFT_LOSS

__all__ = ["InternalizeSettings", "evaluate_answers", "run_internalize", "plot_stages"]


# ----------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True)
class InternalizeSettings:
    """Settings of :func:`run_internalize` (the CLI flags)."""

    model: str
    out: str
    sizes: tuple[tuple[int, int], ...] = ((2, 2),)
    num_train: int = 400
    num_test: int = 50
    data_seed: int = 0
    test_fraction: float = 0.1
    cot_epochs: int = 2
    remove_per_epoch: int = 8
    smoothing_lambda: float = 4.0
    final_epochs: int = 1
    engine: str = "vllm"
    sft: dict[str, Any] = dataclasses.field(default_factory=dict)
    """:class:`~rllib_k15.long2short.sft.SFTConfig` fields (lr, batch_size, bf16 ...)."""
    save_dtype: str = "auto"
    seed: int = 0
    progress: bool = True

    def key(self) -> dict[str, Any]:
        """What a resumed run must share (not ``out``, ``progress``)."""
        kept = dataclasses.asdict(self)
        for name in ("out", "progress"):
            kept.pop(name)
        return jsonable(kept)


def evaluate_answers(
    engine: Any, tokenizer: Any, problems: Sequence[MulProblem], max_tokens: int
) -> dict[str, Any]:
    """Greedy answers: exact-answer accuracy, mean CoT tokens (before ``####``), tokens."""
    from rllib_k15.engine import SamplingParams

    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    completions = [g[0] for g in engine.generate_text([p.question for p in problems], params)]
    cot_tokens = [
        len(tokenizer(c.text.split(DELIMITER)[0].strip(), add_special_tokens=False)["input_ids"])
        for c in completions
    ]
    correct = [final_answer(c.text) == p.answer for c, p in zip(completions, problems)]
    return {
        "accuracy": round(statistics.fmean(correct), 4),
        "mean_cot_tokens": round(statistics.fmean(cot_tokens), 2),
        "mean_tokens": round(statistics.fmean(len(c.token_ids) for c in completions), 2),
        "answered": round(statistics.fmean(DELIMITER in c.text for c in completions), 4),
    }


def _phases(s: InternalizeSettings, max_cot: int) -> list[str]:
    removal = removal_epochs(max_cot, s.remove_per_epoch)
    return ["cot"] * s.cot_epochs + ["removal"] * removal + ["final"] * s.final_epochs


_OTHER_CHECKPOINT = Refuse(
    InternalizeError,
    "{path.parent} is a checkpoint of other settings (differ: {diff}); delete it or use "
    "another --out",
)
_OTHER_REPORT = Refuse(
    InternalizeError,
    "{path} is the report of a run with other settings (differ: {diff}); delete it or use "
    "another --out",
)


def _load_state(out: Path, key: dict[str, Any]) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest complete checkpoint of this run (settings checked), if any."""
    for path in (out / CHECKPOINT, out / f"{CHECKPOINT}.tmp"):
        state = load_record(path / STATE, key, refuse=_OTHER_CHECKPOINT)
        if state is not None:
            return path, state
    return None, None


def _drop_rows_after(path: Path, epochs_done: int) -> None:
    """Keep the step rows of the finished epochs (a resumed epoch logs its steps again)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines(keepends=True)
                if json.loads(line)["epoch"] < epochs_done]  # fmt: skip
        path.write_text("".join(rows))


def _save_checkpoint(model: Any, tokenizer: Any, out: Path, state: dict[str, Any]) -> None:
    from rllib_k15.long2short.training import save_hf_model

    tmp, final = out / f"{CHECKPOINT}.tmp", out / CHECKPOINT
    shutil.rmtree(tmp, ignore_errors=True)
    save_hf_model(model, tokenizer, tmp)
    (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def run_internalize(
    s: InternalizeSettings,
    engine_factory: Callable[[str], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Stage 0, removal and final epochs in ``s.out`` (resumable per epoch); the report."""
    from rllib_k15.long2short.sft import SFTConfig
    from rllib_k15.long2short.training import (
        checkpoint_dtype,
        load_for_training,
        pad_token_id,
        save_hf_model,
    )
    from rllib_k15.models import load_hf_model

    out, key = Path(s.out), s.key()
    done = load_record(out / REPORT_JSON, key, refuse=_OTHER_REPORT)
    if done is not None:
        log(f"done already: {out / REPORT_JSON} (delete it to run again)")
        return done
    train, test = generate_problems(s.sizes, s.num_train, s.num_test, s.data_seed, s.test_fraction)
    write_problems_jsonl(train, test, out / PROBLEMS_FILE)
    config = SFTConfig(**{**s.sft, "epochs": 1, "seed": s.seed, "progress": s.progress})
    model, tokenizer, base = load_for_training(s.model)
    items = encode_problems(tokenizer, train, config.use_chat_template)
    max_cot = max(len(e.cot) for e in items)
    phases = _phases(s, max_cot)
    steps = math.ceil(len(items) / config.batch_size)
    checkpoint, state = _load_state(out, key)
    torch.manual_seed(s.seed)
    if state is None:
        state = {"settings": key, "epochs_done": 0, "stages": [], "resets": []}
    else:
        log(f"resuming after epoch {state['epochs_done']} from {checkpoint}")
        model = load_hf_model(checkpoint, dtype="float32")
    _drop_rows_after(out / METRICS, state["epochs_done"])
    step = ResettableAdamW(model, config.lr, config.weight_decay, config.max_grad_norm)
    loss = RemovalLoss(
        model,
        pad_token_id(tokenizer),
        step,
        s.smoothing_lambda,
        config.bf16,
        steps,
        s.remove_per_epoch,
        max_cot,
    )
    epochs = _Epochs(s, phases, items, loss, config, out / METRICS)
    eval_tokens = max_cot + max(len(e.tail) for e in items) + 8
    build = engine_factory or _default_engine_factory(s)
    with build(str(base)) as engine:
        for epoch in range(state["epochs_done"], len(phases)):
            row = epochs.train(epoch)
            engine.load_weights({k: v.detach() for k, v in model.state_dict().items()})
            row.update(evaluate_answers(engine, tokenizer, test, eval_tokens))
            log(
                f"[epoch {epoch} {row['phase']}] removed {row['scheduled_removed']} of "
                f"{max_cot} CoT tokens: accuracy {row['accuracy']}, generated CoT tokens "
                f"{row['mean_cot_tokens']}, loss {row['loss']:.4f}"
            )
            state["stages"].append(row)
            state["resets"] += row.pop("reset_steps")
            state["epochs_done"] = epoch + 1
            _save_checkpoint(model, tokenizer, out, state)
    dtype = checkpoint_dtype(base) if s.save_dtype == "auto" else s.save_dtype
    save_hf_model(model, tokenizer, out, dtype=dtype)
    report = {
        "method": "internalize",
        "settings": key,
        "max_cot_tokens": max_cot,
        "steps_per_epoch": steps,
        "optimizer_resets": state["resets"],
        "stages": state["stages"],
        "problems": str(out / PROBLEMS_FILE),
        "eval_env": {"env": "k15/Math-v0", "env_kwargs": _eval_kwargs(s, out)},
    }
    plot_stages(state["stages"], out / REPORT_PNG)
    write_json(out / REPORT_JSON, report)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    log(f"report -> {out / REPORT_JSON}, {out / REPORT_PNG}; model -> {out}")
    return report


_STEP_LOG = StepLog(
    name="internalize",
    loss=SFT_LOSS,
    grad_norm=SFT_GRAD_NORM,
    describe=lambda m: f"loss {m[SFT_LOSS]:.4f} removed {m['internalize/scheduled_removed']:.0f}",
    postfix=lambda m: {"loss": f"{m[SFT_LOSS]:.4f}"},
    logger=logging.getLogger(__name__),
)


@dataclasses.dataclass
class _Epochs:
    """What every epoch of a run shares."""

    s: InternalizeSettings
    phases: list[str]
    items: list[Encoded]
    loss: RemovalLoss
    config: Any
    """The :class:`~rllib_k15.long2short.sft.SFTConfig` (one epoch per call)."""
    metrics_path: Path

    def train(self, epoch: int) -> dict[str, Any]:
        """One epoch of :func:`run_epochs`, the phase's removal state set first."""
        loss, phase, steps = self.loss, self.phases[epoch], self.loss.steps_per_epoch
        loss.removing = phase != "cot"
        loss.t = (epoch - self.phases.index("removal")) * steps if loss.removing else 0
        loss.rng = np.random.default_rng([self.s.seed, epoch])
        resets: list[int] = []

        def on_step(step: int, metrics: dict[str, float]) -> None:
            if metrics["internalize/optimizer_reset"]:
                resets.append(loss.t - 1)
            metrics.pop("internalize/epoch", None)  # run_epochs' count within this one epoch
            row = {"epoch": epoch, "phase": phase, "step": step, **metrics}
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

        cfg = dataclasses.replace(self.config, seed=self.s.seed + epoch)
        result = run_epochs(loss.model, self.items, loss, cfg, _STEP_LOG, on_step, loss.step)
        removed = min(loss.schedule(loss.t - 1), loss.max_cot) if loss.removing else 0
        kept = [max(0, len(e.cot) - removed) for e in self.items]
        return {
            "epoch": epoch,
            "phase": phase,
            "scheduled_removed": removed,
            "train_cot_tokens": round(statistics.fmean(kept), 2),
            "loss": result.epoch_losses[-1],
            "reset_steps": resets,
        }


def _eval_kwargs(s: InternalizeSettings, out: Path) -> dict[str, Any]:
    """``k15/Math-v0`` kwargs whose problems are exactly this run's test problems."""
    return {
        "dataset": str(out / PROBLEMS_FILE),
        "instruction": "",
        "split": "test",
        "test_fraction": s.test_fraction,
    }


def _default_engine_factory(s: InternalizeSettings) -> Callable[[str], Any]:
    from rllib_k15.engine import make_engine

    kwargs: dict[str, Any] = {"seed": s.seed}
    if s.engine == "vllm":
        kwargs["max_model_len"] = 2048
    return lambda model: make_engine(s.engine, model, **kwargs)


def plot_stages(stages: Sequence[dict[str, Any]], path: Path) -> Path:
    """Exact-answer accuracy and CoT tokens (generated; kept in training) per epoch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in stages]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [row["accuracy"] for row in stages], marker="o")
    left.set(xlabel="epoch", ylabel="test accuracy (exact answer)", ylim=(-0.02, 1.02))
    right.plot(epochs, [row["mean_cot_tokens"] for row in stages], marker="o", label="generated")
    right.plot(
        epochs, [row["train_cot_tokens"] for row in stages], ls="--", label="kept in training"
    )
    right.set(xlabel="epoch", ylabel="mean CoT tokens")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        for row in stages:  # shade the stage-0 (explicit CoT) and no-CoT epochs
            if row["phase"] != "removal":
                ax.axvspan(row["epoch"] - 0.5, row["epoch"] + 0.5, color="0.9", zorder=0)
    fig.suptitle("internalize: explicit CoT (shaded, left) -> removal -> no CoT (shaded, right)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
