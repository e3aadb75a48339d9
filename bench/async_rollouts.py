"""Overlapped generation and training (``async_rollouts``) vs the synchronous loop.

    python -m bench.async_rollouts [--quick] [--out FILE] [--iterations 5] [--rounds 1]

Workload: the quickstart run (``tuned_examples/quickstart_smollm2.yaml``: the embedded
SmolLM2-135M-Instruct, 8 problems × 4 samples × ≤ 96 tokens, vLLM, the machine's precision)
with one remote EnvRunner, so the engine has its own process, and evaluation off. Each mode
trains ``--iterations`` iterations in its own child process; the first is not measured
(engine warm-up, and in async mode the only iteration whose sampling cannot overlap).

Metrics: wall seconds per 1000 trained tokens, async ÷ sync (< 1: the overlap pays), the
async run's mean ``async/overlap_fraction`` (the share of a batch's sampling wall time that
ran beside a learner update) and the driver's wait for sampling after each update. On
2 shared CPU cores the engine and the learner compete for the same cores, so the overlap
mostly time-slices them; the layout the option is for gives each side its own device.
Results: ``bench/results/async_rollouts.json``. About 6-8 min on 2 cores (AMX, bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "async_rollouts"
LABEL = "async rollouts"
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tuned_examples" / "quickstart_smollm2.yaml"
SPLIT = ("sampling_seconds", "learner_update_seconds", "weight_sync_seconds")
ASYNC_KEYS = ("async/overlap_fraction", "async/wait_seconds", "async/sampling_wall_seconds",
              "async/staleness")  # fmt: skip


def run_mode(mode: str, iterations: int) -> dict[str, Any]:
    """Child process: ``iterations`` of the quickstart run, synchronous or async."""
    import ray

    from rllib_k15 import K15Config
    from rllib_k15.runs.experiment import apply_sections, load_experiment_file

    ray.init(include_dashboard=False, num_cpus=2, log_to_driver=False)
    spec = load_experiment_file(CONFIG)
    config = apply_sections(K15Config(), spec["sections"], str(CONFIG))
    config = config.training(async_rollouts=mode == "async", eval_interval=0)
    config = config.env_runners(num_env_runners=1)
    algo = config.build_algo()
    records = []
    try:
        for it in range(iterations):
            start = time.perf_counter()
            result = algo.train()
            seconds = time.perf_counter() - start
            k15 = result.get("k15", {})
            tokens = int(k15.get("num_responses", 0) * k15.get("response_tokens_mean", 0))
            records.append(
                {"iteration": it, "wall_seconds": seconds, "trained_tokens": tokens,
                 "loadavg_1m": os.getloadavg()[0],
                 **{n: float(k15.get(n, 0.0)) for n in SPLIT + ASYNC_KEYS}}
            )  # fmt: skip
            print(json.dumps(records[-1]), flush=True)
    finally:
        algo.stop()
        ray.shutdown()
    return {"mode": mode, "iterations": records}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over the measured iterations (the first of each run is warm-up)."""
    measured = [r for run in runs for r in run["iterations"][1:]]
    n = max(len(measured), 1)
    wall = sum(r["wall_seconds"] for r in measured)
    tokens = sum(r["trained_tokens"] for r in measured)
    out = {
        "measured_iterations": float(len(measured)),
        "trained_tokens": float(tokens),
        "seconds_per_1k_trained_tokens": 1000 * wall / tokens if tokens else float("nan"),
        "iteration_seconds_mean": wall / n,
        "loadavg_1m_mean": sum(r["loadavg_1m"] for r in measured) / n,
    }
    for name in SPLIT + ASYNC_KEYS:
        out[f"{name}_mean"] = sum(r[name] for r in measured) / n
    return out


def summary_rows(summary: Mapping[str, Mapping[str, float]]) -> list[Row]:
    sync, asy = summary["sync"], summary["async"]
    key = "seconds_per_1k_trained_tokens"
    return [
        Row(LABEL, "wall seconds per 1k trained tokens", asy[key], "s", sync[key],
            "synchronous", asy[key] / sync[key], higher_is_better=False,
            note=f"quickstart, 1 remote EnvRunner; load {asy['loadavg_1m_mean']:.1f} "
            f"(sync: {sync['loadavg_1m_mean']:.1f})"),
        Row(LABEL, "sampling time beside a learner update", asy["async/overlap_fraction_mean"],
            note=f"staleness {asy['async/staleness_mean']:.1f} version(s)"),
        Row(LABEL, "driver wait for sampling after the update", asy["async/wait_seconds_mean"],
            "s", sync["sampling_seconds_mean"], "synchronous sampling",
            asy["async/wait_seconds_mean"] / sync["sampling_seconds_mean"],
            higher_is_better=False),
        Row(LABEL, "learner update seconds", asy["learner_update_seconds_mean"], "s",
            sync["learner_update_seconds_mean"], "synchronous",
            asy["learner_update_seconds_mean"] / sync["learner_update_seconds_mean"],
            higher_is_better=False, note="the cores are shared with the engine during it"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, NAME)
    p.add_argument("--iterations", type=int, default=5, help="per run, the first not measured")
    p.add_argument("--rounds", type=int, default=1, help="2: sync, async, async, sync (ABBA)")
    p.add_argument("--child", choices=("sync", "async"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        Path(args.child_out).write_text(json.dumps(run_mode(args.child, args.iterations)))
        return 0
    if args.quick:
        args.iterations = 3
    started = time.time()
    modes: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
    order = [m for r in range(args.rounds) for m in ("sync", "async")[:: 1 - 2 * (r % 2)]]
    with tempfile.TemporaryDirectory(prefix="k15-bench-async-") as tmp:
        for run, mode in enumerate(order):
            out = Path(tmp) / f"{run}-{mode}.json"
            cmd = [sys.executable, "-m", "bench.async_rollouts", "--child", mode,
                   "--child-out", str(out), "--iterations", str(args.iterations)]  # fmt: skip
            env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
            subprocess.run(cmd, check=True, env=env, cwd=REPO)
            modes[mode].append(json.loads(out.read_text()))
    summary = {m: summarize(runs) for m, runs in modes.items()}
    results = {"elapsed_seconds": time.time() - started, "order": order, "summary": summary,
               "runs": modes}  # fmt: skip
    config = {k: v for k, v in vars(args).items() if k not in ("child", "child_out")}
    path = write_result(NAME, args, config=config, results=results, rows=summary_rows(summary))
    for mode, s in summary.items():
        per_1k, per_it = s["seconds_per_1k_trained_tokens"], s["iteration_seconds_mean"]
        print(f"{mode:6s} {s['measured_iterations']:.0f} it, {per_1k:.1f} s/1k trained tok, "
              f"iteration {per_it:.1f} s")  # fmt: skip
    print(f"async/sync: {summary_rows(summary)[0].ratio:.2f}  ({path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
