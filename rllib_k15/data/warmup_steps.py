"""The steps of :func:`rllib_k15.data.warmup.run_warmup` on one output directory.

Each step of the long-CoT warm-up is a method of :class:`WarmupSteps` that either computes
its output or reuses the one in ``--out``. An output is reused when it exists, was made with
the same settings (stored beside it: parquet schema metadata, JSON) and no step it depends on
ran in this call; otherwise it is recomputed and replaces the old one. The chain is
samples -> SFT data -> model -> warmed eval -> report; the base eval depends only on the
base model and the eval settings. Outputs made with other settings are refused with a
:class:`~rllib_k15.data.warmup.WarmupError` naming the file and the differing settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rllib_k15.data.warmup import (
    EVAL_FILES,
    MODEL_DIR,
    REPORT_JSON,
    REPORT_MD,
    SAMPLES_FILE,
    SFT_FILE,
    SFT_INFO,
    NothingKeptError,
    SelectionSummary,
    WarmupError,
    WarmupSample,
    WarmupSettings,
    read_samples,
    sample_with_template,
    select_longest_correct,
    train_warmup_model,
    write_samples,
)
from rllib_k15.data.warmup_report import build_report, evaluate_with_structure, render_report_md
from rllib_k15.engine.base import SamplingParams
from rllib_k15.metric_names import SFT_STEPS
from rllib_k15.runs.integrity import write_durably

__all__ = ["WarmupSteps", "default_engine_factory", "open_eval_env"]


class _Lazy:
    """A resource (engine, env) built on first :meth:`get`; :meth:`close` closes it if built."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build, self.value = build, None

    def get(self) -> Any:
        if self.value is None:
            self.value = self.build()
        return self.value

    def close(self) -> None:
        if self.value is not None:
            value, self.value = self.value, None
            value.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _require_same(stored: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A reused output must come from the same settings, else a :class:`WarmupError`."""
    current = _jsonable(current)
    keys = sorted(set(stored) | set(current))
    diff = [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in keys
            if stored.get(k) != current.get(k)]  # fmt: skip
    if diff:
        raise WarmupError(
            f"{path} was made with other settings ({'; '.join(diff)}); delete it and the "
            "later outputs, or use another --out"
        )


def _make_env(env_id: str, kwargs: dict[str, Any], flag: str) -> Any:
    from rllib_k15.env_factory import make_unwrapped_env

    try:
        return make_unwrapped_env(env_id, kwargs)
    except (TypeError, ValueError) as err:
        raise WarmupError(f"{flag}: env {env_id!r} cannot be made with {kwargs}: {err}") from err


def open_eval_env(s: WarmupSettings) -> tuple[Any, dict[str, Any]]:
    """The held-out env and the kwargs it was made with. Kwargs without a ``size`` get
    ``size: eval_problems`` added when the env's split is smaller than its default size (a
    ``k15_envs.splits.SplitError``: Arithmetic level 2 has 816 test problems, its default
    size is 1000); only ``eval_problems`` of them are evaluated anyway."""
    from k15_envs.splits import SplitError

    kwargs = s.eval_kwargs()
    try:
        return _make_env(s.env, kwargs, "--eval-env-kwargs"), kwargs
    except WarmupError as err:
        if "size" in kwargs or not isinstance(err.__cause__, SplitError):
            raise
    kwargs = {**kwargs, "size": s.eval_problems}
    return _make_env(s.env, kwargs, "--eval-env-kwargs"), kwargs


def default_engine_factory(s: WarmupSettings) -> Callable[[str], Any]:
    """``model -> engine``: ``make_engine(s.engine, model)`` seeded with ``s.seed``."""
    from rllib_k15.engine import make_engine

    kwargs: dict[str, Any] = {"seed": s.seed, "dtype": s.dtype}
    if s.engine == "vllm":  # headroom for the prompt, template included
        kwargs["max_model_len"] = max(s.max_tokens, s.eval_max_tokens or 0) + 1024
    return lambda model: make_engine(s.engine, model, **kwargs)


class WarmupSteps:
    """The four steps on one ``--out``. A step reuses its output when it exists, was made
    with the same settings and no step it depends on ran in this call (``ran``: samples ->
    SFT data -> model -> warmed eval; the base eval depends on none); ``fresh``: anything
    ran, so the report is rebuilt."""

    def __init__(self, s: WarmupSettings, build: Callable[[str], Any], log: Callable) -> None:
        self.s, self.out, self.log = s, Path(s.out), log
        self.ran = self.fresh = False
        self.base = _Lazy(lambda: build(s.model))
        self.warmed = _Lazy(lambda: build(str(self.out / MODEL_DIR)))
        self.sampling = _jsonable({
            "model": s.model, "env": s.env, "env_kwargs": s.env_kwargs, "seed": s.seed,
            "template": s.template, "problems": s.problems, "samples": s.samples,
            "max_tokens": s.max_tokens, "temperature": 1.0,
        })  # fmt: skip
        self.selecting = {**self.sampling, "keep_per_problem": s.keep_per_problem}
        self.training = _jsonable({"base_model": s.model, "data": self.selecting,
                                   "sft": s.sft, "save_dtype": s.save_dtype})  # fmt: skip
        self.eval_env, self.eval_env_kwargs = open_eval_env(s)  # first: fail before sampling
        self.evaluating = _jsonable({
            "env": s.env, "env_kwargs": self.eval_env_kwargs, "problems": s.eval_problems,
            "samples": s.eval_samples, "max_tokens": s.eval_max_tokens or s.max_tokens,
            "seed": s.seed,
        })  # fmt: skip

    def sample(self) -> list[WarmupSample]:
        """Step 1: templated sampling -> :data:`SAMPLES_FILE`."""
        path, s = self.out / SAMPLES_FILE, self.s
        if path.exists():
            records, info = read_samples(path)
            _require_same(info, self.sampling, path)
            self.log(f"[1/4] sampling: skipped, {path} exists")
            return records
        env = _make_env(s.env, s.env_kwargs, "--env-kwargs")
        try:
            n = len(env) if s.problems is None else min(s.problems, len(env))
            params = SamplingParams(n=s.samples, temperature=1.0, max_tokens=s.max_tokens)
            records = sample_with_template(
                self.base.get(), env, range(n), s.template, params,
                batch_problems=s.batch_problems, progress=s.progress,
            )  # fmt: skip
        finally:
            env.close()
        write_samples(records, path, self.sampling)
        self.ran = self.fresh = True
        self.log(f"[1/4] sampling: {len(records)} responses to {n} problems -> {path}")
        return records

    def select(self, records: Sequence[WarmupSample]) -> tuple[list[Any], SelectionSummary]:
        """Step 2: rejection sampling -> :data:`SFT_FILE`; :class:`NothingKeptError` if empty."""
        from rllib_k15.long2short.data import read_parquet_info, read_sft_parquet, write_sft_parquet

        path = self.out / SFT_FILE
        examples, summary = select_longest_correct(records, self.s.keep_per_problem)
        if path.exists() and not self.ran:
            _require_same(read_parquet_info(path).get("settings", {}), self.selecting, path)
            examples = read_sft_parquet(path)
            self.log(f"[2/4] rejection sampling: skipped, {path} exists")
        else:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            info = {"settings": self.selecting, "selection": summary.to_dict()}
            write_sft_parquet(examples, tmp, info)
            os.replace(tmp, path)
            self.ran = self.fresh = True
            self.log(
                f"[2/4] rejection sampling: kept {summary.num_kept} of {summary.num_sampled} "
                f"responses (acceptance rate {summary.acceptance_rate:.1%}) -> {path}"
            )
        if not examples:
            raise NothingKeptError(
                f"rejection sampling kept 0 of {summary.num_sampled} responses "
                f"({summary.num_correct} graded correct, {summary.num_truncated} cut at "
                f"--max-tokens {self.s.max_tokens}): nothing to fine-tune on, stopping before "
                "SFT. Try more --samples, a larger --max-tokens, an easier env or a stronger "
                "--model."
            )
        return examples, summary

    def train(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Step 3: SFT -> :data:`MODEL_DIR`; returns its :data:`SFT_INFO`."""
        model_dir = self.out / MODEL_DIR
        if model_dir.exists() and not self.ran:
            info = json.loads((model_dir / SFT_INFO).read_text())
            _require_same({k: info.get(k) for k in self.training}, self.training, model_dir)
            self.log(f"[3/4] SFT: skipped, {model_dir} exists")
            return info
        s = self.s
        sft = {**s.sft, "progress": s.progress}
        train_warmup_model(s.model, examples, model_dir, sft, s.save_dtype, self.training)
        self.ran = self.fresh = True
        info = json.loads((model_dir / SFT_INFO).read_text())
        self.log(f"[3/4] SFT: {info['metrics'][SFT_STEPS]} steps on {len(examples)} "
                 f"examples -> {model_dir}")  # fmt: skip
        return info

    def evaluate(self, which: str) -> dict[str, Any]:
        """Step 4a/b: the ``base`` or ``warmed`` model on held-out plain prompts (cached)."""
        path = self.out / EVAL_FILES[which]
        if path.exists() and (which == "base" or not self.ran):
            stored = json.loads(path.read_text())
            _require_same(stored["settings"], self.evaluating, path)
            self.log(f"[4/4] eval {which}: skipped, {path} exists")
            return stored
        engine = self.base if which == "base" else self.warmed
        result = evaluate_with_structure(
            engine.get(), self.eval_env, num_problems=self.s.eval_problems,
            samples=self.s.eval_samples, max_tokens=self.evaluating["max_tokens"],
            temperature=1.0, seed=self.s.seed, batch_problems=self.s.batch_problems,
            progress=self.s.progress,
        )  # fmt: skip
        stored = _jsonable({"settings": self.evaluating, **result})
        write_durably(path, json.dumps(stored, indent=2) + "\n")
        self.fresh = True
        r = result["result"]
        self.log(f"[4/4] eval {which}: Pass@1 {r['pass_at_1']:.3f}, {r['mean_tokens']:.1f} "
                 f"tokens/response -> {path}")  # fmt: skip
        return stored

    def report(self, parts: dict[str, Any]) -> dict[str, Any]:
        """Step 4c: :data:`REPORT_JSON` and :data:`REPORT_MD` (rebuilt if any step ran)."""
        json_path, md_path = self.out / REPORT_JSON, self.out / REPORT_MD
        if not self.fresh and json_path.exists() and md_path.exists():
            self.log(f"[4/4] report: skipped, {json_path} exists")
            return json.loads(json_path.read_text())
        s = self.s
        header = {"model": s.model, "env": s.env, "env_kwargs": s.env_kwargs,
                  "eval_env_kwargs": self.eval_env_kwargs, "template": s.template}  # fmt: skip
        sft = {"saved_dtype": parts["sft"].get("saved_dtype"), **parts["sft"]["metrics"]}
        report = _jsonable(build_report(
            header, parts["summary"].to_dict(),
            [(r.response, r.token_length) for r in parts["records"]],
            [(e.response, e.response_tokens) for e in parts["examples"]],
            sft, parts["evals"],
        ))  # fmt: skip
        write_durably(json_path, json.dumps(report, indent=2) + "\n")
        write_durably(md_path, render_report_md(report))
        self.log(f"[4/4] report -> {json_path} and {md_path}")
        return report
