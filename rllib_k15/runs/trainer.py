"""Run K15MirrorDescent in-process with a live progress table, a metrics log and a plot.

This is what ``k15 train`` (and ``make train``) runs; ``rllib train`` runs the same
Algorithm through Ray Tune instead. Each iteration appends one JSON line to
``<out>/metrics.jsonl`` (with the problem indices the iteration trained on, in draw order;
row 0 is the held-out evaluation before training when ``eval_interval`` is set);
checkpoints are saved atomically every ``checkpoint_every`` iterations and rotated
(:mod:`rllib_k15.runs.checkpoints`); at the end ``<out>/learning_curve.png`` is drawn and
``<out>/checkpoint`` points at the final checkpoint. ``resume=True`` continues a killed run
from its latest checkpoint (docs/operating_long_runs.md).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rllib_k15 import metric_names as n

# (label, nested key) of the numbers shown per iteration and plotted
SHOWN_METRICS = {
    "accuracy": (n.K15_RESULTS, n.ACCURACY),
    "reward": (n.K15_RESULTS, n.REWARD_TOTAL_MEAN),
    "tokens": (n.K15_RESULTS, n.RESPONSE_TOKENS_MEAN),
    "len_w": (n.K15_RESULTS, n.LENGTH_WEIGHT),
    "eval_pass@1": (n.EVAL_RESULTS, n.PASS_AT_1),
    "eval_tokens": (n.EVAL_RESULTS, n.RESPONSE_TOKENS_MEAN),
    "loss": (n.LEARNER_RESULTS, n.DEFAULT_MODULE, n.TOTAL_LOSS),
    "kl": (n.LEARNER_RESULTS, n.DEFAULT_MODULE, n.KL_REF),
    "logp_gap": (n.LEARNER_RESULTS, n.LOGP_MISMATCH_MEAN),
    "gen_tok/s": (n.ENV_RUNNER_RESULTS, n.GENERATION_TOKENS_PER_S),
    "train_tok/s": (n.K15_RESULTS, n.TRAIN_TOKENS_PER_S),
    "runner_restarts": (n.FAULT_TOLERANCE_RESULTS, "num_remote_worker_restarts"),  # RLlib's
    "trained": (n.K15_RESULTS, n.NUM_RESPONSES),  # responses in the loss this iteration
    "signal": (n.K15_RESULTS, n.GROUPS_WITH_SIGNAL_FRAC),  # of their groups: rewards differ
    "filtered": (n.K15_RESULTS, n.DYNAMIC_FILTERED_FRAC),  # dynamic sampling's dropped share
}


def _dig(result: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def summarize(result: dict) -> dict[str, float | None]:
    row: dict[str, float | None] = {"iteration": result.get("training_iteration")}
    for label, path in SHOWN_METRICS.items():
        value = _dig(result, path)
        # RLlib reports NaN for a metric not logged this iteration (e.g. no eval ran)
        numeric = isinstance(value, (int, float)) and not math.isnan(value)
        row[label] = float(value) if numeric else None
    row["seconds"] = result.get("time_this_iter_s")
    return row


def preflight(config) -> None:
    """Make the env (and the held-out env) once, before Ray or an engine starts, so a bad
    env id, ``env_config`` field or dataset file fails first, naming what is wrong."""
    from rllib_k15.env_factory import make_reasoning_env

    given = dict(config.env_config or {})
    try:
        notes = config.resolve_splits() if hasattr(config, "resolve_splits") else []
    except TypeError as err:  # gym passes env_config as keyword arguments
        raise ValueError(
            f"`env_config` ({given!r}) does not fit environment {config.env!r}: {err}"
        ) from None
    for note in notes:
        print(f"note: {note}")
    configs = [("env_config", config.env_config or {})]
    if config.eval_interval:
        eval_config = {**(config.env_config or {}), **(config.eval_env_config or {})}
        configs.append(("eval_env_config", eval_config))
    for field, env_config in configs:
        try:
            env = make_reasoning_env(config.env, env_config)
        except TypeError as err:  # gym passes env_config as keyword arguments
            raise ValueError(
                f"`{field}` ({env_config!r}) does not fit environment {config.env!r}: {err}"
            ) from None
        try:
            if len(env.unwrapped) == 0:
                raise ValueError(f"environment `env` ({config.env!r}) has no problems")
            env.unwrapped.problem(0)
        finally:
            env.close()


QUICKSTART = "tuned_examples/quickstart_smollm2.yaml"
# (problems, samples, max tokens) -> what one iteration of SmolLM2-135M on
# k15/Arithmetic-v0 cost when measured on this project's shared 2-core CPU box
MEASURED_BUDGETS = {
    (16, 8, 256): "measured 7–20 min per iteration and a 10 GB peak RSS on a shared 2-core CPU",
    (8, 4, 96): "measured 27–44 s per iteration in bf16 on a 2-core AVX512-BF16 CPU",
}


def budget_line(config, iterations: int | None = None, stop: dict | None = None) -> str:
    """One line: the generation budget of an iteration (problems × samples × max response
    tokens), the iterations, and, for the built-in defaults, what they cost when measured
    and a pointer to the laptop-sized quickstart. ``stop``: Tune stop criteria, shown when
    they have no ``training_iteration``."""
    from rllib_k15.algorithm.config import K15_FIELDS

    p, k, t = config.problems_per_iteration, config.samples_per_problem, config.max_response_tokens
    per_iteration = p * k * t
    text = (
        f"budget: {p} problems × {k} samples × ≤{t} tokens = ≤{per_iteration:,} generated "
        f"tokens per iteration"
    )
    if iterations is not None:
        text += f", {iterations} iteration{'s' if iterations != 1 else ''}"
        if iterations > 1:
            text += f" (≤{per_iteration * iterations:,} in all)"
    elif stop:
        text += f", until {stop}"
    if getattr(config, "partial_rollout_max_tokens", None):
        budget = config.partial_rollout_max_tokens
        text += f"; partial rollouts: ≤{budget} new tokens per response per iteration"
    if getattr(config, "eval_interval", 0):
        text += (
            f"; held-out eval every {config.eval_interval}: {config.eval_problems} × "
            f"{config.eval_samples} × ≤{t}"
        )
    defaults = tuple(
        K15_FIELDS[name][0]
        for name in ("problems_per_iteration", "samples_per_problem", "max_response_tokens")
    )
    measured = MEASURED_BUDGETS.get((p, k, t)) if "smollm2" in str(config.hf_model) else None
    if (p, k, t) == defaults:
        text += " — the built-in defaults"
        text += f" ({measured})" if measured else ""
        text += f"; for a laptop-sized run use --config {QUICKSTART}"
    elif measured:
        text += f" ({measured})"
    return text


def _decision(setting: Any = "auto") -> dict[str, Any]:
    """:func:`rllib_k15.hardware.decide_precision` for ``setting`` as a dict (dtype, source,
    reason, cpu_flags); a setting it does not know (e.g. vLLM's "half") is reported as is."""
    from rllib_k15.hardware import decide_precision

    try:
        return decide_precision(setting).as_dict()
    except ValueError:
        return {"dtype": str(setting), "source": "setting", "reason": f"explicit {setting!r}"}


def _describe(decision: dict[str, Any]) -> str:
    source, reason = decision.get("source"), str(decision.get("reason") or "")
    if source and not reason.startswith(str(source)):
        return f"{source}: {reason}" if reason else str(source)
    return reason


def precision_report(
    config=None, *, engine_dtype: Any = None, engine_flag: str = "--dtype"
) -> tuple[str, dict[str, Any]]:
    """The precision a run uses: one line to print and a JSON-able record.

    ``config``: a K15Config (learner ``autocast_bf16`` and the engine's
    ``engine_options['dtype']``); without one (``k15 eval``) only ``engine_dtype`` (set by
    ``engine_flag``). An explicit setting (not "auto") is reported as set; "auto" as
    :func:`rllib_k15.hardware.decide_precision` decided, with its measured reason.
    """
    if config is not None:
        engine_setting = (config.engine_options or {}).get("dtype", "auto")
        learner_setting = config.autocast_bf16
    else:
        engine_setting, learner_setting = engine_dtype or "auto", None
    engine_setting = str(engine_setting).removeprefix("torch.")
    auto = None
    if engine_setting == "auto" or learner_setting == "auto":
        auto = _decision("auto")
    record: dict[str, Any] = {}
    engine = {"setting": engine_setting}
    engine["dtype"] = (
        auto["dtype"] if engine_setting == "auto" else _decision(engine_setting)["dtype"]
    )
    record["dtype"] = engine["dtype"]
    record["engine"] = engine
    if learner_setting is not None:
        if learner_setting == "auto":
            bf16 = auto["dtype"] == "bfloat16"
        elif isinstance(learner_setting, bool):
            bf16 = learner_setting
        else:  # validate() reports it; describe what was set
            bf16 = None
        record["learner"] = {
            "setting": learner_setting,
            "autocast_bf16": bf16,
            "compute": {True: "bfloat16", False: "float32", None: str(learner_setting)}[bf16],
        }
    if auto is not None:
        record["auto"] = auto
    everything_auto = engine_setting == "auto" and learner_setting in ("auto", None)
    if everything_auto:
        line = f"precision: {auto['dtype']} ({_describe(auto)})"
    elif learner_setting is None:  # an engine alone (k15 eval)
        line = f"precision: {engine['dtype']} (set: {engine_flag} {engine_setting})"
    else:
        compute = record["learner"]["compute"]
        engine_text = (
            f"engine {engine['dtype']} (auto)" if engine_setting == "auto"
            else f"engine {engine['dtype']} (set: dtype={engine_setting})"
        )  # fmt: skip
        learner_text = (
            f"learner {compute} (auto)" if learner_setting == "auto"
            else f"learner {compute} (set: autocast_bf16={json.dumps(learner_setting)})"
        )  # fmt: skip
        line = f"precision: {engine_text}, {learner_text}"
        if auto is not None:
            line += f"; auto: {auto['dtype']} ({_describe(auto)})"
    return line, record


def run_training(
    config,
    iterations: int,
    out_dir: str | Path,
    evaluate_first: bool = True,
    *,
    checkpoint_every: int = 1,
    keep_checkpoints: int = 2,
    resume: bool = False,
) -> list[dict]:
    """Build the algorithm, train until iteration ``iterations``, log, plot, checkpoint.

    A checkpoint is saved every ``checkpoint_every`` iterations and after the last one,
    keeping the newest ``keep_checkpoints`` (:class:`rllib_k15.runs.checkpoints.CheckpointManager`).
    ``resume=True`` continues ``out_dir`` from its latest checkpoint: the iteration count,
    weights, problem buffer (statistics, sampler state) and metrics log continue as if the
    run had never stopped.
    """
    from rich.console import Console
    from rich.live import Live

    from rllib_k15.runs.checkpoints import CheckpointManager
    from rllib_k15.runs.memory import bound_onednn_primitive_cache, release_free_heap
    from rllib_k15.runs.run_files import (
        LEARNING_CURVE_FILE,
        METRICS_FILE,
        append_metrics_row,
        read_metrics,
        truncate_metrics,
    )

    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"`checkpoint_every` ({checkpoint_every!r}) must be an integer >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = CheckpointManager(out, keep=keep_checkpoints)
    metrics_path = out / METRICS_FILE
    latest = checkpoints.latest()
    if not resume and (latest is not None or read_metrics(metrics_path)):
        raise ValueError(
            f"{out} holds an earlier run (metrics.jsonl or checkpoints); continue it with "
            f"`k15 train --resume {out}` or choose another --out"
        )
    console = Console(soft_wrap=True)  # long paths stay on one line
    console.print(
        f"[bold]K15MirrorDescent[/] on {config.env} with {config.hf_model}, "
        f"{iterations} iteration{'s' if iterations != 1 else ''} -> {out}"
    )
    bound_onednn_primitive_cache()  # `k15` did already; python-API callers get it here
    algo = config.build_algo()
    from rllib_k15.engine.logging import refresh

    refresh()  # loggers of libraries imported while building (k15 train routes them)
    rows: list[dict] = []
    try:
        if resume:
            if latest is not None:
                algo.restore_from_path(str(latest.resolve()))
                console.print(f"resumed from {latest.resolve()} (iteration {algo.iteration})")
            rows = truncate_metrics(metrics_path, algo.iteration)
        if evaluate_first and config.eval_interval and algo.iteration == 0 and not rows:
            start = time.perf_counter()
            base = algo.evaluate_held_out()
            rows.append(
                {
                    "iteration": 0,
                    "eval_pass@1": base["pass_at_1"],
                    "eval_tokens": base["response_tokens_mean"],
                    "seconds": time.perf_counter() - start,
                }
            )
            append_metrics_row(metrics_path, rows[-1])
        with Live(_table(rows), console=console, refresh_per_second=2) as live:
            while algo.iteration < iterations:
                result = algo.train()
                row = summarize(result)
                released = release_free_heap()  # glibc keeps freed pages otherwise
                if released is not None:
                    row["heap_released_mb"] = round(released, 1)
                problems = getattr(algo, "last_problem_indices", None)
                if problems is not None:
                    row["problems"] = [int(i) for i in problems]
                rows.append(row)
                append_metrics_row(metrics_path, row)
                live.update(_table(rows))
                if algo.iteration % checkpoint_every == 0 or algo.iteration >= iterations:
                    checkpoints.save(algo.save_to_path, algo.iteration)
        if checkpoints.latest() is None:  # e.g. `--iterations 0`
            checkpoints.save(algo.save_to_path, algo.iteration)
        if not console.is_terminal:
            console.line()  # a non-terminal Live leaves its last frame without a newline
    finally:
        algo.stop()
    plot_learning_curve(rows, out / LEARNING_CURVE_FILE, title=f"{config.hf_model} on {config.env}")
    console.print(f"learning curve: {out / LEARNING_CURVE_FILE}; checkpoint: {out / 'checkpoint'}")
    return rows


def _table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="training progress")
    cols = ["iteration", "accuracy", "reward", "tokens", "eval_pass@1", "loss", "kl", "seconds"]
    for col in cols:
        table.add_column(col, justify="right")
    for row in rows[-15:]:
        table.add_row(*[("-" if row.get(c) is None else f"{row[c]:.3g}") for c in cols])
    return table


def plot_learning_curve(rows: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_len) = plt.subplots(1, 2, figsize=(11, 4))
    for ax in (ax_acc, ax_len):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    train = [r for r in rows if r.get("accuracy") is not None]
    evals = [r for r in rows if r.get("eval_pass@1") is not None]
    if train:
        ax_acc.plot(
            [r["iteration"] for r in train],
            [r["accuracy"] for r in train],
            "o-",
            label="train accuracy (k samples, T=1)",
        )
    if evals:
        ax_acc.plot(
            [r["iteration"] for r in evals],
            [r["eval_pass@1"] for r in evals],
            "s--",
            label="held-out Pass@1",
        )
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if train:
        ax_len.plot(
            [r["iteration"] for r in train],
            [r["tokens"] for r in train],
            "o-",
            color="C2",
            label="mean response tokens",
        )
    ax_len.set_xlabel("iteration")
    ax_len.set_ylabel("tokens")
    ax_len.grid(alpha=0.3)
    ax_len.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
