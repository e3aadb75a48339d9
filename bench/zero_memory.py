"""Per-learner memory of ZeRO-0 vs ZeRO-3 with 2 DeepSpeed learners, and learner step time
against 1 learner, on SmolLM2-135M.

    python -m bench.zero_memory [--quick] [--model smollm2-135m-instruct] [--rows 8]
                                [--tokens 64] [--repeats 2]

Each setting builds a real LearnerGroup of K15MirrorDescent learner actors (the path
``K15Config().learners(num_learners=N).training(deepspeed=...)`` takes) and feeds it the
same synthetic iteration batch (``build_train_batch`` over random token ids; rewards 0/1 in
groups of 4), so only the learner is measured, not rollouts:

* ``1 learner``: the plain K15TorchLearner in one actor (what a single-process run uses);
* ``ZeRO-0 × 2`` and ``ZeRO-3 × 2``: K15DeepSpeedLearner on two actors (gloo on CPU).

Memory is what each rank actually HOLDS after an update (before the next iteration's
optimizer reset): parameter storages (ZeRO-3: the local shard plus DeepSpeed's fp32 master
partition) and Adam state, each distinct storage counted once
(:func:`rllib_k15.distributed.deepspeed_module.held_bytes`); the actor's RSS is reported
too. Gradients are transient (freed after every step) and not counted. Step time is the
median wall time of ``LearnerGroup.update`` (reference log-probs + optimizer steps) after
one warm-up update, for the same global batch and minibatch size.
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "zero_memory"
LABEL = "ZeRO memory"  # the table's benchmark column
GROUP = 4  # responses per problem in the synthetic batch


def synthetic_batch(model_path: str, rows: int, tokens: int, seed: int = 0):
    """One iteration's MultiAgentBatch: ``rows`` responses of ``tokens`` tokens in total
    (half prompt, half response), rewards alternating 0/1 inside each group of 4."""
    import numpy as np
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from rllib_k15.algorithm.batching import build_train_batch
    from rllib_k15.models import load_tokenizer
    from rllib_k15.rollout.records import Rollout

    tokenizer = load_tokenizer(model_path)
    rng = np.random.default_rng(seed)
    prompt_len, response_len = tokens // 2, tokens - tokens // 2
    rollouts = []
    for i in range(rows):
        prompt = rng.integers(100, tokenizer.vocab_size - 1, prompt_len).tolist()
        response = rng.integers(100, tokenizer.vocab_size - 1, response_len).tolist()
        rollouts.append(
            Rollout(
                problem_index=i // GROUP, problem_id=f"p{i // GROUP}", prompt_ids=prompt,
                response_ids=response, sample_logp=[-5.0] * response_len,
                finish_reason="stop", reward=float(i % 2), correct=bool(i % 2),
                reason="synthetic", token_iterations=[0] * response_len, slot=i % GROUP,
            )
        )  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    columns, _ = build_train_batch(
        rollouts, pad_token_id=pad, tau=0.1, baseline="mean", length_weight=0.0, iteration=0
    )
    return MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=rows)


def _learner_memory(learner: Any) -> dict[str, int]:
    """Runs inside a learner actor: held bytes (see module doc) and process RSS."""
    import psutil

    if hasattr(learner, "memory_report"):
        report = dict(learner.memory_report())
    else:  # the plain learner: its module's parameters and its AdamW state
        from rllib_k15.distributed.deepspeed_module import storage_bytes

        module = learner.module[next(iter(learner.module.keys()))]
        optimizers = list(learner._optimizer_parameters)
        report = {
            "param_bytes": storage_bytes(module.parameters()),
            "optimizer_state_bytes": storage_bytes(
                t for opt in optimizers for st in opt.state.values() for t in st.values()
            ),
        }
    report["rss_bytes"] = psutil.Process().memory_info().rss
    return report


def measure(
    name: str, model_path: str, *, num_learners: int, deepspeed: dict | None, batch: Any,
    minibatch_size: int, micro_batch_size: int, repeats: int,
) -> dict[str, Any]:  # fmt: skip
    """Build a LearnerGroup, run 1 + ``repeats`` updates on ``batch``, read its memory."""
    import gymnasium as gym
    import k15_envs  # noqa: F401  (registers k15/Arithmetic-v0)
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from rllib_k15 import K15Config

    rows = len(batch)
    config = (
        K15Config()
        .environment("k15/Arithmetic-v0")
        .training(
            hf_model=model_path, deepspeed=deepspeed, samples_per_problem=GROUP,
            problems_per_iteration=rows // GROUP, minibatch_size=minibatch_size,
            micro_batch_size=micro_batch_size, autocast_bf16=False,
        )
        .learners(num_learners=num_learners)
    )  # fmt: skip
    config.validate()
    text = gym.spaces.Text(max_length=8)
    started = time.perf_counter()
    group = config.build_learner_group(spaces={DEFAULT_MODULE_ID: (text, text)})
    build_seconds = time.perf_counter() - started
    try:
        seconds = []
        for _ in range(1 + repeats):
            start = time.perf_counter()
            group.update(
                batch=batch.copy(), minibatch_size=minibatch_size, num_epochs=1,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0},
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
        memory = group._get_results(group.foreach_learner(_learner_memory))
    finally:
        group.shutdown()
    out = {
        "name": name, "num_learners": num_learners, "deepspeed": deepspeed,
        "build_seconds": build_seconds, "update_seconds": seconds,
        "update_seconds_median": median(seconds[1:]), "per_learner": memory,
    }  # fmt: skip
    print(
        f"{name}: update {out['update_seconds_median']:.1f} s, held per learner "
        f"{[round((m['param_bytes'] + m['optimizer_state_bytes']) / 2**20) for m in memory]} MiB",
        flush=True,
    )
    return out


def _held_mib(result: dict[str, Any]) -> float:
    """Largest rank's parameter + optimizer-state bytes, in MiB."""
    return max(m["param_bytes"] + m["optimizer_state_bytes"] for m in result["per_learner"]) / 2**20


def summary_rows(single: dict, zero0: dict, zero3: dict) -> list[Row]:
    """Held bytes and Adam state per learner, ZeRO-3 ÷ ZeRO-0 (lower is better), and each
    2-learner update time ÷ one learner's."""
    held0, held3 = _held_mib(zero0), _held_mib(zero3)
    opt0 = max(m["optimizer_state_bytes"] for m in zero0["per_learner"]) / 2**20
    opt3 = max(m["optimizer_state_bytes"] for m in zero3["per_learner"]) / 2**20
    t1 = single["update_seconds_median"]
    return [
        Row(LABEL, "held per learner (params + Adam), ZeRO-3 × 2", held3, "MiB", held0,
            "ZeRO-0 × 2", held3 / held0, higher_is_better=False,
            note="fp32 weights: DeepSpeed keeps a separate fp32 master partition, so 2/3 "
                 "is the floor with 2 ranks (bf16 weights: 1/2)"),
        Row(LABEL, "Adam state per learner, ZeRO-3 × 2", opt3, "MiB", opt0, "ZeRO-0 × 2",
            opt3 / opt0, higher_is_better=False),
        Row(LABEL, "update seconds, ZeRO-0 × 2", zero0["update_seconds_median"], "s", t1,
            "1 learner", zero0["update_seconds_median"] / t1, higher_is_better=False),
        Row(LABEL, "update seconds, ZeRO-3 × 2", zero3["update_seconds_median"], "s", t1,
            "1 learner", zero3["update_seconds_median"] / t1, higher_is_better=False,
            note="2 learners share the same 2 cores here: no speed-up expected on this box"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=8, help="responses per iteration batch")
    parser.add_argument("--tokens", type=int, default=64, help="prompt + response tokens")
    parser.add_argument("--repeats", type=int, default=2, help="timed updates per setting")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.tokens, args.repeats = 8, 32, 1
    if args.rows % (2 * GROUP):
        parser.error(f"--rows ({args.rows}) must be a multiple of {2 * GROUP}")

    import ray

    from rllib_k15.models import resolve_model

    model_path = str(resolve_model(args.model))
    batch = synthetic_batch(model_path, args.rows, args.tokens)
    common = dict(batch=batch, minibatch_size=args.rows // 2, micro_batch_size=4,
                  repeats=args.repeats)  # fmt: skip
    ray.init(include_dashboard=False, num_cpus=4, log_to_driver=False)
    try:
        single = measure("1 learner", model_path, num_learners=1, deepspeed=None, **common)
        zero0 = measure("ZeRO-0 x 2", model_path, num_learners=2,
                        deepspeed={"zero_stage": 0}, **common)  # fmt: skip
        zero3 = measure("ZeRO-3 x 2", model_path, num_learners=2,
                        deepspeed={"zero_stage": 3}, **common)  # fmt: skip
    finally:
        ray.shutdown()
    ratio = _held_mib(zero3) / _held_mib(zero0)
    print(f"ZeRO-3 / ZeRO-0 held bytes per learner: {ratio:.2f}", flush=True)
    config = {k: getattr(args, k) for k in ("model", "rows", "tokens", "repeats")}
    config.update(model_path=model_path, minibatch_size=args.rows // 2, micro_batch_size=4)
    results = {"single": single, "zero0": zero0, "zero3": zero3, "held_ratio_zero3_vs_zero0": ratio}
    write_result(NAME, args, config=config, results=results,
                 rows=summary_rows(single, zero0, zero3))  # fmt: skip


if __name__ == "__main__":
    main()
