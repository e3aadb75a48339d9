"""Where the memory of one K15MirrorDescent iteration goes: RSS sampled every 0.2 s with phase
markers (engine start, generation, reference log-probs, minibatch updates, weight sync).

    python -m bench.memory_breakdown [--training '{"problems_per_iteration": 16, ...}']
        [--out bench/results/memory_breakdown]

Without ``--training`` it measures the built-in defaults, i.e. what
``rllib train --algo K15MirrorDescent --env k15/Arithmetic-v0`` builds (in-process, local
EnvRunner, no Tune actor). The phase markers wrap the engine's and learner's methods (a
measuring instrument, not product code). Writes ``summary.json`` (peak RSS per phase, the
iteration's metrics) and ``marks.json`` (RSS at each phase boundary) under ``--out``.
"""

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import psutil

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--training", default="{}", help="JSON of K15Config.training() overrides")
parser.add_argument("--out", default="bench/results/memory_breakdown")
ARGS = parser.parse_args()
OUT = Path(ARGS.out)
OUT.mkdir(parents=True, exist_ok=True)
PROC = psutil.Process()
phase = ["imports"]
samples = []  # (t, phase, rss, tree_rss)
marks = []  # (t, label, rss)
T0 = time.perf_counter()
GIB = 1 << 30


def rss():
    return PROC.memory_info().rss


def tree_rss():
    total = 0
    for p in [PROC, *PROC.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def sampler():
    while True:
        samples.append((time.perf_counter() - T0, phase[0], rss(), None))
        time.sleep(0.2)


threading.Thread(target=sampler, daemon=True).start()


def mark(label):
    marks.append((time.perf_counter() - T0, label, rss()))
    print(f"[{time.perf_counter() - T0:7.1f}s] {label:45s} rss {rss() / GIB:6.2f} GiB", flush=True)


def wrap(cls, name, label):
    orig = getattr(cls, name)

    def wrapper(*a, **k):
        prev = phase[0]
        phase[0] = label
        mark(f"{label} start")
        try:
            return orig(*a, **k)
        finally:
            mark(f"{label} end")
            phase[0] = prev

    setattr(cls, name, wrapper)


mark("start")
import ray  # noqa: E402

mark("imported torch+ray")
from rllib_k15 import K15Config  # noqa: E402
from rllib_k15.algorithm import learner as ln  # noqa: E402
from rllib_k15.engine import vllm_engine as ve  # noqa: E402

mark("imported rllib_k15")
wrap(ve.VLLMEngine, "__init__", "vllm engine init")
wrap(ve.VLLMEngine, "generate", "vllm generate")
wrap(ve.VLLMEngine, "load_weights", "vllm load_weights")
wrap(ln.K15TorchLearner, "build", "learner build")
wrap(ln.K15TorchLearner, "compute_reference_logprobs", "reference logprobs")
wrap(ln.K15TorchLearner, "_uncompiled_update", "learner minibatch update")
wrap(ln.K15TorchLearner, "_step_optimizers", "optimizer step")

ray.init(address="local", log_to_driver=False)
mark("ray.init")
config = K15Config().environment("k15/Arithmetic-v0").training(**json.loads(ARGS.training))
print(
    {
        k: getattr(config, k)
        for k in (
            "problems_per_iteration",
            "samples_per_problem",
            "max_response_tokens",
            "micro_batch_size",
            "minibatch_size",
            "engine",
            "engine_options",
            "autocast_bf16",
            "hf_model",
        )
    },
    flush=True,
)
phase[0] = "build_algo"
algo = config.build_algo()
phase[0] = "idle"
mark("built algo")
learner = algo.local_learner
n_params = sum(p.numel() for p in learner.module["default_policy"].parameters())
n_trainable = sum(
    p.numel() for p in learner.module["default_policy"].parameters() if p.requires_grad
)
print(
    "learner params", n_params, "dtype", next(learner.module["default_policy"].parameters()).dtype
)
phase[0] = "train"
t = time.perf_counter()
result = algo.train()
train_s = time.perf_counter() - t
phase[0] = "idle"
mark("trained 1 iteration")
k15 = result.get("k15", {})
envr = result.get("env_runners", {})
summary = {
    "training_overrides": json.loads(ARGS.training),
    "train_seconds": train_s,
    "params": n_params,
    "trainable_params": n_trainable,
    "load_avg": os.getloadavg(),
    "k15": {k: v for k, v in k15.items() if isinstance(v, (int, float))},
    "env_runners": {k: v for k, v in envr.items() if isinstance(v, (int, float))},
    "learners": {
        k: v for k, v in result.get("learners", {}).items() if isinstance(v, (int, float))
    },
    "tree_rss_end": tree_rss(),
    "peak_rss_by_phase": {},
}
for _, ph, r, _ in samples:
    summary["peak_rss_by_phase"][ph] = max(summary["peak_rss_by_phase"].get(ph, 0), r)
summary["peak_rss"] = max(r for _, _, r, _ in samples)
summary["maxrss_ru"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
(OUT / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
(OUT / "marks.json").write_text(json.dumps(marks))
print(
    json.dumps(
        {k: v for k, v in summary.items() if k not in ("k15", "env_runners", "learners")},
        indent=1,
        default=str,
    )
)
print("k15:", summary["k15"])
print("env_runners:", summary["env_runners"])
print("learners:", summary["learners"])
algo.stop()
ray.shutdown()
sys.exit(0)
