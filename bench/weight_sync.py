"""Weight sync learner → rollout engine (SmolLM2-135M): seconds per sync, and as a fraction
of one RL iteration.

    python -m bench.weight_sync [--quick] [--repeats 5] [--model smollm2-135m-instruct]

Measured on the real path of a training iteration (``K15MirrorDescent.
_sync_weights_to_env_runners``): the learner's RLModule state is read in the engine's dtype,
handed to the (local) EnvRunner and loaded into its vLLM engine in place
(``VLLMEngine.load_weights``). The engine-only part is the EnvRunner's own
``weight_sync_seconds`` metric. Standalone, this builds a small K15MirrorDescent on
k15/Arithmetic-v0, runs a warm-up iteration (engine start) and a timed one (the iteration
time the fraction refers to), then times ``--repeats`` syncs. ``bench.rl_iteration`` calls
:func:`measure_weight_sync` on its own algorithm instead, so ``run_all`` does not pay for a
second engine start.
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "weight_sync"
TARGET_SECONDS = 1.0  # target: weight sync <= 1 s for 135M


def measure_weight_sync(algo: Any, repeats: int) -> dict[str, Any]:
    """Time ``repeats`` full learner → engine syncs on a built algorithm whose EnvRunner is
    local (``num_env_runners=0``) and whose engine has started, alternating with RLlib's
    ``EnvRunnerGroup.sync_weights`` (which ``ray.put``s the state first) so the two paths
    are compared side by side under the same load."""
    from rllib_k15.metric_names import WEIGHT_SYNC_SECONDS

    runner = algo.env_runner
    total, engine, via_rllib = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        algo._sync_weights_to_env_runners()  # the training step's own sync
        total.append(time.perf_counter() - start)
        engine.append(float(runner.metrics.peek(WEIGHT_SYNC_SECONDS)))
        start = time.perf_counter()
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group, inference_only=True
        )
        via_rllib.append(time.perf_counter() - start)
    state = algo.local_learner.hf_state_dict()
    return {
        "sync_seconds": total,
        "engine_load_seconds": engine,
        "rllib_sync_weights_seconds": via_rllib,
        "sync_seconds_median": median(total),
        "engine_load_seconds_median": median(engine),
        "rllib_sync_weights_seconds_median": median(via_rllib),
        "num_tensors": len(state),
        "bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "learner_dtype": str(next(iter(state.values())).dtype),
        "engine_dtype": getattr(runner.engine, "dtype", None),
    }


def sync_rows(sync: dict[str, Any], iteration_seconds: float | None) -> list[Row]:
    """Seconds against the 1 s target, and the fraction of one iteration."""
    seconds = sync["sync_seconds_median"]
    rows = [
        Row(
            "weight sync",
            "learner -> vLLM engine, seconds",
            seconds,
            "s",
            target=TARGET_SECONDS,
            higher_is_better=False,
            note=f"engine load {sync['engine_load_seconds_median']:.2f} s, "
            f"{sync['bytes'] / 2**20:.0f} MiB",
        )
    ]
    if sync.get("rllib_sync_weights_seconds_median"):
        rllib = sync["rllib_sync_weights_seconds_median"]
        rows.append(
            Row(
                "weight sync",
                "direct to the local EnvRunner, seconds",
                seconds,
                "s",
                baseline=rllib,
                baseline_name="RLlib EnvRunnerGroup.sync_weights (ray.put first)",
                ratio=seconds / rllib,
                higher_is_better=False,
            )
        )
    if iteration_seconds:
        rows.append(Row("weight sync", "fraction of iteration time", seconds / iteration_seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=None, help="syncs (5; quick 2)")
    parser.add_argument("--dtype", default="auto", help="engine dtype (auto: the machine's)")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)

    from bench.rl_iteration import build_algo

    problems, samples, max_tokens = (2, 2, 16) if args.quick else (4, 4, 64)
    algo = build_algo(args.model, problems, samples, max_tokens, args.dtype)
    try:
        algo.train()  # warm-up: starts the engine
        start = time.perf_counter()
        algo.train()  # the iteration the fraction refers to (it includes one sync)
        iteration_seconds = time.perf_counter() - start
        sync = measure_weight_sync(algo, args.repeats)
    finally:
        algo.stop()
    sync["iteration_seconds"] = iteration_seconds
    write_result(
        NAME, args, config=vars(args), results=sync, rows=sync_rows(sync, iteration_seconds)
    )


if __name__ == "__main__":
    main()
