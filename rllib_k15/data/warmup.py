"""The long-CoT SFT warm-up (the Kimi k1.5 report, §2.3, "Long-CoT supervised fine-tuning").

Before RL, the report fine-tunes the model on a small set of long chains of thought that
plan, evaluate, reflect and explore, made by prompt engineering and verified.
Here, on a ``k15_envs`` env:

1. **Sample with a reasoning template** (:data:`REASONING_TEMPLATE`): the env prompt is
   wrapped in a template asking for a plan, step-by-step work, a check of the result,
   reflection on errors and another approach when unsure, then the final answer in the
   env's format. ``n`` responses per problem at T = 1 -> ``warmup_samples.parquet``.
2. **Rejection sampling** (:func:`select_longest_correct`): keep responses the env's
   verifier grades correct and that were not cut by the token limit; per problem keep up
   to ``keep_per_problem``, the **longest** first (the warm-up wants long, structured
   chains; the shortest would teach the opposite, which is long2short's job, §2.4).
   Each kept response is paired with the **plain** env prompt (no template), so the model
   learns to reason at length without being asked -> ``warmup_sft.parquet`` (the schema
   ``k15 sft`` reads, :mod:`rllib_k15.long2short.data`).
3. **SFT** with :func:`rllib_k15.long2short.sft.train_sft` -> ``model/`` (a HF directory).
4. **Report**: base and warmed model on held-out problems, plain prompts: Pass@1, response
   tokens (:func:`rllib_k15.evaluation.evaluate.evaluate`) and structure markers per
   response (``warmup_report.STRUCTURE_MARKERS``) -> ``warmup_report.json`` and ``.md``.

Every step writes its output atomically and is skipped when it exists (resumable,
:mod:`rllib_k15.data.warmup_steps`); an output made with other settings is an error, not
silently reused. Markers and report: :mod:`rllib_k15.data.warmup_report`.

Where this differs from the report: its warm-up set is a small, high-quality set of
accurately verified long-CoT paths made by prompt engineering, for text and images; here it
is one template, the model being warmed up as the generator and the env's verifier as the
filter — the recipe's shape at small scale.

CLI: ``k15 warmup`` (:mod:`rllib_k15.commands.warmup`). Torch-free at import: the trainer
is imported inside :func:`train_warmup_model`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rllib_k15.engine.base import SamplingParams
from rllib_k15.long2short.data import SAMPLES_SCHEMA

if TYPE_CHECKING:
    from rllib_k15.long2short.selection import SFTExample

__all__ = [
    "EVAL_FILES",
    "MODEL_DIR",
    "PLACEHOLDER",
    "REASONING_TEMPLATE",
    "REPORT_JSON",
    "REPORT_MD",
    "SAMPLES_FILE",
    "SFT_FILE",
    "SFT_INFO",
    "TEMPLATES",
    "NothingKeptError",
    "SelectionSummary",
    "WarmupError",
    "WarmupSample",
    "WarmupSettings",
    "load_template",
    "read_samples",
    "render_template",
    "run_warmup",
    "sample_with_template",
    "select_longest_correct",
    "train_warmup_model",
    "write_samples",
]

PLACEHOLDER = "{problem}"

REASONING_TEMPLATE = """\
Solve the problem below. Think it through carefully and at length before you answer:
1. Plan: first restate what is asked and plan how you will solve it.
2. Solve it step by step, showing every intermediate result.
3. Check: verify the result, for example by recomputing it another way.
4. Reflect: if you find a mistake or are unsure, say "Wait," explain what went wrong and \
try another approach ("Alternatively, ...").
5. Only then give the final answer, in exactly the format the problem asks for.

Problem:
{problem}"""
"""The default sampling template: planning, step-by-step work, evaluation, reflection and
exploration (the report's §2.3 list), then the env's own answer format."""

TEMPLATES: dict[str, str] = {"reasoning": REASONING_TEMPLATE}

SAMPLES_FILE = "warmup_samples.parquet"
"""Step 1: every templated response (:func:`write_samples`)."""
SFT_FILE = "warmup_sft.parquet"
"""Step 2: the kept responses with the plain prompts (the ``k15 sft`` schema)."""
MODEL_DIR = "model"
"""Step 3: the warmed model, a HF directory."""
SFT_INFO = "k15_warmup_sft.json"
"""In :data:`MODEL_DIR`: the SFT settings and metrics."""
EVAL_FILES = {"base": "eval_base.json", "warmed": "eval_warmed.json"}
REPORT_JSON, REPORT_MD = "warmup_report.json", "warmup_report.md"


class WarmupError(ValueError):
    """Bad input or an output of ``--out`` made with other settings."""


class NothingKeptError(WarmupError):
    """Rejection sampling kept no response: there is nothing to fine-tune on."""


# --------------------------------------------------------------------------- templates


def render_template(template: str, problem: str) -> str:
    """``template`` with every ``{problem}`` replaced by the env prompt (other braces, e.g.
    ``\\boxed{}``, stay as written: no ``str.format``)."""
    if PLACEHOLDER not in template:
        raise WarmupError(f"the template has no {PLACEHOLDER} placeholder")
    return template.replace(PLACEHOLDER, problem)


def load_template(name_or_file: str) -> str:
    """A built-in template (:data:`TEMPLATES`) by name, else the text of that file; a missing
    file or a text without ``{problem}`` is a :class:`WarmupError` naming it."""
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise WarmupError(
            f"--template {name_or_file!r} is neither a built-in template "
            f"({', '.join(TEMPLATES)}) nor a file"
        )
    text = path.read_text(encoding="utf-8")
    if PLACEHOLDER not in text:
        raise WarmupError(f"--template file {path} has no {PLACEHOLDER} placeholder")
    return text


# --------------------------------------------------------------------------- samples


@dataclasses.dataclass(frozen=True)
class WarmupSample:
    """One templated response: the plain env ``prompt``, the verdict and the truncation."""

    problem_id: str
    prompt: str
    sample_index: int
    response: str
    token_length: int
    correct: bool
    truncated: bool
    reason: str


# the long2short raw-samples schema plus the two fields the selection rule needs
_SAMPLES_SCHEMA = pa.schema(
    [*SAMPLES_SCHEMA, pa.field("truncated", pa.bool_()), pa.field("reason", pa.string())]
)
_META_KEY = b"k15.warmup"


def write_samples(records: Sequence[WarmupSample], path: Path, info: dict[str, Any]) -> None:
    """Write ``records`` and the JSON ``info`` (settings) to ``path`` atomically."""
    meta = {_META_KEY: json.dumps(info, sort_keys=True).encode()}
    table = pa.Table.from_pylist(
        [dataclasses.asdict(r) for r in records], schema=_SAMPLES_SCHEMA.with_metadata(meta)
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_samples(path: Path) -> tuple[list[WarmupSample], dict[str, Any]]:
    """Records and settings written by :func:`write_samples`."""
    table = pq.read_table(path)
    missing = sorted(set(_SAMPLES_SCHEMA.names) - set(table.column_names))
    if missing:
        raise WarmupError(f"{path} is not a warm-up samples file: missing column(s) {missing}")
    info = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return [WarmupSample(**r) for r in table.select(_SAMPLES_SCHEMA.names).to_pylist()], info


def sample_with_template(
    engine: Any,
    env: Any,
    indices: Sequence[int],
    template: str,
    params: SamplingParams,
    *,
    batch_problems: int = 32,
    progress: bool = True,
) -> list[WarmupSample]:
    """``params.n`` responses per problem to the templated prompt, graded by
    ``env.verify_batch`` (a response cut at ``max_tokens`` is passed as truncated)."""
    records: list[WarmupSample] = []
    bar = tqdm(total=len(indices), desc="warmup sampling", unit="problem", disable=not progress)
    for start in range(0, len(indices), batch_problems):
        problems = [env.problem(int(i)) for i in indices[start : start + batch_problems]]
        groups = engine.generate_text([render_template(template, p.prompt) for p in problems],
                                      params)  # fmt: skip
        flat = [(p, j, c) for p, g in zip(problems, groups, strict=True) for j, c in enumerate(g)]
        cut = [c.finish_reason == "length" for _, _, c in flat]
        verdicts = env.verify_batch([p for p, _, _ in flat], [c.text for *_, c in flat], cut)
        for (p, j, c), v, t in zip(flat, verdicts, cut, strict=True):
            records.append(WarmupSample(str(p.id), p.prompt, j, c.text, len(c.token_ids),
                                        bool(v.correct), t, str(v.reason)))  # fmt: skip
        bar.update(len(problems))
    bar.close()
    return records


# --------------------------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True)
class SelectionSummary:
    """What rejection sampling saw and kept (acceptance = accepted / sampled)."""

    num_problems: int
    num_sampled: int
    num_correct: int
    num_truncated: int
    num_accepted: int
    num_kept: int
    num_problems_kept: int

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_sampled if self.num_sampled else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "acceptance_rate": self.acceptance_rate}


def _distinct_texts(records: Sequence[WarmupSample]) -> list[WarmupSample]:
    """``records`` without repeats of an earlier response text (order kept)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.response not in seen:
            seen.add(r.response)
            out.append(r)
    return out


def select_longest_correct(
    records: Iterable[WarmupSample], keep_per_problem: int
) -> tuple[list[SFTExample], SelectionSummary]:
    """Per problem (first-seen order): accepted = correct and not truncated; sorted by
    token length, longest first (ties: earliest sample); exact duplicate texts dropped;
    the first ``keep_per_problem`` become SFT examples (plain prompt, templated response)."""
    from rllib_k15.long2short.selection import SFTExample

    if keep_per_problem < 1:
        raise WarmupError(f"--keep-per-problem ({keep_per_problem}) must be >= 1")
    groups: dict[str, list[WarmupSample]] = {}
    for r in records:
        groups.setdefault(r.problem_id, []).append(r)
    examples: list[SFTExample] = []
    accepted_total = problems_kept = 0
    for group in groups.values():
        accepted = sorted((r for r in group if r.correct and not r.truncated),
                          key=lambda r: (-r.token_length, r.sample_index))  # fmt: skip
        accepted_total += len(accepted)
        unique = _distinct_texts(accepted)
        for r in unique[:keep_per_problem]:
            examples.append(SFTExample(r.problem_id, r.prompt, r.response, r.token_length,
                                       len(group), len(accepted)))  # fmt: skip
        problems_kept += bool(unique)
    all_records = [r for g in groups.values() for r in g]
    return examples, SelectionSummary(
        num_problems=len(groups),
        num_sampled=len(all_records),
        num_correct=sum(r.correct for r in all_records),
        num_truncated=sum(r.truncated for r in all_records),
        num_accepted=accepted_total,
        num_kept=len(examples),
        num_problems_kept=problems_kept,
    )


# --------------------------------------------------------------------------- SFT


def train_warmup_model(
    model: str,
    examples: Sequence[Any],
    out: Path,
    sft: dict[str, Any],
    save_dtype: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    """SFT ``model`` (fp32 master weights) on ``examples`` with ``SFTConfig(**sft)`` and save
    a HF directory at ``out`` (``save_dtype`` "auto" = the base's) with its per-step
    ``metrics.jsonl`` and :data:`SFT_INFO` (``info`` + metrics): built in a temp sibling
    that replaces ``out`` (a stale one is removed) once complete. Returns the metrics."""
    import torch

    from rllib_k15.long2short.sft import SFTConfig, train_sft
    from rllib_k15.long2short.training import (
        JsonlLog,
        checkpoint_dtype,
        load_for_training,
        save_hf_model,
    )

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(int(sft.get("seed", 0)))
    net, tokenizer, path = load_for_training(model)
    log = JsonlLog(tmp / "metrics.jsonl")
    metrics = train_sft(net, tokenizer, examples, SFTConfig(**sft), on_step=log)
    dtype = checkpoint_dtype(path) if save_dtype == "auto" else save_dtype
    save_hf_model(net, tokenizer, tmp, dtype=dtype)
    summary = {**info, "saved_dtype": dtype, "metrics": metrics}
    (tmp / SFT_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return metrics


# --------------------------------------------------------------------------- orchestration


@dataclasses.dataclass(frozen=True)
class WarmupSettings:
    """Everything :func:`run_warmup` does; ``k15 warmup`` maps its flags 1:1 onto it."""

    model: str
    env: str
    out: Path
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_env_kwargs: dict[str, Any] | None = None
    """None: ``env_kwargs`` with ``split: "test"`` (held-out problems of the same env)."""
    template: str = REASONING_TEMPLATE
    problems: int | None = None
    """Sample the first N problems; None: all of them."""
    samples: int = 8
    max_tokens: int = 256
    keep_per_problem: int = 2
    sft: dict[str, Any] = dataclasses.field(default_factory=lambda: {"epochs": 2, "lr": 1e-5})
    """Keyword arguments of :class:`rllib_k15.long2short.sft.SFTConfig`."""
    save_dtype: str = "auto"
    engine: str = "vllm"
    dtype: str = "auto"
    eval_problems: int = 64
    eval_samples: int = 4
    eval_max_tokens: int | None = None
    """None: ``max_tokens``."""
    seed: int = 0
    batch_problems: int = 32
    progress: bool = True

    def eval_kwargs(self) -> dict[str, Any]:
        """The held-out env's kwargs."""
        if self.eval_env_kwargs is not None:
            return dict(self.eval_env_kwargs)
        return {**self.env_kwargs, "split": "test"}


def run_warmup(
    s: WarmupSettings,
    make_engine: Callable[[str], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run or resume the warm-up into ``s.out`` and return the report.

    ``make_engine(model) -> RolloutEngine`` (default: ``--engine`` on that model,
    :func:`rllib_k15.data.warmup_steps.default_engine_factory`). The base engine serves
    sampling and the base eval and is closed before SFT, so sampler and trainer never hold
    memory together. The steps and when they are reused: :mod:`rllib_k15.data.warmup_steps`.
    Raises :class:`NothingKeptError` after step 2 when rejection sampling kept nothing.
    """
    from rllib_k15.data.warmup_steps import WarmupSteps, default_engine_factory

    Path(s.out).mkdir(parents=True, exist_ok=True)
    steps = WarmupSteps(s, make_engine or default_engine_factory(s), log)  # opens the eval env
    try:
        try:
            records = steps.sample()
            examples, summary = steps.select(records)
            evals = {"base": steps.evaluate("base")}
        finally:
            steps.base.close()
        sft = steps.train(examples)
        try:
            evals["warmed"] = steps.evaluate("warmed")
        finally:
            steps.warmed.close()
    finally:
        steps.eval_env.close()
    parts = {"records": records, "examples": examples, "summary": summary, "sft": sft}
    return steps.report({**parts, "evals": evals})
