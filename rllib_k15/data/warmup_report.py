"""The evidence of the long-CoT warm-up (:mod:`rllib_k15.data.warmup`): longer, more
structured responses, measured.

- **Structure markers** (:data:`STRUCTURE_MARKERS`): per response, the case-insensitive,
  non-overlapping matches of a short regex list for each of the four behaviours the Kimi
  k1.5 report's §2.3 asks of a long chain of thought — planning ("first", "let me", "step
  by step"), verification ("check", "verify"), reflection ("wait", "mistake",
  "actually") and exploration ("alternatively", "another approach"). A word count, not a
  judge: "let me check" counts once for planning and once for verification, and a marker
  used wrongly counts all the same. Reported as mean matches per response and as the share
  of responses with at least one.
- **Evaluation** (:func:`evaluate_with_structure`): :func:`rllib_k15.evaluation.evaluate.
  evaluate` (Pass@1 with its 95 % interval, token percentiles, truncation) through an engine
  that records the response texts, whose markers are then counted.
- **Report** (:func:`build_report`, :func:`render_report_md`): rejection-sampling counts,
  base vs warmed model and the difference, as JSON and Markdown.

Pure Python; the engine is whatever :class:`rllib_k15.engine.RolloutEngine` is passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from rllib_k15.engine.base import SamplingParams
from rllib_k15.evaluation.evaluate import evaluate
from rllib_k15.metric_names import SFT_EPOCH_LOSSES, SFT_NUM_EXAMPLES, SFT_STEPS

__all__ = [
    "STRUCTURE_MARKERS",
    "build_report",
    "evaluate_with_structure",
    "render_report_md",
    "structure_counts",
    "structure_summary",
]

STRUCTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "planning": (
        r"\bfirst(ly)?\b", r"\bplan\b", r"\bstep[ -]by[ -]step\b", r"\bstep \d+\b",
        r"\blet me\b", r"\bwe need to\b",
    ),
    "verification": (
        r"\bcheck(s|ed|ing)?\b", r"\bverif(y|ies|ied|ying)\b", r"\bconfirm(s|ed)?\b",
        r"\bsubstitut(e|ing)\b",
    ),
    "reflection": (
        r"\bwait\b", r"\bhmm+\b", r"\bmistake\b", r"\bactually\b", r"\breconsider\b",
        r"\bon second thought\b",
    ),
    "exploration": (
        r"\balternatively\b", r"\banother (way|approach|method)\b", r"\binstead\b",
        r"\btry (again|a different)\b",
    ),
}  # fmt: skip
"""Category -> regexes, counted case-insensitively (see the module docstring)."""

_COMPILED = {k: [re.compile(p, re.IGNORECASE) for p in v] for k, v in STRUCTURE_MARKERS.items()}
CATEGORIES = (*STRUCTURE_MARKERS, "total")


def structure_counts(text: str) -> dict[str, int]:
    """Matches of each :data:`STRUCTURE_MARKERS` category in ``text``, and their ``total``."""
    counts = {k: sum(len(p.findall(text)) for p in ps) for k, ps in _COMPILED.items()}
    return {**counts, "total": sum(counts.values())}


def structure_summary(texts: Sequence[str]) -> dict[str, dict[str, float]]:
    """``per_response``: mean matches per response; ``share``: the fraction of responses with
    at least one; both per category and ``total`` (zeros for no texts)."""
    rows = [structure_counts(t) for t in texts]
    n = max(len(rows), 1)
    return {
        "per_response": {k: sum(r[k] for r in rows) / n for k in CATEGORIES},
        "share": {k: sum(r[k] > 0 for r in rows) / n for k in CATEGORIES},
    }


class _RecordingEngine:
    """Delegates to ``engine`` and keeps the text of every completion ``generate`` returns."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompt_token_ids: Any, params: SamplingParams) -> Any:
        groups = self.engine.generate(prompt_token_ids, params)
        self.texts.extend(c.text for group in groups for c in group)
        return groups


def evaluate_with_structure(engine: Any, env: Any, **kwargs: Any) -> dict[str, Any]:
    """``evaluate(engine, env, **kwargs)`` (plain env prompts) as ``result``, the
    :func:`structure_summary` of its responses as ``structure``, the first three as
    ``examples``."""
    recorder = _RecordingEngine(engine)
    result = evaluate(recorder, env, **kwargs)
    return {
        "result": result.to_dict(),
        "structure": structure_summary(recorder.texts),
        "examples": recorder.texts[:3],
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def build_report(
    header: dict[str, Any],
    selection: dict[str, Any],
    sampled: Sequence[tuple[str, int]],
    kept: Sequence[tuple[str, int]],
    sft: dict[str, Any],
    evals: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The report: ``header`` (model, env, ...), the selection counts with the mean length
    and markers of the ``sampled`` and ``kept`` (text, tokens) responses, the SFT metrics,
    the ``evals`` (``base``, ``warmed``) and ``delta`` = warmed − base."""
    base, warm = evals["base"], evals["warmed"]
    markers = {
        k: warm["structure"]["per_response"][k] - base["structure"]["per_response"][k]
        for k in CATEGORIES
    }
    return {
        **header,
        "selection": {
            **selection,
            "mean_tokens_sampled": _mean([n for _, n in sampled]),
            "mean_tokens_kept": _mean([n for _, n in kept]),
            "structure_sampled": structure_summary([t for t, _ in sampled]),
            "structure_kept": structure_summary([t for t, _ in kept]),
        },
        "sft": sft,
        "eval": evals,
        "delta": {
            "pass_at_1": warm["result"]["pass_at_1"] - base["result"]["pass_at_1"],
            "mean_tokens": warm["result"]["mean_tokens"] - base["result"]["mean_tokens"],
            "markers_per_response": markers,
        },
    }


def _selection_md(sel: dict[str, Any]) -> list[str]:
    per_sampled = sel["structure_sampled"]["per_response"]["total"]
    per_kept = sel["structure_kept"]["per_response"]["total"]
    return [
        "## Rejection sampling (templated prompts)",
        "",
        "| sampled | correct | truncated | accepted | acceptance rate | kept | problems kept |",
        "|---|---|---|---|---|---|---|",
        f"| {sel['num_sampled']} | {sel['num_correct']} | {sel['num_truncated']} | "
        f"{sel['num_accepted']} | {sel['acceptance_rate']:.1%} | {sel['num_kept']} | "
        f"{sel['num_problems_kept']} of {sel['num_problems']} |",
        "",
        f"Mean response tokens: {sel['mean_tokens_sampled']:.1f} sampled, "
        f"{sel['mean_tokens_kept']:.1f} kept. Markers per response: {per_sampled:.2f} "
        f"sampled, {per_kept:.2f} kept.",
        "",
    ]


def _eval_md(report: dict[str, Any]) -> list[str]:
    kwargs = json.dumps(report.get("eval_env_kwargs", {}))
    lines = [
        f"## Held-out evaluation (plain prompts, env kwargs `{kwargs}`)",
        "",
        "Structure columns: mean marker matches per response (`STRUCTURE_MARKERS`).",
        "",
        "| model | Pass@1 [95% CI] | mean tokens | p90 tokens | truncated | "
        + " | ".join(CATEGORIES)
        + " |",
        "|---" * (5 + len(CATEGORIES)) + "|",
    ]
    for name, ev in report["eval"].items():
        r, per = ev["result"], ev["structure"]["per_response"]
        interval = f"[{r['pass_at_1_low']:.3f}, {r['pass_at_1_high']:.3f}]"
        lines.append(
            f"| {name} | {r['pass_at_1']:.3f} {interval} | {r['mean_tokens']:.1f} | "
            f"{r['p90_tokens']:.0f} | {r['truncated_fraction']:.1%} | "
            + " | ".join(f"{per[k]:.2f}" for k in CATEGORIES)
            + " |"
        )
    d = report["delta"]
    markers = " | ".join(f"{d['markers_per_response'][k]:+.2f}" for k in CATEGORIES)
    lines += [
        f"| warmed − base | {d['pass_at_1']:+.3f} | {d['mean_tokens']:+.1f} | | | {markers} |",
        "",
    ]
    return lines


def render_report_md(report: dict[str, Any]) -> str:
    """The report as Markdown: selection table, base-vs-warmed table, SFT line, examples."""
    sft = report["sft"]
    lines = [f"# Long-CoT warm-up: {report['model']} on {report['env']}", ""]
    lines += _selection_md(report["selection"]) + _eval_md(report)
    losses = ", ".join(f"{v:.4f}" for v in sft.get(SFT_EPOCH_LOSSES, []))
    lines += [
        f"SFT: {sft.get(SFT_NUM_EXAMPLES)} examples, {sft.get(SFT_STEPS)} steps, "
        f"epoch losses [{losses}], saved as {sft.get('saved_dtype')}.",
        "",
    ]
    for name, ev in report["eval"].items():
        example = (ev["examples"] or [""])[0][:600]
        lines += [f"First {name} response:", "", "```text", example, "```", ""]
    return "\n".join(lines)
