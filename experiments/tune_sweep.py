"""τ × length-reward warm-up sweep with Ray Tune (experiment 4) — the Tune example.

Every cell is one K15MirrorDescent trial of the same experiment file with ``tau`` and
``length_penalty_warmup_iters`` taken from a grid; the last held-out evaluation of each
trial gives the cell's Pass@1 and mean response tokens::

    python experiments/tune_sweep.py                                   # 3 τ × 2 warm-ups
    python experiments/tune_sweep.py --taus 0.03 0.3 --warmups 0 4 --iterations 6 --eval-interval 3
    python experiments/tune_sweep.py --config tuned_examples/quickstart_smollm2.yaml \\
        --out docs/results/tune_tau_warmup_quick
    python experiments/tune_sweep.py \\
        --config tuned_examples/ablations/budget64_addition_smollm2.yaml \\
        --taus 0.01 0.1 1 --warmups 0 3 6 --scheduler asha --grace-period 3 \\
        --out docs/results/tune_asha_tau_warmup           # ASHA stops weak cells early

With ``--scheduler asha`` Tune's ``ASHAScheduler`` compares the trials' held-out Pass@1 at
iterations ``grace * rf^k`` (multiples of ``eval_interval``, so every rung is an evaluated
iteration) and stops those below the top ``1/rf`` seen at that rung so far. A stopped cell's
Pass@1 is from an earlier iteration than a finished one's: the table says which iteration
each number comes from, and the best cell is chosen among the trials that finished.

Writes ``<out>/cells.json`` (one record per trial), ``<out>/table.md`` and
``<out>/heatmap.png``. Trials run one at a time (``max_concurrent_trials``); on a cluster
raise it, and Tune places trials wherever their resources fit. An interrupted sweep is
continued from ``--storage`` with ``--resume``: finished trials are kept, a trial that was
running or that the time budget cut short continues from its last checkpoint (here: from
iteration 0, trials checkpoint at the end), the time budget starts afresh, and ASHA's rung
records, which Tune does not save, are rebuilt from the trials' results
(``prepare_resume``). Tune's restored grid generator does not create the cells the first
process had not started; run those as a new sweep that starts from the old one's rungs and
joins its cells in the table::

    python experiments/tune_sweep.py ... --taus 1 --name <new name> \
        --compare-with runs/tune_sweep/<old name>

The search space is ordinary Tune: this is the part to copy::

    config = apply_sections(K15Config(), spec["sections"])
    config.training(tau=tune.grid_search(taus),
                    length_penalty_warmup_iters=tune.grid_search(warmups))
    tune.Tuner(K15MirrorDescent, param_space=config, run_config=tune.RunConfig(...)).fit()
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rllib_k15.metric_names import (
    EVAL_RESULTS,
    PASS_AT_1,
    PASS_AT_1_HIGH,
    PASS_AT_1_LOW,
    RESPONSE_TOKENS_MEAN,
)

ROOT = Path(__file__).resolve().parents[1]


def evaluations(history: list[dict]) -> list[dict[str, float | None]]:
    """Every held-out evaluation in a trial's results: iteration, Pass@1 (with its 95 %
    bootstrap interval over problems where the result has one) and mean tokens."""
    found = []
    for result in history:
        held_out = result.get(EVAL_RESULTS) or {}
        if _number(held_out.get(PASS_AT_1)) is None:
            continue
        row = {
            "iteration": result.get("training_iteration"),
            "pass_at_1": float(held_out[PASS_AT_1]),
            "tokens": _number(held_out.get(RESPONSE_TOKENS_MEAN)),
        }
        for key in (PASS_AT_1_LOW, PASS_AT_1_HIGH):
            if _number(held_out.get(key)) is not None:
                row[key] = float(held_out[key])
        found.append(row)
    return found


def last_evaluation(history: list[dict]) -> dict[str, float | None]:
    """Pass@1 and tokens of the last iteration that evaluated, from a trial's results."""
    found = evaluations(history)
    if not found:
        return {"iteration": None, "pass_at_1": None, "tokens": None}
    return {key: found[-1][key] for key in ("iteration", "pass_at_1", "tokens")}


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The iterations where ASHA compares trials: ``grace · rf^k < max_t`` (Tune's rungs;
    the trials still running at ``max_t`` simply finish)."""
    rungs, t = [], grace_period
    while t < max_t:
        rungs.append(t)
        t *= reduction_factor
    return rungs


def asha_scheduler(iterations: int, eval_interval: int, grace_period: int, reduction_factor: int):
    """Tune's ``ASHAScheduler`` on the held-out Pass@1 (``k15_eval/pass_at_1``, maximised).

    Raises ``ValueError`` unless every rung is an evaluated iteration: ``grace_period`` a
    multiple of ``eval_interval`` and ``reduction_factor`` an integer ≥ 2.

    K15MirrorDescent reports ``k15_eval`` only on evaluated iterations. ASHA skips a result
    without its metric, but Tune's strict metric check would end the sweep at iteration 1,
    so this turns that check off (``TUNE_DISABLE_STRICT_METRIC_CHECKING``) for the driver.
    """
    import os

    from ray.tune.schedulers import ASHAScheduler

    if grace_period < 1 or grace_period % eval_interval or reduction_factor < 2:
        raise ValueError(
            f"--grace-period ({grace_period}) must be a positive multiple of eval_interval "
            f"({eval_interval}) and --reduction-factor ({reduction_factor}) at least 2, so "
            "that every ASHA rung is an evaluated iteration"
        )
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=f"{EVAL_RESULTS}/{PASS_AT_1}",
        mode="max",
        max_t=iterations,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )


def prepare_resume(scheduler, experiment_dir: Path, iterations: int) -> dict[str, list[str]]:
    """Make a restored sweep carry on where it stopped, in the latest experiment state.

    Three things Tune's restore does not do for this sweep:

    - **ASHA's rung records.** Tune saves trials and searcher but not the scheduler, so a
      resumed ASHA would compare the remaining cells only with each other. Every trial's
      results (``result.json``, flattened as Tune flattens them) are passed through
      ``on_trial_result``, which rebuilds the records exactly as the first process made them.
    - **The time budget.** Tune saves the ``TimeoutStopper`` with what was left of it; the
      saved stopper is dropped, so ``time_budget_s`` applies afresh to the resumed part.
    - **Trials the budget cut short.** A trial the timeout stopped is TERMINATED like one ASHA
      stopped; one that ran fewer than ``iterations`` and that ASHA (if any) would not have
      stopped is set back to PAUSED, so Tune continues it from its last checkpoint (from
      iteration 0 if it has none).

    Returns the trial ids replayed into the scheduler and those requeued.
    """
    from ray.tune.schedulers import TrialScheduler

    path, state = _latest_state(experiment_dir)
    state["runner_data"].pop("_stopper", None)
    trials = [json.loads(entry[0]) for entry in state["trial_data"]]
    histories = trial_histories(experiment_dir, state)
    decisions = replay_into_scheduler(scheduler, histories)
    requeued = []
    for entry, trial in zip(state["trial_data"], trials, strict=True):
        rows = histories[trial["trial_id"]]
        reached = max((row.get("training_iteration", 0) for row in rows), default=0)
        stopped = decisions.get(trial["trial_id"]) == TrialScheduler.STOP
        if trial["status"] == "TERMINATED" and reached < iterations and not stopped:
            trial["status"] = "PAUSED"
            entry[0] = json.dumps(trial, indent=2)
            requeued.append(trial["trial_id"])
    path.write_text(json.dumps(state, indent=2))
    return {"replayed": list(decisions), "requeued": requeued}


def _latest_state(experiment_dir: Path) -> tuple[Path, dict]:
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        raise FileNotFoundError(f"no experiment_state-*.json in {experiment_dir}")
    return states[-1], json.loads(states[-1].read_text())


def trial_histories(experiment_dir: Path, state: dict | None = None) -> dict[str, list[dict]]:
    """Every trial's results in a Tune experiment directory, flattened as Tune flattens them
    for its schedulers (``k15_eval/pass_at_1``), keyed by trial id."""
    from ray.tune.utils import flatten_dict

    state = state if state is not None else _latest_state(experiment_dir)[1]
    histories = {}
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        results = experiment_dir / trial["relative_logdir"] / "result.json"
        rows = results.read_text().splitlines() if results.exists() else []
        histories[trial["trial_id"]] = [flatten_dict(json.loads(r)) for r in rows if r.strip()]
    return histories


def replay_into_scheduler(scheduler, histories: dict[str, list[dict]]) -> dict[str, str]:
    """Pass recorded results through an ASHA scheduler in the order they first arrived
    (timestamp, then iteration), so its rungs hold what they held then; returns each
    trial's last decision. A scheduler that is not ASHA is left alone ({})."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    if not isinstance(scheduler, AsyncHyperBandScheduler):
        return {}
    handles = {trial_id: _TrialHandle(trial_id) for trial_id in histories}
    for handle in handles.values():
        scheduler.on_trial_add(None, handle)
    arrivals = sorted(
        (row.get("timestamp", 0), row.get("training_iteration", 0), order, trial_id, row)
        for order, (trial_id, rows) in enumerate(histories.items())
        for row in rows
    )
    decisions = {}
    for *_, trial_id, row in arrivals:
        decisions[trial_id] = scheduler.on_trial_result(None, handles[trial_id], row)
    for handle in handles.values():
        scheduler.on_trial_remove(None, handle)
    return decisions


class _TrialHandle:
    """The one attribute of a Tune ``Trial`` that ASHA's bookkeeping reads."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def best_finished_cell(cells: list[dict], iterations: int) -> dict | None:
    """The highest last Pass@1 among the cells that ran all ``iterations`` (a cell ASHA
    stopped early was measured earlier in training and is not comparable)."""
    finished = [c for c in cells if c.get("iteration") == iterations and c["pass_at_1"] is not None]
    return max(finished, key=lambda c: c["pass_at_1"], default=None)


def _number(value) -> float | None:
    """A finite float, or None (Tune's dataframe holds NaN where nothing was logged)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def markdown_table(cells: list[dict]) -> str:
    lines = ["| tau | warm-up iterations | held-out Pass@1 | mean tokens | at iteration |",
             "|---|---|---|---|---|"]  # fmt: skip
    for c in sorted(cells, key=lambda c: (c["tau"], c["warmup"])):
        p, t = c["pass_at_1"], c["tokens"]
        interval = (
            f" [{c[PASS_AT_1_LOW]:.3f}, {c[PASS_AT_1_HIGH]:.3f}]"
            if c.get(PASS_AT_1_LOW) is not None and c.get(PASS_AT_1_HIGH) is not None
            else ""
        )
        lines.append(
            f"| {c['tau']:g} | {c['warmup']} | {'-' if p is None else f'{p:.3f}'}{interval} | "
            f"{'-' if t is None else f'{t:.1f}'} | {c['iteration'] or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tuned_examples/k15_arithmetic_smollm2.yaml")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--eval-interval", type=int, help="override training.eval_interval")
    parser.add_argument("--storage", default="runs/tune_sweep", help="Tune storage_path")
    parser.add_argument("--out", default="docs/results/tune_tau_warmup")
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --storage")
    parser.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo",
                        help="fifo: every cell runs --iterations; asha: Tune's ASHAScheduler "
                             "stops cells whose held-out Pass@1 trails at a rung")  # fmt: skip
    parser.add_argument("--grace-period", type=int, help="ASHA's first rung (iterations); "
                        "default eval_interval")  # fmt: skip
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA keeps the top 1/rf")
    parser.add_argument("--time-budget-s", type=float, help="Tune stops every trial after this "
                        "many seconds (cells not reached are reported as such)")  # fmt: skip
    parser.add_argument("--name", help="Tune experiment name (default: the config's stem)")
    parser.add_argument("--compare-with", help="an earlier sweep's Tune directory: its trials "
                        "fill ASHA's rungs before this one starts, and its cells join the "
                        "table (to add grid cells to a finished sweep)")  # fmt: skip
    args = parser.parse_args(argv)

    from ray import tune

    from rllib_k15 import K15Config, K15MirrorDescent
    from rllib_k15.evaluation.plots import plot_sweep_heatmaps
    from rllib_k15.runs.experiment import apply_sections, load_experiment_file

    spec = load_experiment_file(ROOT / args.config)
    config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
    if args.eval_interval:
        config.training(eval_interval=args.eval_interval)
    if not config.eval_interval or args.iterations % config.eval_interval:
        parser.error(
            f"--iterations ({args.iterations}) must be a multiple of eval_interval "
            f"({config.eval_interval}) so the last iteration is evaluated (--eval-interval)"
        )
    scheduler = None
    if args.scheduler == "asha":
        grace = args.grace_period or config.eval_interval
        try:
            scheduler = asha_scheduler(
                args.iterations, config.eval_interval, grace, args.reduction_factor
            )
        except ValueError as error:
            parser.error(str(error))
        rungs = asha_rungs(grace, args.reduction_factor, args.iterations)
        print(f"ASHA compares the trials at iterations {rungs}")
    config.training(
        tau=tune.grid_search(args.taus),
        length_penalty_warmup_iters=tune.grid_search(args.warmups),
    )
    storage = (ROOT / args.storage).resolve()
    name = args.name or Path(args.config).stem
    earlier = []
    if args.compare_with:
        earlier_dir = (ROOT / args.compare_with).resolve()
        replayed = replay_into_scheduler(scheduler, trial_histories(earlier_dir))
        print(f"ASHA's rungs start with {len(replayed)} trials of {args.compare_with}")
        earlier = list(tune.Tuner.restore(str(earlier_dir), K15MirrorDescent).get_results())
    if args.resume:
        tuner = tune.Tuner.restore(str(storage / name), K15MirrorDescent)
        restored = tuner._local_tuner._tune_config.scheduler  # Tune has no public accessor
        resumed = prepare_resume(restored, storage / name, args.iterations)
        print(
            f"resuming: ASHA's rungs rebuilt from {len(resumed['replayed'])} trials, "
            f"{len(resumed['requeued'])} cut short by the time budget continue"
        )
    else:
        tuner = tune.Tuner(
            K15MirrorDescent,
            param_space=config,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=args.max_concurrent,
                scheduler=scheduler,
                time_budget_s=args.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                stop={"training_iteration": args.iterations},
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True, num_to_keep=1),
            ),
        )
    grid = tuner.fit()
    cells = []
    for result in [*earlier, *grid]:
        frame = result.metrics_dataframe
        history = [] if frame is None else [_unflatten(r) for r in frame.to_dict("records")]
        evaluated = evaluations(history)
        cells.append({
            "tau": result.config["tau"],
            "warmup": result.config["length_penalty_warmup_iters"],
            **(evaluated[-1] if evaluated else last_evaluation(history)),
            "trained_iterations": max((r.get("training_iteration") or 0 for r in history),
                                      default=0),
            "evaluations": evaluated,
            "error": None if result.error is None else str(result.error),
        })  # fmt: skip
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells.json").write_text(json.dumps(cells, indent=2) + "\n")
    table = markdown_table(cells)
    best = best_finished_cell(cells, args.iterations)
    if best is not None:
        table += (
            f"\n\nBest cell that ran all {args.iterations} iterations: tau {best['tau']:g}, "
            f"warm-up {best['warmup']}, Pass@1 {best['pass_at_1']:.3f}"
            + (f" [{best[PASS_AT_1_LOW]:.3f}, {best[PASS_AT_1_HIGH]:.3f}]"
               if best.get(PASS_AT_1_LOW) is not None else "")
            + f", {best['tokens']:.1f} tokens."
        )  # fmt: skip
    (out / "table.md").write_text(table + "\n")
    print(table)
    panels = [
        ("pass_at_1", "held-out Pass@1 (higher is better)", "viridis"),
        ("tokens", "mean response tokens (lower is better)", "viridis_r"),
    ]
    if args.scheduler == "asha":
        panels.append(("iteration", "iteration of those numbers (ASHA stops early)", "Greys"))
    plot_sweep_heatmaps(
        {(c["tau"], c["warmup"]): c for c in cells},
        out / "heatmap.png",
        row_name="tau",
        col_name="length-reward warm-up (iterations)",
        panels=panels,
        title=f"{Path(args.config).stem}: τ × warm-up, {args.iterations} iterations",
    )
    print(out / "heatmap.png")
    return 1 if any(c["error"] for c in cells) else 0


def _unflatten(row: dict) -> dict:
    """Tune's metrics dataframe flattens nested results with '/': undo it."""
    nested: dict = {}
    for key, value in row.items():
        *parents, leaf = str(key).split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[leaf] = value
    return nested


if __name__ == "__main__":
    raise SystemExit(main())
