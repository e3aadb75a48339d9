"""This machine's matmul roofline, and throughput expressed as a fraction of it.

    python -m bench.roofline [--quick] [--threads N] [--size 768]

The peak is measured, not looked up: square ``size × size`` matmuls in fp32 and bf16 with
torch (768: big enough for full-speed kernels, small enough that emulated bf16 takes
seconds, not minutes), in the calling process, with its current thread count — benchmarks call
:func:`measure_peaks` in the same process, right after the workload they relate it to, so
both see the same threads and (roughly) the same load from other processes. The best of
a few windows is kept (the peak the cores reach when not interrupted).

FLOPs per token (N = parameters; the tied embedding counted once, as the LM head matmul):
decoding 2·N (one multiply-add per weight), training 6·N (forward 2·N + backward 4·N).
Attention's context-length-dependent FLOPs are left out, as is usual for these estimates.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = [
    "count_parameters",
    "decode_flops_per_token",
    "matmul_gflops",
    "measure_peaks",
    "top_ops",
    "roofline_fraction",
    "train_flops_per_token",
]


def decode_flops_per_token(num_params: int) -> float:
    """FLOPs to generate one token: 2·N (a multiply and an add per weight)."""
    return 2.0 * num_params


def train_flops_per_token(num_params: int) -> float:
    """FLOPs to train on one token: 6·N (forward 2·N, backward 4·N)."""
    return 6.0 * num_params


def roofline_fraction(tokens_per_s: float, flops_per_token: float, peak_gflops: float) -> float:
    """Fraction of the measured peak: tokens/s × FLOPs/token ÷ (peak GFLOP/s × 1e9)."""
    if peak_gflops <= 0:
        raise ValueError(f"peak_gflops ({peak_gflops}) must be > 0")
    return tokens_per_s * flops_per_token / (peak_gflops * 1e9)


def count_parameters(model_dir: str | Path) -> int:
    """Unique parameters of the HF model in ``model_dir`` (built on the meta device, so
    nothing is loaded; tied weights count once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once


def matmul_gflops(dtype: str = "float32", size: int = 1024, seconds: float = 2.0) -> float:
    """Best GFLOP/s of ``size``³ matmuls (2·size³ FLOPs each) over 3 timing windows."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    torch.mm(a, b)  # warm-up: allocation, kernel selection
    flops = 2.0 * size**3
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, count * flops / elapsed / 1e9)
    return best


def measure_peaks(seconds: float = 2.0, size: int = 768) -> dict[str, float]:
    """fp32 and bf16 matmul GFLOP/s plus the torch thread count they ran with."""
    import torch

    return {
        "float32_gflops": matmul_gflops("float32", size, seconds),
        "bfloat16_gflops": matmul_gflops("bfloat16", size, seconds),
        "threads": torch.get_num_threads(),
        "size": size,
    }


def top_ops(fn, limit: int = 12) -> list[dict[str, float | str]]:
    """Run ``fn()`` under the torch profiler (CPU); the ops with the most self CPU time,
    each with its share of the total — where a workload's time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1000,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:limit]
    ]


def main() -> None:
    from bench.common import Row, add_common_args, write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "roofline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--size", type=int, default=768)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = measure_peaks(seconds=1.0 if args.quick else 3.0, size=args.size)
    rows = [
        Row("roofline", f"matmul fp32 ({peaks['threads']} threads)", peaks["float32_gflops"],
            "GFLOP/s"),
        Row("roofline", f"matmul bf16 ({peaks['threads']} threads)", peaks["bfloat16_gflops"],
            "GFLOP/s", baseline=peaks["float32_gflops"], baseline_name="fp32",
            ratio=peaks["bfloat16_gflops"] / peaks["float32_gflops"]),
    ]  # fmt: skip
    write_result("roofline", args, config=vars(args), results=peaks, rows=rows)


if __name__ == "__main__":
    main()
