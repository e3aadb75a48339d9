"""Rollout throughput: generated tokens/s of the EnvRunner's vLLM engine vs batched
``transformers.generate`` (``HFEngine``), and as a fraction of this machine's roofline.

    python -m bench.engine_throughput [--quick] [--variants GROUP|NAME,...]
        [--prompts 8] [--samples 4] [--max-tokens 48] [--model smollm2-135m-instruct]

Every variant runs in its own fresh process (thread binding and allocator preloads must
be set before the engine starts; in-process vLLM keeps global state) on the SAME workload:
the first ``--prompts`` problems of k15/Arithmetic-v0 (difficulty 1), ``--samples``
completions each at temperature 1, at most ``--max-tokens`` tokens. Right after
generating, the process measures fp32 and bf16 matmul GFLOP/s with the threads it has
(:mod:`bench.roofline`); roofline fraction = tokens/s × 2 × params ÷ the best of the two.

Variant groups (``GROUPS``; ``--variants`` takes groups and names, comma-separated):
``main`` = vLLM (the EnvRunner's engine) and batched HF generate in fp32, the dtype the
EnvRunner picks on CPUs without AVX512-BF16; ``bf16`` = the same pair in bf16 (the issue's
dtype; emulated and ~5× slower on AVX2-only CPUs, so there it costs ~4 min and is opt-in);
``knobs`` = one change each against the fp32 variant of the same engine (concurrency,
threads, HF batch size); opt-in: ``extra`` (Intel OpenMP preload) and ``slow`` (vLLM with
torch.compile: 2-5 min start; HF on 1 thread). Default: ``main,knobs``, plus ``bf16``
where bf16 is native (:func:`default_variants`) — about 5 min on 2 quiet cores;
``all`` = main + bf16 + knobs; ``everything`` = every group. Variants run in that order
and the JSON is rewritten after each, so a timeout keeps the main comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_DIR,
    Row,
    add_common_args,
    log_path,
    read_json,
    run_module,
    write_result,
)

NAME = "engine_throughput"
IOMP = REPO_DIR / ".venv" / "lib" / "libiomp5.so"


@dataclass(frozen=True)
class Variant:
    """One engine configuration: engine kind, dtype, constructor options, process env."""

    engine: str
    dtype: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    reference: str | None = None  # the variant this knob is compared with
    knob: str = ""


VARIANTS: dict[str, Variant] = {
    "vllm-fp32": Variant("vllm", "float32"),
    "hf-fp32": Variant("hf", "float32"),
    "vllm-bf16": Variant("vllm", "bfloat16", reference="vllm-fp32", knob="dtype bf16"),
    "hf-bf16": Variant("hf", "bfloat16", reference="hf-fp32", knob="dtype bf16"),
    # knobs, each against the fp32 variant of the same engine
    # in-process vLLM (what the EnvRunner runs) does not apply VLLM_CPU_OMP_THREADS_BIND:
    # its threads are torch's, fixed by OMP_NUM_THREADS at process start
    "vllm-fp32-1thread": Variant(
        "vllm", "float32", env={"OMP_NUM_THREADS": "1"},
        reference="vllm-fp32", knob="1 thread",
    ),
    "vllm-fp32-seqs8": Variant(
        "vllm", "float32", options={"max_num_seqs": 8},
        reference="vllm-fp32", knob="max 8 concurrent sequences",
    ),
    "vllm-fp32-iomp": Variant(
        "vllm", "float32", env={"LD_PRELOAD": str(IOMP)},
        reference="vllm-fp32", knob="Intel OpenMP (LD_PRELOAD libiomp5)",
    ),
    "hf-fp32-1thread": Variant(
        "hf", "float32", env={"OMP_NUM_THREADS": "1"},
        reference="hf-fp32", knob="1 thread",
    ),
    "hf-fp32-batch8": Variant(
        "hf", "float32", options={"batch_size": 8},
        reference="hf-fp32", knob="batch 8 rows (default: all)",
    ),
    "vllm-fp32-compiled": Variant(
        "vllm", "float32", options={"enforce_eager": False},
        reference="vllm-fp32", knob="torch.compile (enforce_eager=False)",
    ),
}  # fmt: skip
GROUPS = {
    "main": ["vllm-fp32", "hf-fp32"],  # the EnvRunner's dtype on CPUs without native bf16
    "bf16": ["vllm-bf16", "hf-bf16"],  # default only where bf16 is native
    "knobs": ["vllm-fp32-seqs8", "vllm-fp32-1thread", "hf-fp32-batch8"],  # ~1 min each
    "extra": ["vllm-fp32-iomp"],  # opt-in
    "slow": ["hf-fp32-1thread", "vllm-fp32-compiled"],  # opt-in: minutes each
}  # fmt: skip
GROUPS["all"] = GROUPS["main"] + GROUPS["bf16"] + GROUPS["knobs"]
GROUPS["everything"] = GROUPS["all"] + GROUPS["extra"] + GROUPS["slow"]
TARGET_SPEEDUP = 6.0  # target: rollout >= 6x transformers.generate
TARGET_ROOFLINE = 0.40  # ... and >= 40 % of the roofline


def select_variants(spec: str) -> list[str]:
    """Expand group names (``GROUPS``) and comma lists into variant names,
    adding the reference of every knob (a knob is only a ratio against its reference)."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part not in GROUPS and part not in VARIANTS:
            choices = sorted(GROUPS) + sorted(VARIANTS)
            raise ValueError(f"`--variants` part {part!r} is not one of {choices}")
        for name in GROUPS.get(part, [part]):
            ref = VARIANTS[name].reference
            for needed in ([ref] if ref else []) + [name]:
                if needed not in names:
                    names.append(needed)
    return names


def default_variants(native_bf16: bool) -> str:
    """The ``--variants`` default: the fp32 comparison and the knobs, plus the bf16 pair
    where bf16 is native (there the EnvRunner runs bf16; emulated, it only costs time)."""
    return "main,bf16,knobs" if native_bf16 else "main,knobs"


def workload_text(model: str, prompts: int, samples: int, max_tokens: int) -> str:
    """The workload in a few words, for the rows' notes."""
    return f"{model}, {prompts} prompts × {samples} samples, ≤ {max_tokens} tokens"


def knob_note(variant: Variant, run: dict[str, Any]) -> str:
    """Empty, or a warning when the thread count a knob asks for is not what ran."""
    want = variant.env.get("OMP_NUM_THREADS")
    if want and run.get("threads") is not None and int(want) != run["threads"]:
        return f"knob not applied: ran with {run['threads']} threads"
    return ""


def _variant_env(variant: Variant) -> dict[str, str]:
    env = dict(variant.env)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # all cores unless a knob
    return env


# ------------------------------------------------------------------ one variant (child)


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start the engine, generate the workload once (after a 4-token warm-up), then
    measure the matmul peaks in this same process."""
    import torch

    from bench.common import arithmetic_prompts
    from bench.roofline import count_parameters, measure_peaks, top_ops
    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.models import load_hf_model, resolve_model

    variant = VARIANTS[name]
    path = resolve_model(args.model)
    if "OMP_NUM_THREADS" in os.environ:  # (vLLM makes set_num_threads a no-op later)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    options = dict(variant.options)
    if variant.engine == "vllm":
        options = {"max_model_len": 1024, "kv_cache_gib": 1.0, **options}
    elif "batch_size" not in options:
        options["batch_size"] = args.prompts * args.samples  # one generate call for all rows
    started = time.perf_counter()
    engine = make_engine(variant.engine, path, seed=0, dtype=variant.dtype, **options)
    start_s = time.perf_counter() - started
    prompts = [engine.encode_prompt(m) for m in arithmetic_prompts(args.prompts)]
    engine.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up
    params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    groups = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    tokens = sum(c.num_tokens for g in groups for c in g)
    row: dict[str, Any] = {
        "variant": name, "engine": variant.engine, "dtype": variant.dtype,
        "options": options, "env": _variant_env(variant), "start_seconds": start_s,
        "generated_tokens": tokens, "generate_seconds": seconds,
        "tokens_per_second": tokens / seconds, "threads": torch.get_num_threads(),
        "loadavg_1m_before": load_avg, "loadavg_1m_after": os.getloadavg()[0],
    }  # fmt: skip
    if args.profile and name in ("vllm-fp32", "hf-fp32"):  # where the decoding time goes
        short = SamplingParams(n=args.samples, temperature=1.0, max_tokens=16)
        row["profile_top_ops"] = top_ops(lambda: engine.generate(prompts[:2], short))
    if variant.engine == "vllm" and name in ("vllm-fp32", "vllm-bf16"):
        state = load_hf_model(path, dtype=variant.dtype).state_dict()
        loads = []
        for _ in range(2 if args.quick else 3):
            engine.load_weights(state)
            loads.append(engine.last_load_seconds)
        row["engine_load_weights_seconds"] = loads
    engine.close()
    row["peaks"] = measure_peaks(seconds=1.0 if args.quick else 2.0)
    row["num_params"] = count_parameters(path)
    return row


# ------------------------------------------------------------------ driver


def derive_rows(runs: dict[str, dict[str, Any]], workload: str = "") -> list[Row]:
    """Summary rows: vLLM ÷ HF per dtype, roofline fractions, and each knob ÷ its reference.
    ``workload`` (:func:`workload_text`) goes into the notes of the vLLM ÷ HF rows."""
    from bench.roofline import decode_flops_per_token, roofline_fraction

    rows: list[Row] = []
    for dtype in ("fp32", "bf16"):
        ours, alt = runs.get(f"vllm-{dtype}"), runs.get(f"hf-{dtype}")
        if ours and alt:
            tokens = f"{ours['generated_tokens']} vs {alt['generated_tokens']} tokens generated"
            rows.append(Row(
                "rollout", f"tokens/s vLLM vs HF generate ({dtype})",
                ours["tokens_per_second"], "tok/s", alt["tokens_per_second"], "HF generate",
                ours["tokens_per_second"] / alt["tokens_per_second"], TARGET_SPEEDUP,
                note="; ".join(filter(None, (workload, tokens))),
            ))  # fmt: skip
    for run in runs.values():
        peaks = run["peaks"]
        best = max(peaks["float32_gflops"], peaks["bfloat16_gflops"])
        flops = decode_flops_per_token(run["num_params"])
        run["peak_gflops"] = best
        run["roofline_fraction"] = roofline_fraction(run["tokens_per_second"], flops, best)
        own = peaks["float32_gflops" if run["dtype"] == "float32" else "bfloat16_gflops"]
        run["roofline_fraction_own_dtype"] = roofline_fraction(run["tokens_per_second"], flops, own)
    for name in ("vllm-fp32", "vllm-bf16"):
        if name in runs:
            run = runs[name]
            rows.append(Row(
                "rollout", f"{name} fraction of roofline", run["roofline_fraction"],
                target=TARGET_ROOFLINE,
                note=f"peak {run['peak_gflops']:.0f} GFLOP/s, {run['threads']} threads",
            ))  # fmt: skip
    for name, run in runs.items():
        variant = VARIANTS[name]
        ref = runs.get(variant.reference or "")
        if ref:
            rows.append(Row(
                "rollout knob", f"{variant.engine}: {variant.knob}", run["tokens_per_second"],
                "tok/s", ref["tokens_per_second"], variant.reference,
                run["tokens_per_second"] / ref["tokens_per_second"],
                note=knob_note(variant, run),
            ))  # fmt: skip
    return rows


def _write(args, names: list[str], runs: dict, failed: dict[str, int], final: bool) -> None:
    workload = workload_text(args.model, args.prompts, args.samples, args.max_tokens)
    rows = derive_rows(runs, workload)
    for name, code in failed.items():  # a knob that crashes the engine is a result too
        variant = VARIANTS[name]
        note = f"FAILED (exit {code}), see {log_path(NAME, args.quick).name}"
        rows.append(
            Row("rollout knob", f"{variant.engine}: {variant.knob or name}", None, note=note)
        )
    pending = [n for n in names if n not in runs and n not in failed]
    config = {"model": args.model, "prompts": args.prompts, "samples": args.samples,
              "max_tokens": args.max_tokens, "variants": names, "failed": failed,
              "not_run_yet": pending}  # fmt: skip
    write_result(NAME, args, config=config, results=runs, rows=rows, echo=final)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--variants", default=None,
        help="groups (main, bf16, knobs, extra, slow, all, everything) and variant names; "
        "default: main,knobs (+ bf16 where native); --quick: main",
    )  # fmt: skip
    parser.add_argument("--prompts", type=int, default=None, help="default 8 (quick: 2)")
    parser.add_argument("--samples", type=int, default=None, help="default 4 (quick: 2)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 48 (quick: 16)")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch-profile a short extra generate of the fp32 variants (top ops by CPU time)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # variant name
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, full, quick in (("prompts", 8, 2), ("samples", 4, 2), ("max_tokens", 48, 16)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    if args.child:  # one variant, in this process
        Path(args.child_out).write_text(json.dumps(run_variant(args.child, args)))
        return

    if args.variants is None:
        from rllib_k15.models import preferred_dtype

        native_bf16 = preferred_dtype() == "bfloat16"
        args.variants = "main" if args.quick else default_variants(native_bf16)
    names = select_variants(args.variants)
    runs: dict[str, dict[str, Any]] = {}
    failed: dict[str, int] = {}
    workload = ["--model", args.model, "--prompts", str(args.prompts), "--samples",
                str(args.samples), "--max-tokens", str(args.max_tokens)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            print(f"[{NAME}] {name} ...", flush=True)
            started = time.perf_counter()
            child = ["--child", name, "--child-out", str(out)] + workload
            child += ["--profile" if args.profile else "--no-profile"]
            code = run_module(
                f"bench.{NAME}", child + (["--quick"] if args.quick else []),
                env=_variant_env(VARIANTS[name]), log=log_path(NAME, args.quick),
            )  # fmt: skip
            result = read_json(out)
            if code != 0 or result is None:
                failed[name] = code
                print(f"[{NAME}] {name} FAILED ({code}); see {log_path(NAME, args.quick)}")
                continue
            result["process_seconds"] = time.perf_counter() - started  # for time budgets
            runs[name] = result
            print(f"[{NAME}] {name}: {result['tokens_per_second']:.1f} tok/s in "
                  f"{result['process_seconds']:.0f} s", flush=True)  # fmt: skip
            _write(args, names, runs, failed, final=False)  # a timeout keeps what was measured
    _write(args, names, runs, failed, final=True)
    if set(failed) & set(GROUPS["main"]):
        raise SystemExit(f"main variants failed: {failed}")


if __name__ == "__main__":
    main()
