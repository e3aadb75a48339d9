"""Partial rollouts vs whole responses: training wall time at equal trained tokens.

    python -m bench.partial_rollouts [--quick] [--out FILE] [--budget 48] [--max-tokens 256]
        [--hazard 0.03] [--problems 8] [--samples 4] [--target-tokens N]

Workload. A heavy-tailed response-length mix needs a model whose responses end at
controlled, varied lengths, and the embedded SmolLM2 is too slow to train here at a useful
scale. So the benchmark builds a *length-controlled tiny model* from ``tiny-random-llama``
(:func:`build_eos_model`): the output head is untied and its EOS row set to β·u, u the mean
direction of the model's final hidden states, β calibrated so that the mean per-token EOS
probability is ``--hazard``. Because h·u varies a lot between contexts, the per-step
stopping probability does too: most responses end after a few dozen tokens, a few run to
``--max-tokens`` — the long tail that makes a whole-response iteration wait for its
longest member. The env is k15/Arithmetic-v0 (difficulty 1); rewards are all 0 for a random
model, which changes no timing.

Both modes run the real K15MirrorDescent (vLLM engine in-process, fp32, local EnvRunner,
learner) in their own child process, with ``partial_rollout_train_old_segments=True`` so
the learner does the same work per trained response. Each mode trains until it has
trained ``--target-tokens`` response tokens after its warm-up, which is not counted: the
first iteration for whole responses; the first S = ⌈max_tokens / budget⌉ iterations with
partial rollouts (filling the pipeline: a group started in iteration i is trained by
i + S − 1 at the latest, so only from then on does every iteration train a full set);
the metric is wall seconds per 1000 trained tokens and the ratio is
partial ÷ whole (< 1: partial rollouts are faster). The same ratio is given for generation
seconds alone — what partial rollouts act on; on this CPU with a tiny model the learner's
share is large and per-token about equal in both modes, which pulls the wall-time ratio
towards 1. The per-iteration split into sampling (generation, scoring), learner update and
weight sync and the machine's load average are reported for both; ``--rounds 2`` runs
whole, partial, partial, whole to even out drifting load from other jobs.

Results: ``bench/results/partial_rollouts.json`` (``--quick``: ``bench/results/quick/``),
in the harness's format (:func:`bench.common.write_result`); its summary rows
(:func:`summary_rows`) are the two partial ÷ whole ratios — target: ≥ 1.5× faster
per trained token, i.e. a wall-time ratio ≤ 1/1.5 — the iterations measured and the
trained tokens with the workload. About 3-4 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import Row, add_common_args, write_result

NAME = "partial_rollouts"
LABEL = "partial rollouts"  # the table's benchmark column
TARGET_RATIO = 1 / 1.5  # target: >= 1.5x faster per trained token = time ratio <= 0.667
SPLIT = (
    "sampling_seconds", "generation_seconds", "scoring_seconds",
    "learner_update_seconds", "weight_sync_seconds",
)  # fmt: skip


def build_eos_model(out: Path, hazard: float, seed: int = 0) -> dict[str, Any]:
    """tiny-random-llama with an untied head whose EOS logit is β·(h·u) (see module doc).

    β solves mean_t σ(β·a_t − lse_t) = ``hazard`` by bisection, a_t = h_t·u and lse_t the
    log-sum-exp of the other logits, over the hidden states of random token sequences.
    """
    import torch

    from rllib_k15.models import load_hf_model, load_tokenizer, resolve_model

    base = resolve_model("tiny-random-llama")
    model, tok = load_hf_model(base, "float32"), load_tokenizer(base)
    eos = tok.eos_token_id
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(100, model.config.vocab_size, (16, 96), generator=gen)
        fwd = model(ids, output_hidden_states=True)
        hidden = fwd.hidden_states[-1].reshape(-1, model.config.hidden_size)  # (N, H)
        head = model.get_input_embeddings().weight.detach().clone()  # (V, H), was tied
        logits = hidden @ head.T  # (N, V)
        if not torch.allclose(logits, fwd.logits.reshape(logits.shape), atol=1e-3):
            raise RuntimeError("hidden_states[-1] is not the head's input (post-norm)")
        logits[:, eos] = -float("inf")
        lse = torch.logsumexp(logits, dim=-1)
        u = hidden.mean(0) / hidden.mean(0).norm()
        a = hidden @ u
        lo, hi = 0.0, 64.0
        for _ in range(60):
            beta = (lo + hi) / 2
            lo, hi = (beta, hi) if torch.sigmoid(beta * a - lse).mean() < hazard else (lo, beta)
        head[eos] = beta * u
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(head)
        p = torch.sigmoid(beta * a - lse)
    model.config.dtype = "float32"
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out)
    tok.save_pretrained(out)
    reloaded = load_hf_model(out, "float32")
    if not torch.equal(reloaded.lm_head.weight[eos], head[eos]):
        raise RuntimeError("the untied EOS row did not survive save/load")
    quantiles = torch.quantile(p, torch.tensor([0.1, 0.5, 0.9, 0.99])).tolist()
    return {"beta": beta, "hazard": hazard, "eos_prob_quantiles_10_50_90_99": quantiles}


def warmup_iterations(max_tokens: int, budget: int | None) -> int:
    """Iterations not measured: 1 for whole responses; with partial rollouts the S =
    ⌈max_tokens / budget⌉ that fill the pipeline."""
    return 1 if budget is None else -(-max_tokens // budget)


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: train one mode until ``target_tokens`` trained tokens; per-iteration
    records."""
    import ray

    from rllib_k15 import K15Config

    for attempt in range(5):  # Ray waits only 30 s for its raylet; a busy box can need more
        try:
            ray.init(include_dashboard=False, num_cpus=2, log_to_driver=False)
            break
        except Exception:  # noqa: BLE001 - retried, then re-raised
            if attempt == 4:
                raise
            ray.shutdown()
    budget = args.budget if args.child == "partial" else None
    config = (
        K15Config()
        .environment("k15/Arithmetic-v0", env_config={"difficulty": 1})
        .training(
            hf_model=args.model_dir,
            engine="vllm",
            engine_options={
                "dtype": "float32",
                "kv_cache_gib": 0.5,
                "enforce_eager": True,
                "max_model_len": args.max_tokens + 256,
            },
            samples_per_problem=args.samples,
            problems_per_iteration=args.problems,
            max_response_tokens=args.max_tokens,
            partial_rollout_max_tokens=budget,
            partial_rollout_train_old_segments=True,  # default bound: never blocks new problems
            minibatch_size=args.problems * args.samples,
            micro_batch_size=8,
            lr=1e-5,
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    warmup = warmup_iterations(args.max_tokens, budget)
    records, trained = [], 0
    try:
        for it in range(args.max_iterations):
            start = time.perf_counter()
            result = algo.train()
            seconds = time.perf_counter() - start
            k15 = {k: v for k, v in result.get("k15", {}).items() if v == v}  # drop NaN:
            # keys of earlier iterations that this one did not log (no group trained)
            tokens = int(k15.get("num_responses", 0) * k15.get("response_tokens_mean", 0))
            if it >= warmup:  # engine caches, allocator; partial: the pipeline fills
                trained += tokens
            records.append(
                {
                    "iteration": it, "wall_seconds": seconds, "trained_tokens": tokens,
                    "loadavg_1m": os.getloadavg()[0],
                    "trained_responses": int(k15.get("num_responses", 0)),
                    "response_tokens_max": float(k15.get("response_tokens_max", 0.0)),
                    "generated_tokens": float(
                        result.get("env_runners", {}).get("generated_tokens", 0.0)
                    ),
                    **{name: float(k15.get(name, 0.0)) for name in SPLIT},
                    **{k: float(v) for k, v in k15.items() if k.startswith("partial_")},
                }
            )  # fmt: skip
            print(json.dumps(records[-1]), flush=True)
            if trained >= args.target_tokens:
                break
    finally:
        algo.stop()
    return {"mode": args.child, "budget": budget, "warmup": warmup, "iterations": records}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over the measured iterations of ``runs`` (each without its warm-up)."""
    measured = [r for run in runs for r in run["iterations"][run["warmup"] :]]
    wall = sum(r["wall_seconds"] for r in measured)
    tokens = sum(r["trained_tokens"] for r in measured)
    n = max(len(measured), 1)
    out = {
        "measured_iterations": float(len(measured)),
        "wall_seconds": wall,
        "trained_tokens": float(tokens),
        "seconds_per_1k_trained_tokens": 1000 * wall / tokens if tokens else float("nan"),
        "iteration_seconds_mean": wall / n,
        "generation_seconds_per_1k_trained_tokens": (
            1000 * sum(r["generation_seconds"] for r in measured) / tokens if tokens else 0.0
        ),
        "loadavg_1m_mean": sum(r["loadavg_1m"] for r in measured) / n,
        "generated_tokens": sum(r["generated_tokens"] for r in measured),
    }
    for name in SPLIT:
        out[f"{name}_mean"] = sum(r[name] for r in measured) / n
    return out


def summary_rows(
    summary: Mapping[str, Mapping[str, float]], config: Mapping[str, Any]
) -> list[Row]:
    """The table rows from :func:`summarize` of both modes (``summary["whole"]``,
    ``summary["partial"]``) and the run's ``config``: partial ÷ whole wall seconds and
    generation seconds per 1k trained tokens, the iterations measured, the trained tokens."""
    whole, partial = summary["whole"], summary["partial"]

    def versus_whole(key: str, metric: str, unit: str, ratio: bool, **kw: Any) -> Row:
        ours, alt = partial[key], whole[key]
        value = ours / alt if ratio and alt else None
        return Row(LABEL, metric, ours, unit, alt, "whole responses", value, **kw)

    warm = (warmup_iterations(config["max_tokens"], None),
            warmup_iterations(config["max_tokens"], config["budget"]))  # fmt: skip
    workload = (
        f"tiny-random-llama, EOS hazard {config['hazard']} (heavy tail); {config['problems']}"
        f" problems × {config['samples']} samples, ≤ {config['max_tokens']} tokens, partial "
        f"budget {config['budget']} tokens/iteration"
    )
    load = f"load {partial['loadavg_1m_mean']:.1f} (whole: {whole['loadavg_1m_mean']:.1f})"
    return [
        versus_whole("seconds_per_1k_trained_tokens", "wall seconds per 1k trained tokens", "s",
                     True, target=TARGET_RATIO, higher_is_better=False, note=load),
        versus_whole("generation_seconds_per_1k_trained_tokens",
                     "generation seconds per 1k trained tokens", "s", True,
                     higher_is_better=False, note="the phase partial rollouts act on"),
        versus_whole("measured_iterations", "iterations measured", "", False,
                     note=f"warm-up not measured: whole {warm[0]}, partial {warm[1]}"),
        versus_whole("trained_tokens", "trained tokens measured", "tok", False, note=workload),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, NAME)
    p.add_argument("--budget", type=int, default=48, help="partial_rollout_max_tokens")
    p.add_argument("--max-tokens", type=int, default=256, help="max_response_tokens")
    p.add_argument("--hazard", type=float, default=0.03, help="mean per-token EOS probability")
    p.add_argument("--problems", type=int, default=8, help="problems_per_iteration")
    p.add_argument("--samples", type=int, default=4, help="samples_per_problem")
    p.add_argument("--target-tokens", type=int, help="trained tokens per mode")
    p.add_argument("--max-iterations", type=int, default=40)
    p.add_argument(
        "--rounds", type=int, default=1,
        help="1: whole, partial; 2: whole, partial, partial, whole (ABBA, evens out drifting "
        "load on a shared machine)",
    )  # fmt: skip
    p.add_argument("--child", choices=("whole", "partial"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        Path(args.child_out).write_text(json.dumps(run_mode(args)))
        return 0
    if args.quick:
        args.problems, args.max_tokens, args.budget = 4, 128, 32
    if args.target_tokens is None:  # about six (quick: three) whole-response iterations
        per_iteration = args.problems * args.samples * round(1 / args.hazard)
        args.target_tokens = (3 if args.quick else 6) * per_iteration

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="k15-bench-partial-") as tmp:
        model_dir = Path(tmp) / "eos-tiny-llama"
        model_info = build_eos_model(model_dir, args.hazard)
        print(f"length-controlled model: {model_info}", flush=True)
        modes: dict[str, list[dict[str, Any]]] = {"whole": [], "partial": []}
        order = [m for r in range(args.rounds) for m in ("whole", "partial")[:: 1 - 2 * (r % 2)]]
        for run, mode in enumerate(order):
            out = Path(tmp) / f"{run}-{mode}.json"
            cmd = [sys.executable, "-m", "bench.partial_rollouts", "--child", mode,
                   "--model-dir", str(model_dir), "--child-out", str(out),
                   "--problems", str(args.problems), "--samples", str(args.samples),
                   "--max-tokens", str(args.max_tokens), "--budget", str(args.budget),
                   "--target-tokens", str(args.target_tokens),
                   "--max-iterations", str(args.max_iterations)]  # fmt: skip
            env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
            subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1])
            modes[mode].append(json.loads(out.read_text()))
    summary = {m: summarize(runs) for m, runs in modes.items()}
    ratio, gen_ratio = (
        summary["partial"][key] / summary["whole"][key]
        for key in ("seconds_per_1k_trained_tokens", "generation_seconds_per_1k_trained_tokens")
    )
    results = {
        "elapsed_seconds": time.time() - started, "model": model_info, "summary": summary,
        "order": order,
        "ratio_partial_over_whole_seconds_per_trained_token": ratio,
        "ratio_partial_over_whole_generation_seconds_per_trained_token": gen_ratio,
        "runs": modes,
    }  # fmt: skip
    config = {k: v for k, v in vars(args).items() if k not in ("child", "child_out", "model_dir")}
    path = write_result(NAME, args, config=config, results=results,
                        rows=summary_rows(summary, config))  # fmt: skip
    for mode, s in summary.items():
        print(
            f"{mode:8s} {s['measured_iterations']:.0f} it, {s['trained_tokens']:.0f} trained tok, "
            f"{s['seconds_per_1k_trained_tokens']:.1f} s/1k tok (generation "
            f"{s['generation_seconds_per_1k_trained_tokens']:.1f}), load "
            f"{s['loadavg_1m_mean']:.1f}; per iteration: "
            + ", ".join(f"{n.replace('_seconds', '')} {s[n + '_mean']:.1f}s" for n in SPLIT)
        )
    print(
        f"ratio partial/whole per trained token: wall time {ratio:.2f}, generation time "
        f"{gen_ratio:.2f}  ({path})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
