"""Padding-free and shared-prompt learner batches vs padded ones, on a real length mix.

    python -m bench.padding_free [--quick] [--problems 8] [--samples 8] [--repeats 2]

The length mix is real: the embedded model (vLLM) answers ``--problems`` 1- and 2-digit
additions (the addition-curriculum example's env) ``--samples`` times each at temperature 1,
up to ``--max-tokens``; those responses become the learner's train batch exactly as the
trainer builds it (:func:`rllib_k15.algorithm.batching.build_train_batch`). Three learners
of the example's settings (micro-batches of 8, minibatches of 16, OPMD) differ only in the
layout: padded, ``padding_free`` (rows packed end to end) and ``shared_prompt_packing`` (a
prompt's samples with one prompt copy, :mod:`rllib_k15.core.shared_prompts`); each repeat
times, in turn, the reference pass plus one update (every minibatch) over the whole batch.
Reported:

- positions computed per real token: padded = Σ rows × width over the (length-sorted)
  micro-batches; padding-free and shared prompts = Σ bins × capacity; and, for scale, one
  padded block of the
  whole batch (B × longest, what a framework without length sorting pays);
- learner tokens/s (the batch's real tokens / wall of the reference pass + the update) and
  its ratio; the fraction of the roofline (8 × params FLOPs per token: 2 for the reference
  forward, 6 for forward + backward; at the machine's best matmul peak, measured in the
  same process).
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

import numpy as np

from bench.common import Row, add_common_args, arithmetic_prompts, write_result

NAME = "padding_free"
LAYOUTS = ("padded", "padding_free", "shared_prompts")


def sample_length_mix(args: argparse.Namespace, model_path: str) -> list[Any]:
    """Rollouts of the embedded model on additions: real prompt and response lengths."""
    from rllib_k15.engine.base import SamplingParams, encode_chat
    from rllib_k15.engine.vllm_engine import VLLMEngine
    from rllib_k15.rollout.records import Rollout

    half = args.problems // 2
    prompts = arithmetic_prompts(half, 1) + arithmetic_prompts(args.problems - half, 2)
    with VLLMEngine(model_path, seed=0, kv_cache_gib=0.5, max_model_len=512) as engine:
        ids = [encode_chat(engine.tokenizer, p) for p in prompts]
        params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
        outputs = engine.generate(ids, params)
    rollouts = []
    for index, (prompt_ids, completions) in enumerate(zip(ids, outputs)):
        for j, c in enumerate(completions):
            rollouts.append(
                Rollout(
                    problem_index=index,
                    problem_id=str(index),
                    prompt_ids=list(prompt_ids),
                    response_ids=c.token_ids,
                    sample_logp=c.logprobs,
                    finish_reason=c.finish_reason,
                    reward=float(j % 2),
                    correct=bool(j % 2),
                    reason="",
                )
            )  # fmt: skip  (alternating rewards: every group carries a signal)
    return rollouts


def build_learner(model_path: str, layout: str, minibatch: int, micro: int):
    from gymnasium.spaces import Text
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_k15 import K15Config

    config = (
        K15Config()
        .environment("k15/Arithmetic-v0")
        .training(
            hf_model=model_path,
            lr=1e-6,
            minibatch_size=minibatch,
            micro_batch_size=micro,
            padding_free=layout == "padding_free",
            shared_prompt_packing=layout == "shared_prompts",
        )  # fmt: skip
        .debugging(seed=0)
    )
    config.validate()
    learner = config.build_learner(env=None, spaces={DEFAULT_MODULE_ID: (Text(4096), Text(4096))})
    learner.build()
    return learner


def computed_positions(columns: dict, micro: int, layout: str) -> int:
    """Token positions the learner's forwards cover for one pass over the batch."""
    import torch

    from rllib_k15.algorithm.columns import ATTENTION_MASK, INPUT_IDS, RESPONSE_MASK
    from rllib_k15.algorithm.learner import _micro_batches, _shared_prompt_micro_batches
    from rllib_k15.core.packing import pack_rows
    from rllib_k15.core.shared_prompts import pack_shared_prompts

    mask = columns[ATTENTION_MASK]
    shared = layout == "shared_prompts"
    total = 0
    groups = (
        _shared_prompt_micro_batches(columns[INPUT_IDS], mask, columns[RESPONSE_MASK], micro)
        if shared
        else _micro_batches(mask, micro, layout == "padding_free")
    )
    for rows, width in groups:
        sub = torch.as_tensor(mask[rows, :width])
        if shared:
            ids = torch.as_tensor(columns[INPUT_IDS][rows, :width])
            response = torch.as_tensor(columns[RESPONSE_MASK][rows, :width])
            total += pack_shared_prompts(ids, sub, response).input_ids.numel()
        elif layout == "padding_free":
            total += pack_rows(torch.zeros_like(sub), sub).input_ids.numel()
        else:
            total += len(rows) * width
    return total


def time_learner(learner, columns: dict, minibatch: int) -> float:
    """Seconds of the reference pass plus one update over every minibatch."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    rows = len(next(iter(columns.values())))
    batch = MultiAgentBatch(
        {DEFAULT_MODULE_ID: SampleBatch({k: v.copy() for k, v in columns.items()})}, rows
    )
    start = time.perf_counter()
    learner.update(batch=batch, minibatch_size=minibatch, num_epochs=1)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.roofline import count_parameters, measure_peaks
    from rllib_k15.algorithm.batching import build_train_batch
    from rllib_k15.algorithm.columns import ATTENTION_MASK, LOSS_MASK
    from rllib_k15.models import resolve_model

    path = str(resolve_model(args.model))
    rollouts = sample_length_mix(args, path)
    columns, _ = build_train_batch(
        rollouts, pad_token_id=0, tau=0.1, baseline="mean", length_weight=0.0, iteration=0
    )
    mask = columns[ATTENTION_MASK]
    lengths = mask.sum(-1)
    real = int(lengths.sum())
    response = np.array([len(r.response_ids) for r in rollouts])
    results: dict[str, Any] = {
        "rows": len(rollouts),
        "real_tokens": real,
        "row_tokens": {"p10": float(np.percentile(lengths, 10)), "p50": float(np.median(lengths)),
                       "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max())},
        "response_tokens": {"mean": float(response.mean()), "max": int(response.max())},
        "positions_one_block": int(mask.size),
        "samples": args.samples,
    }  # fmt: skip
    learners = {mode: build_learner(path, mode, args.minibatch, args.micro) for mode in LAYOUTS}
    seconds: dict[str, list[float]] = {mode: [] for mode in learners}
    for repeat in range(args.repeats + 1):  # repeat 0 warms both up
        for mode, learner in learners.items():
            elapsed = time_learner(learner, columns, args.minibatch)
            if repeat:
                seconds[mode].append(elapsed)
            print(f"[{NAME}] repeat {repeat} {mode}: {elapsed:.1f} s", flush=True)
    # learner tokens/s = the batch's real tokens / (reference pass + update) wall
    trained = int(columns[LOSS_MASK].astype(bool).sum())
    for mode in learners:
        wall = median(seconds[mode])
        results[mode] = {
            "seconds": seconds[mode],
            "median_seconds": wall,
            "positions": computed_positions(columns, args.micro, mode),
            "learner_tokens_per_s": real / wall,
        }
        results[mode]["positions_per_real_token"] = results[mode]["positions"] / real
    results["trained_response_tokens"] = trained
    results["peaks"] = measure_peaks(seconds=1.0 if args.quick else 2.0)
    results["num_params"] = count_parameters(path)
    return results


def derive_rows(results: dict[str, Any]) -> list[Row]:
    from bench.roofline import roofline_fraction, train_flops_per_token

    padded, free, shared = (results[mode] for mode in LAYOUTS)
    best = max(results["peaks"]["float32_gflops"], results["peaks"]["bfloat16_gflops"])
    flops = train_flops_per_token(results["num_params"])
    for entry in (padded, free, shared):  # per real token: 2N (reference forward) + 6N (fwd + bwd)
        entry["roofline_fraction"] = roofline_fraction(
            entry["learner_tokens_per_s"], flops * 8 / 6, best
        )
    one_block = results["positions_one_block"] / results["real_tokens"]
    mix = results["row_tokens"]
    note = (
        f"{results['rows']} rows, {mix['p10']:.0f}/{mix['p50']:.0f}/{mix['max']} tokens p10/p50/max"
    )
    return [
        Row("padding-free", "positions computed per real token", free["positions_per_real_token"],
            "", padded["positions_per_real_token"], "padded, length-sorted", note=note),
        Row("padding-free", "positions per real token, one padded block", one_block, "",
            note="B x longest row, no length sorting"),
        Row("padding-free", "learner tokens/s (ref pass + update)", free["learner_tokens_per_s"],
            "tok/s", padded["learner_tokens_per_s"], "padded",
            free["learner_tokens_per_s"] / padded["learner_tokens_per_s"]),
        Row("padding-free", "learner fraction of roofline", free["roofline_fraction"], "",
            padded["roofline_fraction"], "padded", note=f"peak {best:.0f} GFLOP/s"),
        Row("shared prompts", "positions computed per real token",
            shared["positions_per_real_token"], "", padded["positions_per_real_token"],
            "padded, length-sorted", note=f"{results['samples']} samples per prompt"),
        Row("shared prompts", "learner tokens/s (ref pass + update)",
            shared["learner_tokens_per_s"], "tok/s", padded["learner_tokens_per_s"], "padded",
            shared["learner_tokens_per_s"] / padded["learner_tokens_per_s"],
            note="tokens of the original rows (prompt copies counted) per second"),
        Row("shared prompts", "learner fraction of roofline", shared["roofline_fraction"], "",
            padded["roofline_fraction"], "padded", note="FLOPs of the original rows"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--minibatch", type=int, default=16)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.model, args.problems, args.samples, args.repeats = "tiny-random-llama", 4, 4, 1
    results = measure(args)
    write_result(NAME, args, config=vars(args), results=results, rows=derive_rows(results))


if __name__ == "__main__":
    main()
