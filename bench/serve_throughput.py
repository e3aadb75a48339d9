"""Served throughput: completion tokens/s of ``k15 serve`` (Ray Serve LLM + vLLM, OpenAI
API) under concurrent clients vs the same vLLM engine offline, with request latencies.

    python -m bench.serve_throughput [--quick] [--prompts 128] [--clients 32] [--max-tokens 128]
        [--model smollm2-135m-instruct] [--dtype auto] [--max-model-len 1024] [--kv-cache-gib 1]

Workload: the first ``--prompts`` problems of k15/Arithmetic-v0 (difficulty 1), chat-templated,
one completion each at temperature 1, at most ``--max-tokens`` tokens. The two sides run one
after the other, never at once, with the same dtype, ``max_model_len``, KV cache and
``OMP_NUM_THREADS`` (all cores). Offline: a fresh child process builds
``rllib_k15.engine.VLLMEngine`` and generates all prompts in ONE batch (after a warm-up).
Served: ``k15 serve MODEL --port <free port>`` in its own process group (it starts its own
Ray cluster); once ``GET /health`` answers 200 and a warm-up request is done, ``--clients``
threads send every prompt once to ``/v1/chat/completions`` (``openai`` client, no retries);
tokens/s = the sum of ``usage.completion_tokens`` ÷ the wall time of the load phase. Then
SIGTERM, a wait for a clean exit (the group is killed after ``--stop-timeout``) and a check
that no process it started is left. ``--quick``: tiny-random-llama, 16 prompts, 16 clients,
16 tokens. Writes the JSON, a Markdown table (``.md``) and a plot (``.png``) under
``bench/results/``; server and engine output go to ``serve_throughput.log`` there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    add_common_args,
    log_path,
    markdown_table,
    read_json,
    run_module,
    write_result,
)
from bench.serve_process import (
    ServeError,
    free_port,
    log_tail,
    start_server,
    stop_server,
    tree_cpu_seconds,
    wait_healthy,
)

NAME = "serve_throughput"
MODEL_ID = "k15"  # `k15 serve --model-id` default
READY_PREFIX = "k15 serve: OpenAI API on http://"
DEFAULTS = {"model": "smollm2-135m-instruct", "prompts": 128, "clients": 32, "max_tokens": 128}
QUICK = {"model": "tiny-random-llama", "prompts": 16, "clients": 16, "max_tokens": 16}
# the thread setting both sides run with: all cores, unless the caller set it
THREADS_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}


# ------------------------------------------------------------------ pure helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics
    (numpy's default); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q ({q}) must be within [0, 100]")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_requests(records: Sequence[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """Totals of a load phase: requests answered / sent, failures (first few messages),
    completion tokens, tokens/s over ``wall_seconds`` and latency percentiles of the
    answered requests. A record: ``{"latency_s", "completion_tokens", "error"}``."""
    answered = [r for r in records if r.get("error") is None]
    errors = [str(r["error"]) for r in records if r.get("error") is not None]
    latencies = [float(r["latency_s"]) for r in answered]
    tokens = sum(int(r.get("completion_tokens") or 0) for r in answered)
    return {
        "sent": len(records), "answered": len(answered), "failed": len(errors),
        "errors": sorted(set(errors))[:5], "completion_tokens": tokens,
        "wall_seconds": wall_seconds,
        "tokens_per_second": tokens / wall_seconds if wall_seconds > 0 else None,
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies, default=None),
    }  # fmt: skip


def derive_rows(
    offline: dict[str, Any] | None, served: dict[str, Any] | None, workload: str, clients: int
) -> list[Row]:
    """Summary rows: offline tokens/s, served tokens/s ÷ offline, p50/p99 latency, requests
    answered ÷ sent (target: all) and the shutdown. A side that failed (None, or a dict with
    ``error``) gives a row saying so."""
    rows: list[Row] = []
    off_tps = None if not offline or offline.get("error") else offline["tokens_per_second"]
    if off_tps is None:
        reason = (offline or {}).get("error", "not run")
        rows.append(Row("serve", "offline vLLM tokens/s (one batch)", None, note=reason))
    else:
        rows.append(Row("serve", "offline vLLM tokens/s (one batch)", off_tps, "tok/s",
                        note=f"{workload}; {offline['generated_tokens']} tokens"))  # fmt: skip
    if not served or served.get("error"):
        reason = (served or {}).get("error", "not run")
        rows.append(Row("serve", "served tokens/s vs offline vLLM", None, note=reason))
        return rows + shutdown_rows(served)
    tps = served["tokens_per_second"]
    ratio = tps / off_tps if tps is not None and off_tps else None
    busy = served.get("cores_busy_server")
    note = f"{clients} clients; {served['completion_tokens']} tokens" + (
        f"; server process tree ~{busy:.1f} cores busy" if busy is not None else ""
    )
    rows += [
        Row("serve", "served tokens/s vs offline vLLM", tps, "tok/s", off_tps, "offline vLLM",
            ratio, note=note),
        Row("serve", "request latency p50", served["latency_p50_s"], "s", higher_is_better=False),
        Row("serve", "request latency p99", served["latency_p99_s"], "s", higher_is_better=False,
            note=f"max {served['latency_max_s']:.2f} s" if served["latency_max_s"] else ""),
        Row("serve", "requests answered / sent", served["answered"], "", served["sent"], "sent",
            served["answered"] / served["sent"] if served["sent"] else None, 1.0,
            note="; ".join(served["errors"])),
    ]  # fmt: skip
    return rows + shutdown_rows(served)


def shutdown_rows(served: dict[str, Any] | None) -> list[Row]:
    """The row of the server's shutdown (if it was started): seconds, and "clean (exit 0)"
    or what went wrong (killed after the timeout, processes left behind)."""
    stop = (served or {}).get("shutdown")
    if not stop:
        return []
    note = f"{'killed' if stop['killed'] else 'clean'} (exit {stop['exit_code']})"
    if stop["leftover"]:
        note += f", {len(stop['leftover'])} processes left (killed)"
    return [Row("serve", "shutdown after SIGTERM", stop["seconds"], "s", higher_is_better=False,
                note=note)]  # fmt: skip


def run_offline(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: the engine, a warm-up, then all prompts in one ``generate``."""
    import torch

    from bench.common import arithmetic_prompts
    from rllib_k15.engine import SamplingParams, VLLMEngine
    from rllib_k15.models import resolve_model

    if "OMP_NUM_THREADS" in os.environ:  # (vLLM makes set_num_threads a no-op later)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    engine = VLLMEngine(resolve_model(args.model), seed=0, dtype=args.dtype,
                        max_model_len=args.max_model_len,
                        kv_cache_gib=args.kv_cache_gib)  # fmt: skip
    prompts = [engine.encode_prompt(p) for p in arithmetic_prompts(args.prompts)]
    engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up
    params = SamplingParams(n=1, temperature=1.0, max_tokens=args.max_tokens)
    cpu0, t0 = time.process_time(), time.perf_counter()
    groups = engine.generate(prompts, params)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    tokens = sum(c.num_tokens for g in groups for c in g)
    engine.close()
    return {
        "dtype": engine.dtype, "start_seconds": engine.start_seconds, "threads":
        torch.get_num_threads(), "prompt_tokens": sum(len(p) for p in prompts),
        "generated_tokens": tokens, "generate_seconds": seconds,
        "tokens_per_second": tokens / seconds, "cores_busy": cpu / seconds,
    }  # fmt: skip


# ------------------------------------------------------------------ served side


def _one_request(client: Any, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One chat completion; its latency and completion tokens, or the error."""
    t0 = time.perf_counter()
    try:
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens, temperature=1.0,
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - every failure is a result to report
        return {"latency_s": time.perf_counter() - t0, "error": f"{type(err).__name__}: {err}"}
    usage = reply.usage
    return {"latency_s": time.perf_counter() - t0, "error": None,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "prompt_tokens": usage.prompt_tokens if usage else 0}  # fmt: skip


def run_load(
    base_url: str, prompts: Sequence[str], args: argparse.Namespace, server_pid: int
) -> tuple[list, float, dict[str, float]]:
    """A warm-up request, then every prompt once through ``args.clients`` threads: the
    records, the wall time and the cores busy in the server's process tree and in this
    process (the clients) during the load phase only."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="none", max_retries=0,
                    timeout=args.request_timeout)  # fmt: skip
    warm = _one_request(client, prompts[0], 4)
    if warm["error"]:
        raise ServeError(f"warm-up request failed: {warm['error']}")
    server0, own0 = tree_cpu_seconds(server_pid), time.process_time()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        records = list(pool.map(lambda p: _one_request(client, p, args.max_tokens), prompts))
    wall = time.perf_counter() - t0
    busy = {"cores_busy_clients": (time.process_time() - own0) / wall,
            "cores_busy_server": (tree_cpu_seconds(server_pid) - server0) / wall}  # fmt: skip
    return records, wall, busy


def run_served(args: argparse.Namespace, prompts: Sequence[str], log: Path) -> dict[str, Any]:
    """Start the server, wait for health, run the load phase, stop it; the measurements."""
    port = free_port()
    offset = log.stat().st_size if log.exists() else 0
    serve_args = [args.model, "--port", str(port), "--max-model-len", str(args.max_model_len),
                  "--max-tokens", str(args.max_tokens), "--kv-cache-gib", str(args.kv_cache_gib),
                  "--dtype", args.dtype]  # fmt: skip
    proc = start_server(serve_args, log, THREADS_ENV)
    result: dict[str, Any] = {"port": port}
    try:
        result["seconds_to_healthy"] = wait_healthy(
            proc, f"http://127.0.0.1:{port}/health", args.start_timeout
        )
        records, wall, busy = run_load(f"http://127.0.0.1:{port}/v1", prompts, args, proc.pid)
        result |= summarize_requests(records, wall) | busy
        result["prompt_tokens"] = sum(int(r.get("prompt_tokens") or 0) for r in records)
        result["latencies_s"] = [r["latency_s"] for r in records if r["error"] is None]
    except ServeError as err:
        result["error"] = str(err)
        print(f"[{NAME}] served side FAILED: {err}\n--- log tail ---\n"
              f"{log_tail(log, offset=offset)}", flush=True)  # fmt: skip
    finally:
        result["shutdown"] = stop_server(proc, args.stop_timeout)
    ready = [ln for ln in log_tail(log, 10**6, offset).splitlines() if ln.startswith(READY_PREFIX)]
    result["ready_line"] = ready[0] if ready else None
    return result


# ------------------------------------------------------------------ outputs and driver


def plot(offline: dict | None, served: dict | None, path: Path) -> None:
    """Tokens/s of both sides, and the served requests' latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tps, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    sides = {"offline vLLM\n(one batch)": (offline or {}).get("tokens_per_second"),
             "k15 serve\n(OpenAI API)": (served or {}).get("tokens_per_second")}  # fmt: skip
    ax_tps.bar(list(sides), [v or 0.0 for v in sides.values()], color=["tab:blue", "tab:orange"])
    ax_tps.set(ylabel="completion tokens/s", title="throughput, same workload")
    latencies = sorted((served or {}).get("latencies_s") or [])
    if latencies:
        share = [(i + 1) / len(latencies) for i in range(len(latencies))]
        ax_lat.step(latencies, share, where="post", color="tab:orange")
        for q, style in ((50, "--"), (99, ":")):
            ax_lat.axvline(percentile(latencies, q), color="grey", linestyle=style, label=f"p{q}")
        ax_lat.legend()
    ax_lat.set(xlabel="request latency (s)", ylabel="share of requests", title="latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(args, offline, served, final: bool) -> Path:
    """The JSON (and, when ``final``, the Markdown table and the plot)."""
    workload = f"{args.model} ({args.dtype}), {args.prompts} prompts, ≤ {args.max_tokens} tokens"
    rows = derive_rows(offline, served, workload, args.clients)
    config = {k: getattr(args, k) for k in ("model", "prompts", "clients", "max_tokens", "dtype",
                                            "max_model_len", "kv_cache_gib")}  # fmt: skip
    config |= {"temperature": 1.0, "env": THREADS_ENV}
    results = {"offline": offline, "served": served}
    path = write_result(NAME, args, config=config, results=results, rows=rows, echo=final)
    if final:
        table = f"# {NAME}\n\n{workload}, {args.clients} clients\n\n{markdown_table(rows)}\n"
        path.with_suffix(".md").write_text(table)
        plot(offline, served, path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.md')} and {path.with_suffix('.png')}", flush=True)
    return path


def _measure_offline(args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """The offline side in a fresh child process (``--child offline``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "offline.json"
        child = ["--child", "offline", "--child-out", str(out), "--model", args.model,
                 "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens),
                 "--dtype", args.dtype, "--max-model-len", str(args.max_model_len),
                 "--kv-cache-gib", str(args.kv_cache_gib)]  # fmt: skip
        code = run_module(f"bench.{NAME}", child, env=THREADS_ENV, log=log,
                          timeout=args.offline_timeout)  # fmt: skip
        result = read_json(out)
    if code != 0 or result is None:
        return {"error": f"offline child FAILED (exit {code}), see {log.name}"}
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags; ``--quick`` and unset sizes filled in, ``--dtype auto`` resolved."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    for key, kind in (("model", str), ("prompts", int), ("clients", int), ("max_tokens", int)):
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, type=kind, default=None,
                            help=f"default {DEFAULTS[key]} (quick: {QUICK[key]})")  # fmt: skip
    parser.add_argument("--dtype", default="auto", help="auto = the machine's best (both sides)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--start-timeout", type=float, default=300.0, help="s until /health")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="s per request")
    parser.add_argument("--stop-timeout", type=float, default=60.0, help="s after SIGTERM")
    parser.add_argument("--offline-timeout", type=float, default=600.0, help="s, child process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dtype == "auto":
        from rllib_k15.models import preferred_dtype

        args.dtype = preferred_dtype()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:  # the offline side, in this fresh process
        Path(args.child_out).write_text(json.dumps(run_offline(args)))
        return 0
    from bench.common import arithmetic_prompts

    log = log_path(NAME, args.quick)
    log.parent.mkdir(parents=True, exist_ok=True)
    prompts = arithmetic_prompts(args.prompts)
    print(f"[{NAME}] offline vLLM ({args.model}, {args.dtype}) ...", flush=True)
    offline = _measure_offline(args, log)
    print(f"[{NAME}] offline: {offline.get('tokens_per_second') or offline.get('error')}")
    _write(args, offline, None, final=False)  # a timeout keeps the offline side
    print(f"[{NAME}] k15 serve + {args.clients} clients ...", flush=True)
    served = run_served(args, prompts, log)
    _write(args, offline, served, final=True)
    print(f"[{NAME}] server and engine output: {log}", flush=True)
    ok = not offline.get("error") and not served.get("error") and served["failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
