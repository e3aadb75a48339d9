"""One precision decision for the machine: fp32 or bf16 for every "auto" setting.

Every "auto" precision (learner bf16 autocast, engine ``dtype``, DeepSpeed ``bf16``) asks
:func:`decide_precision`; the rules, first match wins:

1. an explicit setting (``"fp32"``/``"float32"``, ``"bf16"``/``"bfloat16"``) — source ``setting``;
2. the environment variable ``K15_PRECISION=fp32|bf16|auto`` — source ``K15_PRECISION``
   (``auto`` falls through; any other value is an error naming the variable);
3. a CUDA device with bf16 support -> bf16 — source ``cuda``;
4. a CPU without ``avx512_bf16``/``amx_bf16`` -> fp32 without measuring — source
   ``no-native-bf16``: PyTorch emulates bf16 there, and a bf16 matmul was measured 6–40×
   slower than fp32 on one of this project's CI machines (0.4–3 vs 14–20 GFLOP/s);
5. otherwise a short measured probe — source ``probe``: fp32 vs bf16 matmuls on the shapes
   of the embedded 135M model (hidden 576, MLP 1536, 256 tokens), interleaved, one thread,
   best of 8 rounds, ~0.15 s (a few s on saturated cores); bf16 only when it is at least
   ``PROBE_MARGIN`` (1.3×) faster. Having the flags is not enough: whether oneDNN's native
   kernels are used (and pay off on shared, loaded cores) is a property of the machine, so
   it is measured once and cached as JSON in the model cache dir (``$K15_CACHE_DIR``, else
   ``~/.cache/rllib_k15``), keyed by the CPU model, its flags and the torch version. A
   corrupt cache file is measured again.

The decision is cached in-process per setting (and ``K15_PRECISION`` value);
``decide_precision.cache_clear()`` forgets it (tests).

    python -c "from rllib_k15.hardware import decide_precision as d; print(d().as_dict())"
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_VAR",
    "PROBE_MARGIN",
    "PrecisionDecision",
    "cpu_has_fast_bf16",
    "cuda_has_bf16",
    "decide_precision",
    "preferred_dtype",
    "probe_cache_path",
    "resolve_autocast",
]

log = logging.getLogger(__name__)

ENV_VAR = "K15_PRECISION"
CACHE_ENV_VAR = "K15_CACHE_DIR"  # the model cache (rllib_k15.models.CACHE_ENV_VAR)
PROBE_FILE = "precision_probe.json"
PROBE_MARGIN = 1.3  # bf16 must be this much faster than fp32 to be chosen
PROBE_FORMAT = 1  # bump when the probe changes: old cache entries are then re-measured
# (rows, hidden) @ (hidden, out): an MLP up-projection and an attention projection of the
# embedded SmolLM2-135M (hidden 576, intermediate 1536) on a 256-token micro-batch
PROBE_SHAPES = ((256, 576, 1536), (256, 576, 576))
PROBE_ROUNDS = 8  # timed rounds of (fp32, bf16), after a warm-up round: ~0.1 s here
PROBE_BUDGET_S = 0.8  # stop early past this (a slow, emulated bf16)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

_SETTINGS = {
    "auto": "auto",
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


@dataclass(frozen=True)
class PrecisionDecision:
    """What "auto" precision means on this machine, and why."""

    dtype: str  # "bfloat16" | "float32"
    source: str  # "setting" | "K15_PRECISION" | "cuda" | "probe" | "no-native-bf16"
    reason: str  # one sentence, with the measured numbers where there are any
    cpu_flags: tuple[str, ...]  # the native-bf16 flags this CPU has, e.g. ("avx512_bf16",)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_flags"] = list(self.cpu_flags)
        return out


# --------------------------------------------------------------------------- the CPU


@functools.cache
def _cpuinfo() -> tuple[str, str]:
    """(model name, flags line) of the first CPU in /proc/cpuinfo (no flags off Linux)."""
    model, flags = "", ""
    if platform.system() == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = value.strip()
    return model or platform.processor() or platform.machine(), flags


def _native_bf16_flags() -> tuple[str, ...]:
    flags = set(_cpuinfo()[1].split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 or amx_bf16 flags).

    Necessary, not sufficient, for bf16 to pay off: :func:`decide_precision` measures."""
    return bool(_native_bf16_flags())


def cuda_has_bf16() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# --------------------------------------------------------------------------- the probe


def probe_cache_path() -> Path:
    """``$K15_CACHE_DIR/precision_probe.json``, else ``~/.cache/rllib_k15/precision_probe.json``."""
    env = os.environ.get(CACHE_ENV_VAR)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "rllib_k15"
    return root / PROBE_FILE


def _probe_key() -> str:
    import torch

    model, flags = _cpuinfo()
    digest = hashlib.sha1(flags.encode()).hexdigest()[:12]
    return f"{model or 'unknown cpu'} | flags {digest} | torch {torch.__version__}"


def _measure() -> dict[str, Any]:
    """Time fp32 vs bf16 matmuls on the embedded model's shapes; returns the cache entry.

    One thread, fp32 and bf16 interleaved round by round, best time of each: on shared,
    loaded cores a multi-threaded matmul waits for its slowest (preempted) thread, and
    timing one dtype after the other lets a change of load decide the comparison (both
    seen here, 2 shared cores: 2-thread best-of-5 runs gave 0.7x, 4.9x and 2.0x in a row;
    this gives 2.1x +- 0.05). The per-core ratio is what bf16 buys at any thread count."""
    import torch

    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen))
        for m, k, n in PROBE_SHAPES
    ]
    flop = sum(2 * m * k * n for m, k, n in PROBE_SHAPES)
    names = ("float32", "bfloat16")
    operands = {
        name: [(a.to(getattr(torch, name)), b.to(getattr(torch, name))) for a, b in pairs]
        for name in names
    }
    best = dict.fromkeys(names, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a no-op inside an in-process vLLM engine: then measured as is
    try:
        with torch.inference_mode():
            started = time.perf_counter()
            for rnd in range(PROBE_ROUNDS + 1):  # round 0 warms up (oneDNN builds kernels)
                for name in names:
                    t0 = time.perf_counter()
                    for a, b in operands[name]:
                        torch.mm(a, b)
                    if rnd:
                        best[name] = min(best[name], time.perf_counter() - t0)
                if rnd and time.perf_counter() - started > PROBE_BUDGET_S:
                    break  # emulated bf16 (~100x slower) ends the probe after one round
            measured_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    speedup = best["float32"] / best["bfloat16"]
    return {
        "format": PROBE_FORMAT,
        "dtype": "bfloat16" if speedup >= PROBE_MARGIN else "float32",
        "fp32_gflops": round(flop / best["float32"] / 1e9, 1),
        "bf16_gflops": round(flop / best["bfloat16"] / 1e9, 1),
        "speedup": round(speedup, 2),
        "margin": PROBE_MARGIN,
        "shapes": [f"{m}x{k} @ {k}x{n}" for m, k, n in PROBE_SHAPES],
        "threads": measured_threads,
        "probed_at": _dt.date.today().isoformat(),
    }


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("format") == PROBE_FORMAT
        and entry.get("dtype") in ("float32", "bfloat16")
        and all(isinstance(entry.get(k), (int, float)) for k in ("fp32_gflops", "bf16_gflops"))
    )


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache file's entries; {} when missing or unreadable (then it is re-measured)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:  # corrupt / half-written: measure again
        log.warning("precision probe cache %s unreadable (%s); measuring again", path, err)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    """Atomic write (temp file + rename): a concurrent reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=PROBE_FILE + ".", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump({"entries": entries}, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache dir costs a probe per process, no more
        log.warning("could not cache the precision probe in %s: %s", path, err)


def _probe() -> tuple[dict[str, Any], Path]:
    """The cached probe result for this machine, measuring (and caching) it when absent."""
    path = probe_cache_path()
    key = _probe_key()
    entries = _read_cache(path)
    entry = entries.get(key)
    if not _valid_entry(entry):
        entry = _measure()
        entries = {**_read_cache(path), key: entry}  # re-read: another process may have written
        _write_cache(path, entries)
    return entry, path


# --------------------------------------------------------------------------- the decision


def _normalise(value: Any, what: str) -> str:
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in _SETTINGS:
        raise ValueError(
            f"{what} ({value!r}) must be one of 'auto', 'fp32', 'bf16', 'float32', 'bfloat16'"
        )
    return _SETTINGS[name]


def decide_precision(setting: str = "auto") -> PrecisionDecision:
    """The precision for ``setting`` ("auto" | "fp32" | "bf16" | "float32" | "bfloat16")."""
    return _decide(_normalise(setting, "precision setting"), os.environ.get(ENV_VAR, ""))


@functools.cache
def _decide(setting: str, env_value: str) -> PrecisionDecision:
    flags = _native_bf16_flags()
    if setting != "auto":
        return PrecisionDecision(setting, "setting", f"explicit setting {setting!r}", flags)
    if env_value.strip():
        forced = _normalise(env_value, f"${ENV_VAR}")
        if forced != "auto":
            return PrecisionDecision(forced, ENV_VAR, f"{ENV_VAR}={env_value}", flags)
    if cuda_has_bf16():
        import torch

        name = torch.cuda.get_device_name()
        return PrecisionDecision("bfloat16", "cuda", f"CUDA device {name} supports bf16", flags)
    model = _cpuinfo()[0] or "this CPU"
    if not cpu_has_fast_bf16():
        return PrecisionDecision(
            "float32",
            "no-native-bf16",
            f"{model} has no avx512_bf16/amx_bf16: bf16 would be emulated (6-40x slower "
            "than fp32), so no probe was run",
            flags,
        )
    entry, path = _probe()
    choice = "bf16 chosen" if entry["dtype"] == "bfloat16" else "fp32 chosen"
    reason = (
        f"bf16 {entry['bf16_gflops']:g} vs fp32 {entry['fp32_gflops']:g} GFLOP/s "
        f"({entry.get('speedup', 0):g}x, {choice} at >= {entry.get('margin', PROBE_MARGIN):g}x; "
        f"matmul {' + '.join(entry.get('shapes', []))}, {_threads(entry)}, "
        f"probed {entry.get('probed_at', '?')} on {model}, cached in {path})"
    )
    decision = PrecisionDecision(entry["dtype"], "probe", reason, flags)
    log.info("precision: %s (%s)", decision.dtype, reason)
    return decision


def _threads(entry: dict[str, Any]) -> str:
    n = entry.get("threads", "?")
    return f"{n} thread" if n == 1 else f"{n} threads"


def _cache_clear() -> None:
    """Forget the in-process decisions (the probe's file cache stays)."""
    _decide.cache_clear()


decide_precision.cache_clear = _cache_clear  # type: ignore[attr-defined]


def preferred_dtype() -> str:
    """'bfloat16' or 'float32': what "auto" means here (:func:`decide_precision`)."""
    return decide_precision("auto").dtype


def resolve_autocast(setting: bool | str) -> bool:
    """Turn a config value True / False / "auto" into a decision."""
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return preferred_dtype() == "bfloat16"
    raise ValueError(f"`autocast_bf16` ({setting!r}) must be true, false or 'auto'")
