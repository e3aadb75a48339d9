"""Run every benchmark, print ONE table of ratios, and write ``bench/results/summary.json``
and ``bench/results/README.md`` (the table with the dates, commits and the machine).

    python -m bench.run_all [--quick] [--only NAME,...] [--skip NAME,...] [--timeout-min M]
    python -m bench.run_all --render-only    # rebuild the page from the JSON files on disk
    make bench

Each benchmark runs in its own process, one after the other (they would otherwise fight
for the same cores), under its own time limit (``BENCHMARKS``: about 52 min expected in all
on 2 shared cores at load ≈ 2; the limits add up to 98 min), and writes its own JSON under
``bench/results/`` (``--quick``: ``bench/results/quick/``, ignored by git, so smoke runs
never overwrite committed results). Verbose engine output goes to ``<name>.log`` next to
the JSON. A benchmark that times out keeps what it wrote before (engine_throughput
rewrites its JSON after every variant). The page always covers every benchmark with a JSON
on disk (:mod:`bench.report`): rows that did not come from a clean run in this ``run_all``
(``--only``, a timeout, a separate run) get a note saying when they were measured.
Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import (
    Row,
    describe_machine,
    log_path,
    machine_info,
    read_json,
    result_path,
    run_module,
    text_table,
)
from bench.report import doc_rows, origin, provenance_note, readme_text, target_lines


@dataclass(frozen=True)
class Benchmark:
    """One benchmark module (``bench/<name>.py``) and its time budget."""

    name: str
    what: str
    minutes: float  # expected on 2 shared cores at load ≈ 2 (measured runs)
    limit: float  # minutes; then its process group is killed: status "timeout"


BENCHMARKS = (
    Benchmark("roofline", "matmul GFLOP/s fp32 and bf16", 1, 3),
    Benchmark("engine_throughput", "rollout tokens/s: vLLM vs transformers.generate, knobs",
              5.5, 10),
    Benchmark("rl_iteration", "one RL iteration vs TRL GRPOTrainer; split; weight sync", 7, 15),
    Benchmark("train_throughput", "learner fwd+bwd tokens/s fp32 vs bf16, roofline", 4, 7),
    Benchmark("padding_free", "learner tokens/s: padded, padding-free, shared prompts", 14, 22),
    Benchmark("verifier_throughput", "math and code verifications/s", 0.5, 3),
    Benchmark("partial_rollouts", "partial vs whole rollouts on a heavy-tailed mix", 3.5, 7),
    Benchmark("async_rollouts", "overlapped vs synchronous generation and training", 7, 12),
    Benchmark("zero_memory", "ZeRO-0 vs ZeRO-3 per-learner memory", 4, 7),
    Benchmark("serve_throughput", "k15 serve tokens/s and latency vs offline vLLM", 3, 8),
)  # fmt: skip
BUDGETS = {b.name: (b.minutes, b.limit) for b in BENCHMARKS}


def run_benchmark(bench: Benchmark, quick: bool, limit_min: float) -> dict[str, Any]:
    """Run one benchmark module; its status, seconds and limit (its rows are read from
    its JSON afterwards, like every other benchmark's)."""
    out, log = result_path(bench.name, quick), log_path(bench.name, quick)
    print(f"\n=== {bench.name}: {bench.what} (expected ~{bench.minutes:g} min, "
          f"limit {limit_min:g})", flush=True)  # fmt: skip
    started = time.time()
    args = ["--out", str(out)] + (["--quick"] if quick else [])
    code = run_module(f"bench.{bench.name}", args, timeout=limit_min * 60, log=log)
    seconds = time.time() - started
    fresh = out.is_file() and out.stat().st_mtime >= started
    if code == -9:
        status = "timeout"
    else:
        status = "ok" if code == 0 and fresh else f"failed ({code or 'no JSON'})"
    note = "" if status == "ok" else f"see {log.name}"
    print(f"=== {bench.name}: {status} in {seconds / 60:.1f} min", flush=True)
    return {"status": status, "seconds": seconds, "limit_minutes": limit_min, "note": note}


def render(
    meta: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]], quick: bool
) -> tuple[dict[str, Any], list[Row], dict[str, Any]]:
    """Read every benchmark's JSON on disk: the summary document (``meta`` = the last
    run_all's date, minutes, machine, load; ``entries`` = how each benchmark went in it),
    the table rows, and the JSON documents by name."""
    benchmarks: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    notes: list[str] = []
    docs: dict[str, Any] = {}
    for bench in BENCHMARKS:
        entry = {k: v for k, v in entries.get(bench.name, {"status": "not run"}).items()
                 if k not in ("rows", "json", "measured", "commit")}  # fmt: skip
        benchmarks[bench.name] = entry
        doc = read_json(result_path(bench.name, quick))
        if doc is None:
            continue
        docs[bench.name] = doc
        entry["measured"] = doc.get("date")
        entry["commit"] = (doc.get("machine") or {}).get("git_commit")
        rows += doc_rows(bench.name, doc)
        if meta.get("date"):
            where = origin(doc.get("date"), meta["date"], meta.get("total_minutes", 0.0))
            notes.append(provenance_note(bench.name, entry, where))
        notes.append(machine_note(bench.name, doc, meta))
    summary = {
        **meta,
        "rendered": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": quick,
        "benchmarks": benchmarks,
        "notes": [n for n in notes if n],
        "rows": [asdict(r) | {"status": r.status} for r in rows],
    }
    return summary, rows, docs


def machine_note(name: str, doc: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """A note when ``name``'s rows come from another CPU than the page header names."""
    theirs, ours = doc.get("machine"), meta.get("machine")
    if not theirs or not ours or describe_machine(theirs) == describe_machine(ours):
        return ""
    return f"{name}: measured on another machine: {describe_machine(theirs)}."


def write_page(meta: Mapping[str, Any], entries: Mapping[str, Any], quick: bool) -> None:
    """Render from the JSON files on disk and write ``summary.json`` and ``README.md``."""
    summary, rows, docs = render(meta, entries, quick)
    out_dir = result_path("summary", quick).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    page = readme_text(summary, rows, summary["notes"], docs.get("engine_throughput"), BUDGETS)
    (out_dir / "README.md").write_text(page)
    print("\n" + text_table(rows))
    print("\nTargets:\n" + "\n".join(target_lines(rows)))
    if summary["notes"]:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in summary["notes"]))
    print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'README.md'}")


def last_run(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last run_all's ``meta`` and ``entries`` from ``summary.json`` (for
    ``--render-only``), or a meta with this machine and no date."""
    previous = read_json(result_path("summary", quick)) or {}
    meta = {k: v for k, v in previous.items()
            if k not in ("benchmarks", "rows", "notes", "rendered", "quick")}  # fmt: skip
    meta.setdefault("machine", machine_info())
    return meta, previous.get("benchmarks", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke run)")
    parser.add_argument("--only", default="", help="comma list of benchmark names")
    parser.add_argument("--skip", default="", help="comma list of benchmark names")
    parser.add_argument(
        "--timeout-min",
        type=float,
        default=None,
        help="one limit for every benchmark (default: each its own)",
    )
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rebuild summary.json and README.md from the "
                        "JSON files on disk")  # fmt: skip
    args = parser.parse_args()
    if args.render_only:
        write_page(*last_run(args.quick), args.quick)
        return
    known = {b.name for b in BENCHMARKS}
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    if (only | skip) - known:
        raise ValueError(f"unknown benchmark(s) {sorted((only | skip) - known)}; "
                         f"choose from {sorted(known)}")  # fmt: skip
    selected = [b for b in BENCHMARKS if (not only or b.name in only) and b.name not in skip]
    limits = {b.name: args.timeout_min or b.limit for b in selected}
    print(f"{len(selected)} benchmarks, expected ~{sum(b.minutes for b in selected):g} min "
          f"on 2 cores, at most {sum(limits.values()):g} min", flush=True)  # fmt: skip
    started = time.time()
    machine = machine_info()
    entries = {b.name: run_benchmark(b, args.quick, limits[b.name]) for b in selected}
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_minutes": (time.time() - started) / 60,
        "ran": [b.name for b in selected],
        "machine": machine,
        "loadavg_start": machine["loadavg_1m"],
        "loadavg_end": machine_info()["loadavg_1m"],
    }
    write_page(meta, entries, args.quick)
    print("; ".join(f"{n}: {e['status']}" for n, e in entries.items()))
    if any(e["status"] != "ok" for e in entries.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
