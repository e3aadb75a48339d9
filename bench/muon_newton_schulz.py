"""One Muon step over one SmolLM2-135M block's 7 hidden matrices: ``torch.optim.Muon`` (bf16
Newton-Schulz) vs :class:`rllib_k15.algorithm.muon.K15Muon` with fp32 Newton-Schulz, on this
CPU; writes ``bench/results/muon_newton_schulz.json``.

    python bench/muon_newton_schulz.py
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from rllib_k15.algorithm.muon import K15Muon
from rllib_k15.hardware import cpu_has_fast_bf16

# q, k, v, o, gate, up, down of one SmolLM2-135M block (30 blocks in the model)
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def _params() -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    for p in params:
        p.grad = torch.randn(p.shape)
    return params


def median_step_seconds(make_optimizer, repeats: int = 3) -> float:
    optimizer = make_optimizer(_params())
    optimizer.step()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[len(seconds) // 2]


def main() -> None:
    torch.manual_seed(0)
    kwargs = {"lr": 1e-3, "adjust_lr_fn": "match_rms_adamw"}
    out = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_has_fast_bf16": cpu_has_fast_bf16(),
        "threads": torch.get_num_threads(),
    }
    out["torch_bf16_seconds_per_block_step"] = median_step_seconds(
        lambda ps: torch.optim.Muon(ps, **kwargs)
    )
    out["k15_fp32_seconds_per_block_step"] = median_step_seconds(
        lambda ps: K15Muon(ps, ns_dtype=torch.float32, **kwargs)
    )
    out["ratio_torch_over_k15"] = (
        out["torch_bf16_seconds_per_block_step"] / out["k15_fp32_seconds_per_block_step"]
    )
    out["blocks_in_smollm2_135m"] = 30
    text = json.dumps(out, indent=1)
    print(text)
    path = Path(__file__).resolve().parent / "results" / "muon_newton_schulz.json"
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
