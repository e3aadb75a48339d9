"""long2short from a genuinely long model, on disjoint splits, 3 training seeds per method.

The earlier study (``experiments/long2short.py``) started from a "long" model only ~2×
longer than the short one, on 1-digit addition whose held-out draws overlapped training.
Here both parents are made by SFT of the embedded base on the *same* train-split 2-digit
problems, with two written forms of the same correct answer:

- **long CoT**: a worked column addition (ones, carry, tens), written at one of four
  verbosity levels per problem (terse, one line per column, restating the problem and the
  sum, and also a redundant check by subtraction: 39 / 58 / 80 / 104 tokens), so the long
  model's samples of one problem vary in length as a long-CoT model's do; ~4× the tokens
  (67 vs 15 in the SFT data) of
- **short CoT**: the bare ``a + b = \\boxed{c}``.

Every long2short method then starts from the long model on other train-split problems
(``L2S_ENV``): merge (α = 0.5 with the short parent), shortest rejection sampling + SFT,
DPO (shortest correct vs longer/wrong), long2short RL (OPMD + length reward from iteration
1 at a 96-token budget) and O1-Pruner. Each of the four trained methods runs with training
seeds 0, 1, 2 (the seed also draws its own long-model samples); merge is a deterministic
function of its parents. Every model is evaluated with ``k15 eval`` on the same test-split
2-digit problems, disjoint from all training by construction (content hash).

::

    python experiments/long2short_splits.py                  # every missing step, then the table
    python experiments/long2short_splits.py --seeds 0        # one seed of every method first
    python experiments/long2short_splits.py --plot-only

Each step is skipped when its output exists; RL steps resume (``k15 train --resume``).
Results: ``docs/results/long2short_splits/`` (``eval.jsonl``, ``table.md``,
``token_efficiency.png``, the SFT data and the RL runs' metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K15 = [sys.executable, "-m", "rllib_k15"]

BASE = "smollm2-135m-instruct"
ENV_ID = "k15/Arithmetic-v0"
SFT_ENV = {"difficulty": 2, "split": "train", "size": 256, "seed": 0}  # the parents' SFT data
L2S_ENV = {"difficulty": 2, "split": "train", "size": 64, "seed": 1}  # the methods' problems
EVAL_ENV = {"difficulty": 2, "split": "test", "seed": 0}
PARENT_SFT = ["--epochs", "2", "--lr", "3e-5", "--batch-size", "8"]
RS_SFT = ["--epochs", "2", "--lr", "1e-5", "--batch-size", "8"]
DPO_ARGS = ["--beta", "0.1", "--epochs", "1", "--lr", "5e-6", "--batch-size", "4"]
DPO_PAIRS_PER_PROBLEM = 1  # one rejected response per problem keeps DPO's cost at SFT's
SAMPLE_TOKENS = 128  # the long model's budget (its SFT answers are 39-104 tokens)
RL_CONFIGS = {
    "l2s_rl": "tuned_examples/long2short/splits_long2short_rl_addition_smollm2.yaml",
    "o1_pruner": "tuned_examples/long2short/splits_o1_pruner_addition_smollm2.yaml",
}
PARENTS = {"long CoT (start)": "long_cot", "short CoT": "short_cot", "merge α=0.5": "merge"}
BASE_LABEL = "base (before SFT)"
METHODS = {  # label -> model name (one per seed)
    "shortest RS + SFT": "shortest_rs_sft",
    "DPO": "dpo",
    "long2short RL": "l2s_rl",
    "O1-Pruner": "o1_pruner",
}


def worked_solution(a: int, b: int, verbosity: int = 2) -> str:
    """The long-CoT answer: column addition with the carry written out, at one of
    ``VERBOSITY`` levels — 0 terse, 1 one line per column, 2 restating the problem and the
    sum, 3 also checking the sum by subtraction (a redundant step, as long CoT has)."""
    ones, carry = a % 10 + b % 10, (a % 10 + b % 10) // 10
    tens, total = a // 10 + b // 10 + carry, a + b
    carried = f" + {carry}" if carry else ""
    if verbosity == 0:
        carry_note = f", carry {carry}" if carry else ""
        return (f"Ones: {a % 10} + {b % 10} = {ones}{carry_note}. "
                f"Tens: {a // 10} + {b // 10}{carried} = {tens}. \\boxed{{{total}}}")  # fmt: skip
    ones_line = f"Ones: {a % 10} + {b % 10} = {ones}. Write {ones % 10}" + (
        f", carry {carry}." if carry else "."
    )
    tens_line = f"Tens: {a // 10} + {b // 10}{carried} = {tens}. Write {tens}."
    if verbosity == 1:
        return f"{ones_line}\n{tens_line}\nSo {a} + {b} = \\boxed{{{total}}}."
    lines = [
        f"We add {a} and {b} column by column.",
        ones_line,
        tens_line,
        f"So {a} + {b} = {total}.",
    ]
    if verbosity == 3:
        lines.append(f"Check: {total} - {b} = {a}, which matches, so the sum is right.")
    return "\n".join([*lines, f"The answer is \\boxed{{{total}}}."])


VERBOSITY = (0, 1, 2, 3)


def verbosity_of(index: int) -> int:
    """The written form of SFT problem ``index``: a seeded, even mix of the levels, so that
    the long model's samples of one problem vary in length (what long2short can select)."""
    import random

    return random.Random(f"long2short-verbosity-{index}").choice(VERBOSITY)


def written_form(response: str) -> int:
    """Which verbosity level a long-model sample follows, read off its markers."""
    for level, marker in ((3, "Check:"), (2, "We add"), (1, "Write")):
        if marker in response:
            return level
    return 0


def form_profile(samples: list[Path], out: Path) -> None:
    """Pass@1 and tokens of the long model's samples per written form (``form_profile.md``):
    does its length pay?"""
    import pyarrow.parquet as pq

    stats: dict[int, list[tuple[bool, int]]] = {}
    for path in samples:
        for row in pq.read_table(path, columns=["response", "correct", "token_length"]).to_pylist():
            stats.setdefault(written_form(row["response"]), []).append(
                (row["correct"], row["token_length"])
            )
    names = {0: "terse", 1: "one line per column", 2: "restates problem and sum", 3: "+ check"}
    lines = [
        f"Samples of the long-CoT model on the long2short problems ({len(samples)} sampling "
        "seeds × 64 train-split problems × 8, T = 1), by the written form they follow.",
        "",
        "| form | samples | share | Pass@1 | mean tokens |",
        "|---|---|---|---|---|",
    ]
    total = sum(len(v) for v in stats.values())
    for level in sorted(stats):
        rows = stats[level]
        acc = sum(c for c, _ in rows) / len(rows)
        tokens = sum(t for _, t in rows) / len(rows)
        lines.append(
            f"| {level} {names[level]} | {len(rows)} | {len(rows) / total:.2f} | {acc:.2f} "
            f"| {tokens:.1f} |"
        )
    (out / "form_profile.md").write_text("\n".join(lines) + "\n")


def direct_answer(a: int, b: int) -> str:
    """The short-CoT answer: the sum, boxed."""
    return f"{a} + {b} = \\boxed{{{a + b}}}"


def operands(expression: str) -> tuple[int, int]:
    """``"47 + 25"`` -> ``(47, 25)``; anything else is not a 2-term addition."""
    left, plus, right = expression.partition(" + ")
    if not plus or not left.isdigit() or not right.isdigit():
        raise ValueError(f"not a two-term addition: {expression!r}")
    return int(left), int(right)


def write_parent_data(out_dir: Path) -> dict[str, Path]:
    """The long and short SFT parquets over the same ``SFT_ENV`` problems."""
    import gymnasium as gym
    import k15_envs  # noqa: F401  (registers the envs)

    from rllib_k15.long2short.data import write_sft_parquet
    from rllib_k15.long2short.selection import SFTExample
    from rllib_k15.models import load_tokenizer

    env = gym.make(ENV_ID, **SFT_ENV).unwrapped
    tokenizer = load_tokenizer(BASE)
    paths = {}
    forms = {
        "long_cot": lambda a, b, i: worked_solution(a, b, verbosity_of(i)),
        "short_cot": lambda a, b, i: direct_answer(a, b),
    }
    for name, write in forms.items():
        examples = []
        for i in range(len(env)):
            problem = env.problem(i)
            response = write(*operands(problem.metadata["expression"]), i)
            if env.verify(problem, response).reward != 1.0:
                raise AssertionError(f"{name} answer graded wrong: {problem.id}: {response!r}")
            tokens = len(tokenizer(response, add_special_tokens=False).input_ids)
            examples.append(SFTExample(problem.id, problem.prompt, response, tokens, 1, 1))
        paths[name] = out_dir / f"{name}_sft.parquet"
        write_sft_parquet(examples, paths[name], info={"env": ENV_ID, "env_kwargs": SFT_ENV})
    return paths


def cap_pairs(source: Path, out: Path, per_problem: int, seed: int) -> None:
    """At most ``per_problem`` pairs of each problem (a seeded choice among its pairs)."""
    import random

    from rllib_k15.long2short.data import read_pairs_parquet, write_pairs_parquet

    by_problem: dict[str, list] = {}
    for pair in read_pairs_parquet(source):
        by_problem.setdefault(pair.problem_id, []).append(pair)
    rng = random.Random(seed)
    kept = [
        p for pairs in by_problem.values() for p in rng.sample(pairs, min(per_problem, len(pairs)))
    ]
    write_pairs_parquet(kept, out, info={"from": source.name, "per_problem": per_problem})


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(list(cmd), check=True, cwd=ROOT)


def done(model: Path) -> bool:
    return (model / "config.json").is_file()


def train_rl(config: str, start: Path, run_dir: Path, seed: int, extra: list[str]) -> None:
    """``k15 train`` from ``start`` to the config's stop (continuing an interrupted run)."""
    if (run_dir / "run.json").is_file():
        sh(*K15, "train", "--resume", str(run_dir))
        return
    sets = [f"training.hf_model={start}", f"debugging.seed={seed}", *extra]
    sh(*K15, "train", "--config", config, "--out", str(run_dir), "--checkpoint-every", "3",
       *[arg for s in sets for arg in ("--set", s)])  # fmt: skip


def export(run_dir: Path, model: Path) -> None:
    if not done(model):
        sh(*K15, "export", str(run_dir / "checkpoint"), str(model), "--dtype", "float32")
        for checkpoint in run_dir.glob("checkpoint*"):  # the run's metrics stay; weights go
            shutil.rmtree(checkpoint) if checkpoint.is_dir() else checkpoint.unlink()


def make_parents(work: Path, data: Path) -> None:
    models = work / "models"
    parquets = write_parent_data(data)
    for name, parquet in parquets.items():
        if not done(models / name):
            sh(*K15, "sft", "--model", BASE, "--data", str(parquet), "--out", str(models / name),
               *PARENT_SFT, "--seed", "0", "--no-progress")  # fmt: skip
    if not done(models / "merge"):
        sh(*K15, "long2short", "merge", str(models / "long_cot"), str(models / "short_cot"),
           "--out", str(models / "merge"), "--alpha", "0.5")  # fmt: skip


def make_methods(work: Path, seed: int) -> None:
    models, long_cot, env = work / "models", work / "models" / "long_cot", json.dumps(L2S_ENV)
    seed_dir = work / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    samples, reference = seed_dir / "long_cot_samples.parquet", seed_dir / "o1_reference.json"
    if not reference.is_file():
        sh(*K15, "long2short", "o1-reference", "--model", str(long_cot), "--env", ENV_ID,
           "--env-kwargs", env, "--samples", "8", "--max-tokens", str(SAMPLE_TOKENS),
           "--seed", str(seed), "--save-samples", str(samples), "--out", str(reference),
           "--no-progress")  # fmt: skip
    for command, name in (("shortest-rs", "shortest_rs.parquet"), ("dpo-pairs", "pairs.parquet")):
        if not (seed_dir / name).is_file():
            sh(*K15, "long2short", command, "--from-samples", str(samples),
               "--out", str(seed_dir / name))  # fmt: skip
    target = models / f"shortest_rs_sft_seed{seed}"
    if not done(target):
        sh(*K15, "sft", "--model", str(long_cot), "--data", str(seed_dir / "shortest_rs.parquet"),
           "--out", str(target), *RS_SFT, "--seed", str(seed), "--no-progress")  # fmt: skip
    target, capped = models / f"dpo_seed{seed}", seed_dir / "pairs_capped.parquet"
    if not capped.is_file():
        cap_pairs(seed_dir / "pairs.parquet", capped, DPO_PAIRS_PER_PROBLEM, seed)
    if not done(target):
        sh(*K15, "dpo", "--model", str(long_cot), "--pairs", str(capped),
           "--out", str(target), *DPO_ARGS, "--seed", str(seed), "--no-progress")  # fmt: skip
    for name, config in RL_CONFIGS.items():
        target = models / f"{name}_seed{seed}"
        if not done(target):
            extra = (
                [f"training.o1_pruner_reference_stats={reference}"] if name == "o1_pruner" else []
            )
            train_rl(config, long_cot, work / "runs" / f"{name}_seed{seed}", seed, extra)
            export(work / "runs" / f"{name}_seed{seed}", target)


def evaluate(
    label: str, model: Path | str, results: Path, args: argparse.Namespace, seed: int
) -> None:
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    )
    if any(r["label"] == label and r.get("training_seed", 0) == seed for r in rows):
        return
    scratch = results.with_suffix(".new.jsonl")
    scratch.unlink(missing_ok=True)
    env = json.dumps({**EVAL_ENV, "size": args.eval_problems})
    sh(*K15, "eval", "--model", str(model), "--env", ENV_ID, "--env-kwargs", env,
       "--problems", str(args.eval_problems), "--samples", str(args.eval_samples), "--runs", "1",
       "--seed", "0", "--max-tokens", str(SAMPLE_TOKENS), "--label", label, "--out", str(scratch),
       "--no-plot")  # fmt: skip
    new = [json.loads(line) | {"training_seed": seed} for line in scratch.read_text().splitlines()]
    with results.open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in new)
    for side_file in results.parent.glob(f"{scratch.stem}.*"):  # the eval's .csv, .precision
        side_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/long2short_splits", help="models, samples, runs")
    parser.add_argument("--out", default="docs/results/long2short_splits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-problems", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)

    work, out = ROOT / args.work, ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    results = out / "eval.jsonl"
    if not args.plot_only:
        make_parents(work, out)
        for label, name in PARENTS.items():
            evaluate(label, work / "models" / name, results, args, seed=0)
        evaluate(BASE_LABEL, BASE, results, args, seed=0)
        for seed in args.seeds:
            make_methods(work, seed)
            for label, name in METHODS.items():
                evaluate(label, work / "models" / f"{name}_seed{seed}", results, args, seed)
            for name in RL_CONFIGS:
                shutil.copy(work / "runs" / f"{name}_seed{seed}" / "metrics.jsonl",
                            out / f"{name}_seed{seed}_metrics.jsonl")  # fmt: skip
    from long2short_report import write_report

    samples = sorted((work).glob("seed*/long_cot_samples.parquet"))
    if samples:
        form_profile(samples, out)

    write_report(results, out, reference="long2short RL", off_figure=(BASE_LABEL,))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
