"""What the local hardware is good at, so precision defaults follow the machine.

bf16 is only fast on CPUs with native bf16 matmul (AVX512-BF16 or AMX); there it is ~4×
faster than fp32. Elsewhere (e.g. AVX2-only x86) PyTorch emulates it and a bf16 matmul was
measured 6–40× slower than fp32 on one of this project's CI machines (0.4–3 vs 14–20
GFLOP/s, shared cores). Every "auto" precision (learner autocast, engine dtype) uses this
module.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["cpu_has_fast_bf16", "preferred_dtype", "resolve_autocast"]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 or amx_bf16 flags)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cuda_has_bf16() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def preferred_dtype() -> str:
    """'bfloat16' where bf16 matmuls are native (GPU or bf16 CPU), else 'float32'."""
    return "bfloat16" if cuda_has_bf16() or cpu_has_fast_bf16() else "float32"


def resolve_autocast(setting: bool | str) -> bool:
    """Turn a config value True / False / "auto" into a decision."""
    if setting == "auto":
        return preferred_dtype() == "bfloat16"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"`autocast_bf16` ({setting!r}) must be true, false or 'auto'")
