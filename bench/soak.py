"""Long soak on the real path: `k15 train` on the quickstart config, watched from outside.

    python -m bench.soak [--iterations 50] [--partial-tokens 32] [--warmup 5] [--model NAME]
        [--env NAME=VALUE ...] [--quick] [--out FILE]

Runs ``k15 train --config tuned_examples/quickstart_smollm2.yaml`` on the embedded model
(vLLM engine, partial rollouts on: ``partial_rollout_max_tokens``), ``--iterations``
iterations, in a child process, and watches it from this one with psutil. After every
finished iteration (a new row in the run's ``metrics.jsonl``) it records the resident memory
of the whole process tree (the trainer, its vLLM engine and any sandbox workers), the
trainer's open files and its number of child processes. After the run it checks that no
process of the tree outlived it and that no new entry was left in the temp directory.

Verdict rows (targets): growth of the median tree RSS from the first to the last third of
the post-warm-up iterations ≤ 64 MB; least-squares RSS slope ≤ 2 MB/iteration; open files
after warm-up: max − min ≤ 2; leaked processes 0; leaked temp entries 0; and whether memory
levelled off: the trainer's private-memory slope over the second half of the run, checkpoint
saves left out, ≤ 2 MB/iteration. ``--resummarize FILE`` recomputes the rows of a saved
result from its samples. A plot of RSS and
open files per iteration is written next to the JSON. 50 iterations take ~30-40 min on 2
cores; ``--quick`` (4 iterations, tiny random model) checks the harness end to end only —
its verdict means nothing, because the partial-rollout store is still filling (responses of
up to ⌈96 / partial-tokens⌉ segments) during its iterations. Keep ``--warmup`` above that.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import REPO_DIR, Row, add_common_args, result_path, text_table, write_result

QUICKSTART = "tuned_examples/quickstart_smollm2.yaml"
MAX_GROWTH_MB, MAX_SLOPE_MB, MAX_FD_SPREAD = 64.0, 2.0, 2
CHECKPOINT_EVERY = 10


def process_role(proc: psutil.Process) -> str:
    """A short, stable name for a process of the tree: ``trainer`` for the root, else the
    program (``raylet``, ``gcs_server``) or the Ray worker's title (``ray::IDLE``…)."""
    try:
        name = proc.name()
        if name.startswith("ray::"):
            return name.split(".")[0][:40]
        cmd = proc.cmdline()
        return Path(cmd[0]).name[:40] if cmd else name
    except psutil.Error:
        return "gone"


def tree_sample(proc: psutil.Process, *, detail: bool = False) -> dict | None:
    """RSS (MB) of ``proc`` and its descendants, its open files and its number of children.

    With ``detail`` also the proportional (PSS: shared pages split between the processes
    that map them, e.g. Ray's shared-memory object store) and unique (USS) set sizes, in
    total and per process role, which tell a leak (USS grows) from shared pages being
    touched (RSS grows, PSS/USS flat)."""
    try:
        children = proc.children(recursive=True)
        rss, roles = 0, {}
        for member in [proc, *children]:
            try:
                if detail:
                    full = member.memory_full_info()
                    role = "trainer" if member.pid == proc.pid else process_role(member)
                    entry = roles.setdefault(role, {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0})
                    for key, value in (("rss_mb", full.rss), ("pss_mb", full.pss),
                                       ("uss_mb", full.uss)):  # fmt: skip
                        entry[key] += value / 2**20
                    rss += full.rss
                else:
                    rss += member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        sample = {"rss_mb": rss / 2**20, "open_files": proc.num_fds(), "children": len(children)}
        if detail:
            sample["pss_mb"] = sum(r["pss_mb"] for r in roles.values())
            sample["uss_mb"] = sum(r["uss_mb"] for r in roles.values())
            sample["roles"] = {k: {m: round(v, 1) for m, v in r.items()} for k, r in roles.items()}
        return sample
    except psutil.NoSuchProcess:
        return None


def rows_written(metrics: Path) -> int:
    """Finished iterations so far (complete lines of metrics.jsonl)."""
    try:
        return metrics.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def flat_verdict(rss_mb: list[float], fds: list[int]) -> dict[str, float]:
    """Growth (median of the last third − median of the first third), LSQ slope, fd spread."""
    third = max(1, len(rss_mb) // 3)
    growth = float(np.median(rss_mb[-third:]) - np.median(rss_mb[:third]))
    slope = float(np.polyfit(np.arange(len(rss_mb)), rss_mb, 1)[0]) if len(rss_mb) > 1 else 0.0
    return {"rss_growth_mb": growth, "rss_slope_mb": slope, "fd_spread": max(fds) - min(fds)}


def plateau_slope(iterations: list[int], values: list[float], checkpoint_every: int) -> float:
    """LSQ slope (MB/iteration) over the second half of ``iterations``, leaving out the
    iterations that save a checkpoint (a transient spike of the save, not growth): whether
    memory still grows once the caches filled, or has levelled off."""
    it, val = np.asarray(iterations), np.asarray(values, dtype=float)
    keep = (it >= np.median(it)) & (it % checkpoint_every != 0)
    return float(np.polyfit(it[keep], val[keep], 1)[0]) if keep.sum() > 1 else 0.0


def run_soak(args: argparse.Namespace, out_dir: Path) -> dict:
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    cmd = [sys.executable, "-m", "rllib_k15", "train", "--config", QUICKSTART,
           "--out", str(out_dir), "--checkpoint-every", str(CHECKPOINT_EVERY),
           "--set", f"stop.training_iteration={args.iterations}",
           "--set", f"training.partial_rollout_max_tokens={args.partial_tokens}",
           "--set", "training.eval_interval=0",
           "--set", f"training.hf_model={args.model}"]  # fmt: skip
    log = open(out_dir.parent / f"{out_dir.name}.log", "w")
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    child = subprocess.Popen(cmd, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc, samples, seen, descendants = psutil.Process(child.pid), [], 0, set()
    while child.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants |= {p.pid for p in proc.children(recursive=True)}
        done = rows_written(out_dir / "metrics.jsonl")
        sample = tree_sample(proc, detail=True) if done > seen else None
        if sample is not None:
            samples += [{"iteration": done, **sample}]
            seen = done
            print(f"iteration {done}: {sample}", flush=True)
        time.sleep(1.0)
    log.close()
    if child.returncode != 0:
        raise SystemExit(f"k15 train exited {child.returncode}; see {log.name}")
    time.sleep(2.0)  # let the OS reap what the trainer stopped on exit
    leaked = [p for p in descendants if psutil.pid_exists(p) and _is_alive(p)]
    tmp_left = sorted(set(os.listdir(tempfile.gettempdir())) - tmp_before)
    return {"samples": samples, "leaked_pids": leaked, "tmp_left": tmp_left}


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def summarize(run: dict, warmup: int) -> tuple[dict, list[Row]]:
    """The verdict numbers and rows of a soak's samples (also ``--resummarize``)."""
    after = [s for s in run["samples"] if s["iteration"] > warmup]
    verdict = flat_verdict([s["rss_mb"] for s in after], [s["open_files"] for s in after])
    memory = {
        key: flat_verdict([s[key] for s in after], [0])["rss_growth_mb"]
        for key in ("pss_mb", "uss_mb")
        if after and all(key in s for s in after)
    }
    trainer = [s["roles"]["trainer"]["uss_mb"] for s in after if "trainer" in s.get("roles", {})]
    if trainer:
        memory["trainer_uss_mb"] = flat_verdict(trainer, [0])["rss_growth_mb"]
    verdict.update({f"growth_{k}": v for k, v in memory.items()})
    with_trainer = [s for s in after if "trainer" in s.get("roles", {})]
    verdict["plateau_slope_trainer_uss_mb"] = plateau_slope(
        [s["iteration"] for s in with_trainer],
        [s["roles"]["trainer"]["uss_mb"] for s in with_trainer],
        CHECKPOINT_EVERY,
    )
    rows = [
        Row("soak", "RSS growth after warm-up (MB)", verdict["rss_growth_mb"], target=MAX_GROWTH_MB,
            higher_is_better=False),
        Row("soak", "RSS slope (MB/iteration)", verdict["rss_slope_mb"], target=MAX_SLOPE_MB,
            higher_is_better=False),
        *[Row("soak", f"{key.upper()} growth after warm-up (MB)", verdict[f"growth_{key}_mb"],
              target=MAX_GROWTH_MB, higher_is_better=False)
          for key in ("pss", "uss", "trainer_uss") if f"growth_{key}_mb" in verdict],
        Row("soak", "open-file spread after warm-up", verdict["fd_spread"], target=MAX_FD_SPREAD,
            higher_is_better=False),
        Row("soak", "leaked processes", len(run["leaked_pids"]), target=0, higher_is_better=False),
        Row("soak", "leaked temp entries", len(run["tmp_left"]), target=0, higher_is_better=False),
        Row("soak", "trainer USS slope, 2nd half, no saves (MB/iteration)",
            verdict["plateau_slope_trainer_uss_mb"], target=MAX_SLOPE_MB, higher_is_better=False),
    ]  # fmt: skip
    return verdict, rows


def resummarize(path: Path) -> int:
    """Recompute the verdict and rows of a committed soak result from its samples (the
    run's date and machine stay; ``resummarized`` records when)."""
    import datetime as dt

    doc = json.loads(path.read_text())
    run = {k: doc["results"][k] for k in ("samples", "leaked_pids", "tmp_left")}
    verdict, rows = summarize(run, doc["config"]["warmup"])
    doc["results"] = {**run, **verdict}
    doc["rows"] = [dataclasses.asdict(r) for r in rows]
    doc["resummarized"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(text_table(rows))
    return 0


def plot(samples: list[dict], warmup: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [s["iteration"] for s in samples]
    fig, (ax_rss, ax_role, ax_fd) = plt.subplots(1, 3, figsize=(16, 4))
    for key, label in (
        ("rss_mb", "RSS (shared pages counted per process)"),
        ("pss_mb", "PSS (shared pages split)"),
        ("uss_mb", "USS (private)"),
    ):
        if all(key in s for s in samples):
            ax_rss.plot(it, [s[key] for s in samples], marker=".", label=label)
    ax_rss.set(xlabel="iteration", ylabel="process tree (MB)", title="resident memory")
    roles = sorted(
        {r for s in samples for r in s.get("roles", {})},
        key=lambda r: -samples[-1].get("roles", {}).get(r, {}).get("uss_mb", 0),
    )
    for role in roles[:6]:  # the largest processes at the end
        ax_role.plot(it, [s.get("roles", {}).get(role, {}).get("uss_mb", np.nan) for s in samples],
                     marker=".", label=role)  # fmt: skip
    ax_role.set(xlabel="iteration", ylabel="USS (MB)", title="private memory per process")
    ax_fd.plot(it, [s["open_files"] for s in samples], marker=".", color="tab:orange")
    ax_fd.set(xlabel="iteration", ylabel="open files (trainer)", title="open files")
    for ax in (ax_rss, ax_role, ax_fd):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.axvline(warmup + 0.5, color="grey", linestyle=":", label="end of warm-up")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--partial-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="environment of the trainer, e.g. MALLOC_MMAP_THRESHOLD_=1048576 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--resummarize", type=Path, metavar="JSON",
        help="recompute the verdict of a saved soak result from its samples (no run)",
    )  # fmt: skip
    add_common_args(parser, "soak")
    args = parser.parse_args(argv)
    if args.resummarize:
        return resummarize(args.resummarize)
    if bad := [item for item in args.env if "=" not in item]:
        parser.error(f"--env needs NAME=VALUE, got {bad[0]!r}")
    if args.quick:
        args.iterations, args.warmup, args.model = 4, 1, "tiny-random-llama"
    path = Path(args.out) if args.out else result_path("soak", args.quick)
    (REPO_DIR / "runs").mkdir(exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix="k15-soak-", dir=REPO_DIR / "runs"))
    run = run_soak(args, out_dir)
    verdict, rows = summarize(run, args.warmup)
    config = {"iterations": args.iterations, "partial_tokens": args.partial_tokens,
              "warmup": args.warmup, "model": args.model, "config": QUICKSTART, "env": args.env,
              "run_dir": str(out_dir)}  # fmt: skip
    write_result("soak", args, config=config, results={**run, **verdict}, rows=rows)
    plot(run["samples"], args.warmup, path.with_suffix(".png"))
    print(json.dumps(verdict), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
