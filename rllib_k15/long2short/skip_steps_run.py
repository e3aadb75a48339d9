"""The resumable run of :mod:`rllib_k15.long2short.skip_steps` (settings, the loop over
rounds/epochs, checkpoints, evaluation, the report and its figure); the pure pieces live in
:mod:`rllib_k15.long2short.skip_steps`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rllib_k15.long2short.skip_steps import (
    REPORT_JSON,
    REPORT_PNG,
    ROUND_INFO,
    ROUNDS_DIR,
    SkipStepsError,
    StepSolution,
    TrainExample,
    accept_solutions,
    chain_of,
    chain_solution,
    merge_solutions,
    mix_data,
    steps_prompt,
    summarize_answers,
)
from rllib_k15.long2short.step_records import Refuse, fingerprint, load_record, write_json

__all__ = ["SkipStepsSettings", "run_skip_steps", "plot_rounds"]


# ----------------------------------------------------------------- the rounds
@dataclasses.dataclass(frozen=True)
class SkipStepsSettings:
    """Settings of :func:`run_skip_steps` (the CLI flags)."""

    model: str
    out: str
    config: dict[str, Any]
    """The chain_sum generator's fields (``min_terms``, ``max_terms``, ``min_digits`` ...)."""
    num_train: int = 200
    num_test: int = 50
    env_seed: int = 0
    rounds: int = 2
    continue_training: bool = True
    warm_start: bool = False
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 128
    check_arithmetic: bool = True
    engine: str = "vllm"
    sft: dict[str, Any] = dataclasses.field(default_factory=dict)
    """:class:`~rllib_k15.long2short.sft.SFTConfig` fields."""
    save_dtype: str = "auto"
    seed: int = 0
    progress: bool = True

    def env_kwargs(self, split: str) -> dict[str, Any]:
        """Kwargs of ``k15/ReasoningGym-v0`` for ``split`` (``k15 eval`` takes the test ones)."""
        size = self.num_train if split == "train" else self.num_test
        return {
            "dataset": "chain_sum",
            "config": dict(self.config),
            "size": size,
            "seed": self.env_seed,
            "split": split,
        }


_REFUSE = Refuse(
    SkipStepsError,
    "{path} was made with other settings (differ: {diff}); delete {path.parent} "
    "and the later rounds, or use another --out",
)


class _StepRequests:
    """An env view for :func:`~rllib_k15.long2short.collect.sample_groups`: problem ``i`` is
    request ``i`` with its step-controlled prompt, graded by the train env's verifier."""

    def __init__(self, env: Any, requests: Sequence[tuple[StepSolution, int]]) -> None:
        self.env = env
        by_id = {str(p.id): p for p in map(env.problem, range(len(env)))}
        self.problems = [
            dataclasses.replace(
                by_id[s.problem_id], id=f"{s.problem_id}@{k}", prompt=steps_prompt(s.prompt, k)
            )
            for s, k in requests
        ]

    def __len__(self) -> int:
        return len(self.problems)

    def problem(self, index: int) -> Any:
        return self.problems[index]

    def verify_batch(self, problems: Any, responses: Any, truncated: Any = None) -> Any:
        return self.env.verify_batch(problems, responses, truncated)


class _Rounds:
    """The rounds on one ``--out``. A round writes its model, then ``round.json`` (its
    settings, SFT metrics, test summary and accepted solutions) last; a round whose
    ``round.json`` holds the same settings is skipped (resumable at round granularity)."""

    def __init__(self, s: SkipStepsSettings, build: Callable[[str], Any], log: Callable) -> None:
        from rllib_k15.env_factory import make_unwrapped_env

        self.s, self.build, self.log, self.out = s, build, log, Path(s.out)
        try:
            self.train_env = make_unwrapped_env("k15/ReasoningGym-v0", s.env_kwargs("train"))
            self.test_env = make_unwrapped_env("k15/ReasoningGym-v0", s.env_kwargs("test"))
        except (TypeError, ValueError) as err:
            raise SkipStepsError(f"--config {s.config}: no chain_sum env: {err}") from err
        self.originals, self.warm = [], []
        for problem in map(self.train_env.problem, range(len(self.train_env))):
            chain = chain_of(problem)
            n = chain.full_steps
            full = StepSolution(
                str(problem.id), problem.prompt, chain_solution(chain, n), n, n, "full"
            )
            self.originals.append(full)
            for k in range(n - 1, 0, -1) if s.warm_start else ():
                response = chain_solution(chain, k)
                self.warm.append(
                    dataclasses.replace(full, response=response, steps=k, origin="warm")
                )

    def close(self) -> None:
        self.train_env.close()
        self.test_env.close()

    def sample(self, engine: Any, env: Any, n: int, temperature: float) -> list[Any]:
        from rllib_k15.long2short.collect import sample_groups

        indices, s = range(len(env)), self.s
        return list(
            sample_groups(engine, env, indices, n, temperature, s.max_tokens, progress=s.progress)
        )

    def train(
        self, r: int, model: Any, tokenizer: Any, data: list[TrainExample], dtype: str
    ) -> dict:
        """SFT ``model`` (fp32, in place) on ``data``; save a copy in ``dtype``."""
        import copy

        import torch

        from rllib_k15.long2short.sft import SFTConfig, train_sft
        from rllib_k15.long2short.training import save_hf_model

        self.log(f"[round {r}] SFT on {len(data)} examples")
        torch.manual_seed(self.s.seed + r)
        config = SFTConfig(**{**self.s.sft, "seed": self.s.seed + r, "progress": self.s.progress})
        metrics = train_sft(model, tokenizer, data, config)
        model_dir = self.out / ROUNDS_DIR / f"r{r}" / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        save_hf_model(copy.deepcopy(model), tokenizer, model_dir, dtype=dtype)
        return metrics

    def evaluate(self, engine: Any) -> dict[str, Any]:
        """Greedy, plain prompts, test split."""
        return summarize_answers(self.sample(engine, self.test_env, 1, 0.0))

    def generate(self, r: int, engine: Any) -> tuple[list[StepSolution], dict[str, Any]]:
        """Ask for N−1 ... 1 steps; keep the correct answers in exactly that many steps."""
        s = self.s
        requests = [(o, k) for o in self.originals for k in range(o.full_steps - 1, 0, -1)]
        view = _StepRequests(self.train_env, requests)
        groups = self.sample(engine, view, s.samples, s.temperature) if requests else []
        return accept_solutions(requests, groups, f"round{r + 1}", s.check_arithmetic)

    def run_round(self, r: int, model: Any, tokenizer: Any, data: list, settings: dict) -> dict:
        """Train on ``data``, evaluate, ask for fewer steps; write and return ``round.json``."""
        dtype = settings["save_dtype"]
        row = {"round": r, "train_examples": len(data), "skipped_solutions": settings["skipped"]}
        row["sft"] = self.train(r, model, tokenizer, data, dtype)
        with self.build(str(self.out / ROUNDS_DIR / f"r{r}" / "model")) as engine:
            row["test"] = t = self.evaluate(engine)
            self.log(
                f"[round {r}] test: accuracy {t['accuracy']}, mean steps (correct) "
                f"{t['mean_steps_correct']}, mean tokens {t['mean_tokens']}"
            )
            new, g = self.generate(r, engine)
            row["generation"] = g
        self.log(f"[round {r}] {g['accepted']} of {g['requests']} shorter solutions accepted")
        stored = {
            "settings": settings,
            "row": row,
            "accepted": [dataclasses.asdict(a) for a in new],
        }
        write_json(self.out / ROUNDS_DIR / f"r{r}" / ROUND_INFO, stored, sort_keys=True)
        return stored


def run_skip_steps(
    s: SkipStepsSettings,
    engine_factory: Callable[[str], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Round 0 and ``s.rounds`` skipping rounds in ``s.out`` (resumable); returns the report.

    ``engine_factory(model_dir) -> engine`` (default: ``make_engine(s.engine, ...)``).
    """
    from rllib_k15.long2short.training import checkpoint_dtype, load_for_training
    from rllib_k15.models import load_hf_model

    out, rows, accepted, previous = Path(s.out), [], [], ""
    rounds = _Rounds(s, engine_factory or _default_engine_factory(s), log)
    try:
        model, tokenizer, base = load_for_training(s.model)
        dtype = checkpoint_dtype(base) if s.save_dtype == "auto" else s.save_dtype
        common = dataclasses.asdict(s) | {"save_dtype": dtype, "train_env": s.env_kwargs("train")}
        for name in ("out", "rounds", "progress"):  # these do not change a round's outcome
            common.pop(name)
        for r in range(s.rounds + 1):
            rdir = out / ROUNDS_DIR / f"r{r}"
            data = mix_data(rounds.originals, accepted, rounds.warm)
            settings = {
                **common,
                "round": r,
                "previous": previous,
                "data_sha": fingerprint(data),
                "skipped": len(accepted),
            }
            stored = load_record(rdir / ROUND_INFO, settings, refuse=_REFUSE)
            if stored is not None:
                log(f"[round {r}] skipped, {rdir / ROUND_INFO} exists")
                if s.continue_training:  # the saved copy (in save_dtype), back in fp32
                    model = load_hf_model(rdir / "model", dtype="float32")
            else:
                if r and not s.continue_training:
                    model = load_for_training(s.model)[0]
                stored = rounds.run_round(r, model, tokenizer, data, settings)
            accepted = merge_solutions(accepted, [StepSolution(**a) for a in stored["accepted"]])
            rows.append(stored["row"])
            previous = fingerprint(settings)
        _copy_model(out / ROUNDS_DIR / f"r{s.rounds}" / "model", out)
    finally:
        rounds.close()
    test_env = {"env": "k15/ReasoningGym-v0", "env_kwargs": s.env_kwargs("test")}
    report = {
        "method": "skip-steps",
        "settings": dataclasses.asdict(s),
        "test_env": test_env,
        "rounds": rows,
    }
    write_json(out / REPORT_JSON, report, sort_keys=True)
    plot_rounds(rows, out / REPORT_PNG)
    log(f"report -> {out / REPORT_JSON}, {out / REPORT_PNG}; model -> {out}")
    return report


def _default_engine_factory(s: SkipStepsSettings) -> Callable[[str], Any]:
    from rllib_k15.engine import make_engine

    kwargs: dict[str, Any] = {"seed": s.seed}
    if s.engine == "vllm":
        kwargs["max_model_len"] = s.max_tokens + 1024
    return lambda model: make_engine(s.engine, model, **kwargs)


def _copy_model(src: Path, out: Path) -> None:
    """The last round's HF files into ``out``, so ``out`` itself loads as the model."""
    for path in src.iterdir():
        if path.is_file() and path.name != ROUND_INFO:
            shutil.copy2(path, out / path.name)


def plot_rounds(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean steps of the correct test solutions, accuracy and mean tokens per round (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("mean_steps_correct", "mean steps (correct)"),
        ("accuracy", "test accuracy"),
        ("mean_tokens", "mean response tokens"),
    )
    rounds = [row["round"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [_nan(row["test"][key]) for row in rows]
        top = 1.02 if key == "accuracy" else 1.15 * max([v for v in values if v == v] or [1.0])
        ax.plot(rounds, values, marker="o")
        ax.set(xlabel="round", ylabel=label, xticks=rounds, ylim=(-0.02 * top, top))
        ax.grid(alpha=0.3)
    fig.suptitle("skip-steps on the test split (plain prompt, greedy)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
