"""The run steps the ``k15 long2short`` data methods share (``system1``, ``c3ot``): sample
(or read ``--from-samples``), build SFT data, train with ``train_sft``, save a plain HF
directory, evaluate base vs trained on the test split and write ``report.json`` — each step
skipped when its output exists with the same settings and nothing it depends on reran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rllib_k15.long2short.selection import ProblemSamples
from rllib_k15.long2short.step_records import StepCache, jsonable, write_json

__all__ = ["MethodError", "MethodRun", "MethodSettings", "StepCache", "pct"]


STEPS_FILE = "k15_steps.json"
SAMPLES_FILE = "samples.parquet"
REPORT_FILE = "report.json"


class MethodError(ValueError):
    """Bad input, or nothing to train on; the command prints it and exits 2."""


@dataclass(frozen=True)
class MethodSettings:
    """What every method run reads (the shared flags of ``k15 long2short system1|c3ot``).

    ``env``/``env_kwargs`` are used when sampling; with ``from_samples`` (a samples parquet,
    :mod:`rllib_k15.long2short.data`) the env is the one named in its metadata. ``sft``:
    an :class:`~rllib_k15.long2short.sft.SFTConfig` (None: its defaults). ``eval_problems``
    0 skips the built-in evaluation on the env's ``test`` split."""

    model: str
    out: Path
    env: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    from_samples: str | None = None
    samples: int = 8
    temperature: float = 1.0
    max_tokens: int = 512
    num_problems: int | None = None
    start: int = 0
    engine: str = "vllm"
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    problems_per_call: int = 16
    sft: Any = None
    save_dtype: str = "auto"
    eval_problems: int = 32
    eval_samples: int = 2
    eval_max_tokens: int | None = None
    progress: bool = True


class MethodRun:
    """One method run on ``<out>``: samples -> data -> eval -> SFT -> eval -> report, each
    step resumable (:class:`StepCache`). Holds at most one engine at a time (a vLLM engine
    on a GPU leaves no room for a second) and the envs; use it as a context manager."""

    def __init__(self, s: MethodSettings, method: str, log: Callable = print) -> None:
        from rllib_k15.long2short.sft import SFTConfig

        self.s, self.method, self.log, self.out = s, method, log, Path(s.out)
        self.sft_config = s.sft or SFTConfig()
        self.steps = StepCache(self.out / STEPS_FILE)
        self.info: dict[str, Any] = {}
        self.sampling: dict[str, Any] = {}
        self._engine: tuple[str, Any] | None = None
        self._env: Any = None
        self._eval: tuple[Any, dict[str, Any]] | None = None
        self._tok: Any = None
        self._rows: list[dict[str, Any]] = []

    def __enter__(self) -> MethodRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_engine()
        for env in (self._env, self._eval[0] if self._eval else None):
            if env is not None:
                env.close()

    # -- resources --------------------------------------------------------------------
    def engine(self, model: str | Path) -> Any:
        """The engine on ``model`` (any other one is closed first)."""
        if self._engine is not None and self._engine[0] == str(model):
            return self._engine[1]
        self.close_engine()
        from rllib_k15.engine import make_engine

        s = self.s
        kwargs: dict[str, Any] = {"seed": s.seed, "dtype": s.dtype}
        if s.engine == "vllm":  # room for a prompt that carries a long CoT (c3ot's model)
            kwargs["max_model_len"] = s.max_model_len or 2 * s.max_tokens + 1024
        try:
            self._engine = (str(model), make_engine(s.engine, model, **kwargs))
        except ImportError as err:
            raise MethodError(f"--engine {s.engine}: cannot start it: {err} (try --engine hf, "
                              "or install the cpu/gpu extra)") from err  # fmt: skip
        return self._engine[1]

    def close_engine(self) -> None:
        if self._engine is not None:
            self._engine[1].close()
            self._engine = None

    def env(self) -> Any:
        """The (unwrapped) env the samples came from."""
        if self._env is None:
            from rllib_k15.env_factory import make_unwrapped_env

            self._env = make_unwrapped_env(self.info["env"], self.info["env_kwargs"])
        return self._env

    def eval_env(self) -> tuple[Any, dict[str, Any]]:
        """The held-out env: the samples' env kwargs with ``split: test`` (and ``size``)."""
        if self._eval is None:
            from rllib_k15.algorithm.default_splits import eval_split_kwargs
            from rllib_k15.env_factory import make_unwrapped_env

            env_id = self.info["env"]
            base = {k: v for k, v in self.info["env_kwargs"].items() if k not in ("split", "size")}
            kwargs, notes = eval_split_kwargs(env_id, base, "test", self.s.eval_problems)
            for note in notes:
                self.log(f"note: {note}")
            self._eval = (make_unwrapped_env(env_id, kwargs), kwargs)
        return self._eval

    def tokenizer(self) -> Any:
        if self._tok is None:
            from rllib_k15.models import load_tokenizer

            self._tok = load_tokenizer(self.s.model)
        return self._tok

    # -- steps ------------------------------------------------------------------------
    def groups(self) -> tuple[list[ProblemSamples], dict[str, Any]]:
        """The graded samples: read from ``--from-samples``, or sampled (cached)."""
        from rllib_k15.long2short.data import read_parquet_info, read_samples_parquet

        s = self.s
        if s.from_samples:
            path = Path(s.from_samples)
            groups = read_samples_parquet(path)  # names the file and any missing column
            self.info = read_parquet_info(path)
            if not self.info.get("env"):
                raise MethodError(f"--from-samples {path}: its metadata names no env")
            self.info.setdefault("env_kwargs", {})
            stat = path.stat()
            from rllib_k15.runs.run_files import portable_path

            self.sampling = {"from_samples": portable_path(path.resolve()),
                             "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}  # fmt: skip
        else:
            groups = self._sample()
        if not groups:
            raise MethodError(f"{s.from_samples or 'sampling'} gave no problems")
        return groups, self.info

    def _sample(self) -> list[ProblemSamples]:
        from rllib_k15.long2short.collect import problem_indices, sample_groups
        from rllib_k15.long2short.data import read_samples_parquet, write_samples_parquet

        s, path = self.s, self.out / SAMPLES_FILE
        self.info = self.sampling = jsonable({
            "model": s.model, "env": s.env, "env_kwargs": s.env_kwargs,
            "samples_per_problem": s.samples, "temperature": s.temperature,
            "max_tokens": s.max_tokens, "engine": s.engine, "dtype": s.dtype, "seed": s.seed,
            "first_problem": s.start, "num_problems": s.num_problems,
        })  # fmt: skip
        if self.steps.reuse("samples", self.sampling, [path]):
            self.log(f"sampling: skipped, {path} exists")
            return read_samples_parquet(path)
        self.steps.start("samples")
        indices = problem_indices(len(self.env()), s.num_problems, s.start)
        groups = list(sample_groups(
            self.engine(s.model), self.env(), indices, s.samples, s.temperature, s.max_tokens,
            s.problems_per_call, progress=s.progress,
        ))  # fmt: skip
        write_samples_parquet(groups, path, self.sampling)
        self.steps.done("samples", self.sampling)
        self.log(f"sampling: {sum(len(g.samples) for g in groups)} responses -> {path}")
        return groups

    def problems(self, groups: Sequence[ProblemSamples]) -> list[Any]:
        """The env's ``Problem`` of each group (by id), for the verifier."""
        env, wanted, found = self.env(), {g.problem_id for g in groups}, {}
        for i in range(len(env)):
            if len(found) == len(wanted):
                break
            problem = env.problem(i)
            if problem.id in wanted:
                found[problem.id] = problem
        missing = [g.problem_id for g in groups if g.problem_id not in found]
        if missing:
            raise MethodError(
                f"{self.s.from_samples or 'the samples'}: problem_id {missing[0]!r} "
                f"({len(missing)} missing in all) is not a problem of {self.info['env']} "
                f"{self.info['env_kwargs']}"
            )
        return [found[g.problem_id] for g in groups]

    def data(
        self, build: Callable[[], tuple[list[Any], dict]], settings: dict
    ) -> tuple[list, dict]:
        """``build() -> (SFT examples, stats)`` cached in ``<out>/<method>_data.parquet``."""
        from rllib_k15.long2short.data import read_parquet_info, read_sft_parquet, write_sft_parquet

        path, settings = (
            self.out / f"{self.method}_data.parquet",
            {"samples": self.sampling, **settings},
        )
        if self.steps.reuse("data", settings, [path], after=("samples",)):
            self.log(f"data: skipped, {path} exists")
            return read_sft_parquet(path), read_parquet_info(path)["stats"]
        self.steps.start("data")
        examples, stats = build()
        stats = jsonable(stats)
        if examples:
            write_sft_parquet(examples, path, jsonable({"settings": settings, "stats": stats}))
            self.steps.done("data", settings)
            self.log(f"data: {len(examples)} SFT examples -> {path}")
        return examples, stats

    def train(
        self, examples: Sequence[Any], settings: dict, finish: Callable | None = None
    ) -> dict:
        """SFT of ``--model`` on ``examples`` saved as a HF directory in ``<out>``;
        ``finish(tokenizer)`` edits the tokenizer before it is saved (c3ot's template)."""
        import torch

        from rllib_k15.long2short.sft import evaluate_sft_loss, train_sft
        from rllib_k15.long2short.training import (
            JsonlLog,
            checkpoint_dtype,
            load_for_training,
            save_hf_model,
        )  # fmt: skip

        s, marker = self.s, self.out / f"k15_{self.method}.json"
        sft = {
            k: v for k, v in asdict(self.sft_config).items() if k not in ("progress", "log_every")
        }
        settings = {"base_model": s.model, "sft": sft, "save_dtype": s.save_dtype, **settings}
        if self.steps.reuse("model", settings, [marker, self.out / "config.json"], ("data",)):
            self.log(f"sft: skipped, {self.out} holds the trained model")
            return json.loads(marker.read_text())
        self.close_engine()  # the trainer's memory
        self.steps.start("model")
        torch.manual_seed(s.seed)
        model, tok, path = load_for_training(s.model)
        before = evaluate_sft_loss(model, tok, examples, self.sft_config)
        metrics = train_sft(
            model, tok, examples, self.sft_config, JsonlLog(self.out / "metrics.jsonl")
        )
        after = evaluate_sft_loss(model, tok, examples, self.sft_config)
        dtype = checkpoint_dtype(path) if s.save_dtype == "auto" else s.save_dtype
        if finish is not None:
            finish(tok)
        save_hf_model(model, tok, self.out, dtype=dtype)
        info = jsonable({"settings": settings, "saved_dtype": dtype, "metrics": metrics,
                         "loss_before": before, "loss_after": after})  # fmt: skip
        write_json(marker, info)
        self.steps.done("model", settings)
        self.log(f"sft: {len(examples)} examples, response NLL {before:.4f} -> {after:.4f}, "
                 f"saved ({dtype}) -> {self.out}")  # fmt: skip
        return info

    def evaluate(self, label: str, model: str | Path, after=()) -> dict[str, Any] | None:
        """Pass@1 and tokens of ``model`` on the test split (cached ``<out>/eval_<label>.json``)."""
        from rllib_k15.evaluation.evaluate import evaluate, make_row

        s = self.s
        if s.eval_problems < 1:
            return None
        env, kwargs = self.eval_env()
        path, name, max_tokens = (
            self.out / f"eval_{label}.json",
            f"eval_{label}",
            s.eval_max_tokens or s.max_tokens,
        )
        settings = {"model": str(model), "env": self.info["env"], "env_kwargs": kwargs,
                    "problems": s.eval_problems, "samples": s.eval_samples, "seed": s.seed,
                    "max_tokens": max_tokens, "engine": s.engine, "dtype": s.dtype}  # fmt: skip
        if self.steps.reuse(name, settings, [path], after):
            row = json.loads(path.read_text())["row"]
            self.log(f"eval {label}: skipped, {path} exists")
        else:
            self.steps.start(name)
            result = evaluate(
                self.engine(model), env, num_problems=s.eval_problems, samples=s.eval_samples,
                max_tokens=max_tokens, temperature=1.0, seed=s.seed,
                batch_problems=s.problems_per_call, progress=s.progress,
            )  # fmt: skip
            row = jsonable(make_row(
                result, label=label, run=0, seed=s.seed, model=str(model), engine=s.engine,
                env=self.info["env"], env_kwargs=kwargs, max_tokens=max_tokens,
                temperature=1.0, top_p=1.0,
            ))  # fmt: skip
            write_json(path, {"settings": settings, "row": row})
            self.steps.done(name, settings)
        self._rows.append(row)
        self.log(f"eval {label}: Pass@1 {pct(row['pass_at_1'])}, "
                 f"{row['mean_tokens']:.1f} tokens/response")  # fmt: skip
        keys = ("num_problems", "samples", "pass_at_1", "pass_at_1_low", "pass_at_1_high",
                "mean_tokens", "p50_tokens", "p90_tokens", "truncated_fraction")  # fmt: skip
        return {k: row.get(k) for k in keys}

    def write_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """``<out>/report.json`` (plus ``eval.jsonl``/``.csv`` of this call's evaluations,
        for ``k15 plot token-efficiency``), kept as it is when no step ran; returns it."""
        from rllib_k15.evaluation.evaluate import append_results

        path = self.out / REPORT_FILE
        if not self.steps.ran and path.exists():
            self.log(f"report: skipped, {path} exists")
            return json.loads(path.read_text())
        report = jsonable({"model": self.s.model, "env": self.info.get("env"),
                           "env_kwargs": self.info.get("env_kwargs"), "samples": self.sampling,
                           "out": str(self.out), **report})  # fmt: skip
        write_json(path, report)
        if self._rows:
            for suffix in (".jsonl", ".csv"):
                (self.out / f"eval{suffix}").unlink(missing_ok=True)
            append_results(self.out / "eval.jsonl", self._rows)
        self.log(f"report -> {path}")
        return report


def pct(value: float | None) -> str:
    """``0.125`` -> ``"12.5%"``; None -> ``"n/a"``."""
    return "n/a" if value is None else f"{100 * value:.1f}%"
