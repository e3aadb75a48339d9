"""Training throughput of the learner's model: tokens/s of forward+backward in fp32 and in
bf16 autocast, and as a fraction of the roofline (6 × params FLOPs per token).

    python -m bench.train_throughput [--quick] [--batch 2] [--seq-len 128] [--steps 3]

The model is the learner's own ``CausalLMRLModule`` (``forward_train`` → per-token
log-probs, the learner's bf16 mode is autocast over fp32 master weights), on random token
ids with a full attention mask, loss = −mean of the token log-probs. Each dtype: one
warm-up step on a 1 × 32 batch, then ``--steps`` timed steps at the full shape (median;
bf16: ``--bf16-steps``, as emulated bf16 is ~10-50x slower on CPUs without AVX512-BF16).
Also timed: the no-grad forward the learner runs for reference log-probs (2 × params
FLOPs per token) and one AdamW step.
The matmul peaks are measured in the same process afterwards (:mod:`bench.roofline`).
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "train_throughput"


def build_module(model_path: str, autocast_bf16: bool):
    """The learner's RLModule exactly as K15Config builds it (fp32 weights)."""
    from gymnasium.spaces import Text
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rllib_k15.algorithm.rl_module import CausalLMRLModule

    spec = RLModuleSpec(
        module_class=CausalLMRLModule,
        observation_space=Text(4096),  # prompt / response text; the module does not read them
        action_space=Text(4096),
        model_config={"model_path": model_path, "autocast_bf16": autocast_bf16},
    )
    return spec.build()


def time_steps(module, batch: dict, warmup: dict, steps: int) -> dict[str, Any]:
    """Median seconds of: no-grad forward, forward, backward, AdamW step, over ``steps``
    steps on ``batch`` after one warm-up step on the (smaller) ``warmup`` batch."""
    import torch

    from rllib_k15.algorithm.columns import TOKEN_LOGP

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-6)
    timings: dict[str, list[float]] = {"ref_forward": [], "forward": [], "backward": [],
                                       "optimizer": []}  # fmt: skip
    for step in range(steps + 1):  # step 0 is the warm-up
        data = warmup if step == 0 else batch
        t0 = time.perf_counter()
        with torch.no_grad():
            module.forward_train(data)
        t1 = time.perf_counter()
        loss = -module.forward_train(data)[TOKEN_LOGP].mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step > 0:
            for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[key].append(value)
    return {key: median(values) for key, values in timings.items()} | {"steps": steps}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.roofline import count_parameters, measure_peaks
    from rllib_k15.algorithm.columns import ATTENTION_MASK, INPUT_IDS
    from rllib_k15.models import resolve_model

    path = str(resolve_model(args.model))
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 32000, (args.batch, args.seq_len), generator=generator)
    batch = {INPUT_IDS: input_ids, ATTENTION_MASK: torch.ones_like(input_ids)}
    warmup = {key: value[:1, :32] for key, value in batch.items()}
    tokens = args.batch * args.seq_len
    results: dict[str, Any] = {"tokens_per_step": tokens, "threads": torch.get_num_threads()}
    for label, bf16, steps in (("fp32", False, args.steps), ("bf16", True, args.bf16_steps)):
        module = build_module(path, autocast_bf16=bf16)
        module.train()
        t = time_steps(module, batch, warmup, steps)
        t["train_tokens_per_s"] = tokens / (t["forward"] + t["backward"])
        t["ref_tokens_per_s"] = tokens / t["ref_forward"]
        results[label] = t
        print(f"[{NAME}] {label}: {t['train_tokens_per_s']:.1f} train tok/s", flush=True)
        del module
    results["peaks"] = measure_peaks(seconds=1.0 if args.quick else 2.0)
    results["num_params"] = count_parameters(path)
    return results


def derive_rows(results: dict[str, Any]) -> list[Row]:
    from bench.roofline import decode_flops_per_token, roofline_fraction, train_flops_per_token

    peaks = results["peaks"]
    best = max(peaks["float32_gflops"], peaks["bfloat16_gflops"])
    n = results["num_params"]
    fp32, bf16 = results["fp32"], results["bf16"]
    for t in (fp32, bf16):
        t["roofline_fraction"] = roofline_fraction(
            t["train_tokens_per_s"], train_flops_per_token(n), best
        )
        t["ref_roofline_fraction"] = roofline_fraction(
            t["ref_tokens_per_s"], decode_flops_per_token(n), best
        )
    note = f"peak {best:.0f} GFLOP/s, {results['threads']} threads"
    return [
        Row("training", "fwd+bwd tokens/s bf16 vs fp32", bf16["train_tokens_per_s"], "tok/s",
            fp32["train_tokens_per_s"], "fp32",
            bf16["train_tokens_per_s"] / fp32["train_tokens_per_s"]),
        Row("training", "fwd+bwd fp32 fraction of roofline", fp32["roofline_fraction"],
            note=note),
        Row("training", "fwd+bwd bf16 fraction of roofline", bf16["roofline_fraction"],
            note=note),
        Row("training", "ref log-prob forward tokens/s (fp32)", fp32["ref_tokens_per_s"],
            "tok/s", note=f"{fp32['ref_roofline_fraction']:.0%} of roofline"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=None, help="sequences (default 2; quick 1)")
    parser.add_argument("--seq-len", type=int, default=None, help="default 128 (quick 32)")
    parser.add_argument("--steps", type=int, default=None, help="fp32 timed steps (3; quick 1)")
    parser.add_argument("--bf16-steps", type=int, default=1)
    args = parser.parse_args()
    for key, full, quick in (("batch", 2, 1), ("seq_len", 128, 32), ("steps", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    results = measure(args)
    write_result(NAME, args, config=vars(args), results=results, rows=derive_rows(results))


if __name__ == "__main__":
    main()
