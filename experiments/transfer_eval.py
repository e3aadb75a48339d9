"""Transfer: does RL on addition help (or hurt) on reasoning tasks it never trained on?

Evaluates several models (``--models label=MODEL``: a registered name or an HF directory,
e.g. ``k15 export`` of a run) on the ``test`` split of reasoning-gym tasks (and the
project's own envs) that were not in training, all on the same problems with the same
sampling seed, and reports for each task Pass@1 with its 95 % interval (bootstrap over
problems) per model and the paired difference of every model to the first one (same
problems, bootstrap over problems). Written to ``docs/results/transfer/`` (``transfer.json``
with every sample's correctness and length, ``table.md``, ``transfer.png``)::

    k15 export runs/addition/checkpoint runs/addition/hf
    python experiments/transfer_eval.py --models base=smollm2-135m-instruct \\
        trained=runs/addition/hf [--tasks chain_sum_l1 leg_counting ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs/results/transfer"

TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "chain_sum_l1": ("k15/ReasoningGym-v0", {"dataset": "chain_sum", "difficulty": 1}),
    "basic_arithmetic": ("k15/ReasoningGym-v0", {"dataset": "basic_arithmetic"}),
    "leg_counting": ("k15/ReasoningGym-v0", {"dataset": "leg_counting"}),
    "letter_counting": ("k15/ReasoningGym-v0", {"dataset": "letter_counting"}),
    "number_sorting": ("k15/ReasoningGym-v0", {"dataset": "number_sorting"}),
    "spell_backward": ("k15/ReasoningGym-v0", {"dataset": "spell_backward"}),
    "countdown_l1": ("k15/Countdown-v0", {"difficulty": 1}),
    "gsm_symbolic_l1": ("k15/GSMSymbolic-v0", {"difficulty": 1}),
}


def summarize(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per (task, model): Pass@1 [interval], tokens, paired difference to the first."""
    from rllib_k15.evaluation.intervals import paired_difference_interval, pass_at_1_interval

    rows = []
    labels = list(doc["models"])
    for task, entry in doc["tasks"].items():
        first = entry["results"].get(labels[0])
        for label in labels:
            res = entry["results"].get(label)
            if res is None:
                continue
            low, high = pass_at_1_interval(res["correct"])
            row = {
                "task": task, "model": label, "pass_at_1": float(np.mean(res["correct"])),
                "low": low, "high": high, "mean_tokens": float(np.mean(res["tokens"])),
                "problems": len(res["correct"]),
            }  # fmt: skip
            if label != labels[0] and first is not None:
                diff, dlow, dhigh = paired_difference_interval(res["correct"], first["correct"])
                row.update({"diff": diff, "diff_low": dlow, "diff_high": dhigh})
            rows.append(row)
    return rows


def write_table(doc: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> None:
    s = doc["settings"]
    labels = list(doc["models"])
    lines = [
        "# Transfer to tasks never trained on", "",
        f"Models: {', '.join(f'`{k}` = {v}' for k, v in doc['models'].items())}. `test` split, "
        f"first {s['problems']} problems × {s['samples']} samples, T = 1, ≤ {s['max_tokens']} "
        f"tokens, sampling seed {s['seed']} for every model. Machine: 2 cores, {s['cpu']} "
        f"(flags: {', '.join(s['cpu_flags']) or 'no native bf16'}), precision {s['precision']}. "
        "95 % intervals: bootstrap over problems; the difference is paired (same problems). "
        "Command: `python experiments/transfer_eval.py` (see its docstring).", "",
        "| task | " + " | ".join(f"{m} Pass@1" for m in labels) + " | tokens ("
        + " / ".join(labels) + ") | " + " | ".join(f"{m} − {labels[0]}" for m in labels[1:]) + " |",
        "|---|" + "---|" * (2 * len(labels)),
    ]  # fmt: skip
    for task in doc["tasks"]:
        mine = {r["model"]: r for r in rows if r["task"] == task}
        cells = [f"{mine[m]['pass_at_1']:.3f} [{mine[m]['low']:.3f}, {mine[m]['high']:.3f}]"
                 if m in mine else "-" for m in labels]  # fmt: skip
        tokens = " / ".join(f"{mine[m]['mean_tokens']:.0f}" if m in mine else "-" for m in labels)
        diffs = [f"{mine[m]['diff']:+.3f} [{mine[m]['diff_low']:+.3f}, {mine[m]['diff_high']:+.3f}]"
                 if "diff" in mine.get(m, {}) else "-" for m in labels[1:]]  # fmt: skip
        lines.append(
            f"| {task} | " + " | ".join(cells) + f" | {tokens} | " + " | ".join(diffs) + " |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(doc: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, tasks = list(doc["models"]), list(doc["tasks"])
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks)), 4))
    for j, label in enumerate(labels):
        mine = {r["task"]: r for r in rows if r["model"] == label}
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(tasks))]
        ys = [mine[t]["pass_at_1"] if t in mine else np.nan for t in tasks]
        below = [mine[t]["pass_at_1"] - mine[t]["low"] if t in mine else 0 for t in tasks]
        above = [mine[t]["high"] - mine[t]["pass_at_1"] if t in mine else 0 for t in tasks]
        err = [below, above]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set(ylabel="Pass@1 (test split, 95 % interval)", title="Transfer to tasks never trained on")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "transfer.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="LABEL=MODEL")
    parser.add_argument("--tasks", nargs="*", choices=sorted(TASKS))
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if bad := [m for m in args.models if "=" not in m]:
        parser.error(f"--models needs LABEL=MODEL, got {bad[0]!r}")

    from k15_envs.splits import SplitError
    from tqdm import tqdm

    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.env_factory import make_reasoning_env
    from rllib_k15.evaluation.evaluate import sample_and_grade
    from rllib_k15.hardware import _cpuinfo, decide_precision

    models = dict(m.split("=", 1) for m in args.models)
    precision = decide_precision("auto")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "transfer.json"
    doc = json.loads(path.read_text()) if path.exists() else {"tasks": {}}
    doc["models"] = {**doc.get("models", {}), **{k: Path(v).name for k, v in models.items()}}
    doc["settings"] = {
        "problems": args.problems, "samples": args.samples, "max_tokens": args.max_tokens,
        "temperature": 1.0, "seed": args.seed, "split": "test", "cpu": _cpuinfo()[0],
        "cpu_flags": list(precision.cpu_flags), "precision": precision.dtype,
    }  # fmt: skip
    params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    names = args.tasks or list(TASKS)
    for label, model in models.items():
        engine = make_engine("vllm", model, seed=args.seed, max_model_len=args.max_tokens + 1024)
        try:
            for name in tqdm(names, desc=label):
                env_id, kwargs = TASKS[name]
                kwargs = {"split": "test", "size": args.problems, **kwargs}
                try:
                    env = make_reasoning_env(env_id, kwargs)
                except SplitError as err:  # a small task: all of its test split
                    env = make_reasoning_env(env_id, {**kwargs, "size": err.found})
                engine.reseed(args.seed)  # same sampling stream for every model and task
                result = sample_and_grade(engine, env.unwrapped, params, len(env.unwrapped))
                env.close()
                entry = doc["tasks"].setdefault(name, {"env": env_id, "env_kwargs": kwargs})
                entry.setdefault("results", {})[label] = result
                print(f"{label} {name}: Pass@1 {np.mean(result['correct']):.3f}, "
                      f"{np.mean(result['tokens']):.0f} tokens", flush=True)  # fmt: skip
                path.write_text(json.dumps(doc, indent=1) + "\n")
        finally:
            engine.close()
    rows = summarize(doc)
    write_table(doc, rows, args.out)
    plot(doc, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
