"""Steps 4-6 of the RL prompt-set curation (the Kimi k1.5 report, §2.1): the format filter,
the easy-to-hack filter and model-based difficulty.

- **Format filter**: the report excludes multiple-choice, true/false and proof-based
  prompts, whose answers are easy to guess or hard to verify. Each rule is a named regex
  on the problem text or on its final answer (after GSM8K's ``####`` or in the last
  ``\\boxed{}``); :data:`DEFAULT_FORMAT_RULES` lists the defaults, a YAML file replaces them
  (:func:`load_format_rules`).
- **Easy-to-hack filter**: the model is asked for the answer with *no* reasoning
  (:data:`HACK_INSTRUCTION`, a few tokens) ``attempts`` times at temperature 1; a prompt
  answered correctly in any attempt is dropped (the report uses N = 8).
- **Difficulty**: pass rate over ``samples`` samples at temperature 1 with the env's normal
  instruction (:func:`rllib_k15.commands.difficulty.pass_rates`); difficulty = 1 − pass rate.

Grading is always the env's own verifier (``env.unwrapped.verify_batch``). The model steps
keep their per-row results in a :class:`~rllib_k15.data.curate_report.ResultCache` keyed
by the row's content hash and the step's settings, so a rerun after a kill samples only the
rows not finished yet.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rllib_k15.data.curate import CurateRow, Drop
from rllib_k15.data.curate_report import ResultCache

__all__ = [
    "DEFAULT_FORMAT_RULES",
    "HACK_INSTRUCTION",
    "FormatRule",
    "FormatRuleError",
    "Grader",
    "LazyEngine",
    "default_format_rules",
    "difficulty_pass_rates",
    "format_filter",
    "hack_filter",
    "hack_prompt",
    "load_format_rules",
]

HACK_INSTRUCTION = "Give only the final answer in \\boxed{}, with no reasoning."
FIELDS = ("problem", "answer")

# name -> (field, pattern, what it catches); patterns carry their own inline flags
DEFAULT_FORMAT_RULES: dict[str, tuple[str, str, str]] = {
    "option_list": (
        "problem",
        r"(?s)(?<![\w)])\(\s*A\s*\).*?(?<![\w)])\(\s*B\s*\)",
        "lettered options '(A) ... (B)' (not P(A) or f(A))",
    ),
    "option_lines": (
        "problem",
        r"(?m)^\s*A[.):]\s+\S.*\n\s*B[.):]\s+\S",
        "options on their own lines 'A. ...' / 'B) ...'",
    ),
    "true_or_false": ("problem", r"(?i)\btrue\s*(?:or|/)\s*false\b", "'true or false' questions"),
    "proof": (
        "problem",
        r"(?i)\b(?:prove|disprove)\b|\b(?:show|demonstrate)\s+that\b",
        "proofs: 'prove', 'show that'",
    ),
    "answer_letter": (
        "answer",
        r"^\s*(?:\\text(?:bf)?\{\s*)?\(?\s*[A-E]\s*\)?\s*\}?\s*$",
        "final answer is an option letter A-E",
    ),
    "answer_true_false_yes_no": (
        "answer",
        r"(?i)^\s*(?:\\text\{\s*)?(?:true|false|yes|no)\s*\}?\s*\.?\s*$",
        "final answer is true/false/yes/no",
    ),
}


class FormatRuleError(ValueError):
    """A format-rules file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class FormatRule:
    """A named regex; a row matches when ``pattern.search`` finds it in ``field``
    (``problem``: the problem text; ``answer``: the final answer, rows without one never
    match)."""

    name: str
    field: str
    pattern: re.Pattern[str]
    description: str = ""

    def matches(self, row: CurateRow) -> bool:
        """Whether the rule catches ``row``."""
        if self.field == "problem":
            return self.pattern.search(row.text) is not None
        if row.answer is None:
            return False
        from k15_envs.verifiers.math import gold_answer_text

        return self.pattern.search(gold_answer_text(row.answer)) is not None


def default_format_rules() -> list[FormatRule]:
    """:data:`DEFAULT_FORMAT_RULES` as rules, in order."""
    return [
        FormatRule(name, fld, re.compile(pattern), text)
        for name, (fld, pattern, text) in DEFAULT_FORMAT_RULES.items()
    ]


def load_format_rules(path: str | Path) -> list[FormatRule]:
    """Rules from a YAML file (read with OmegaConf) that *replaces* the defaults::

        multiple_choice: {pattern: '\\(A\\).*\\(B\\)', field: problem}
        numeric_answer_only: {pattern: '^[0-9]+$', field: answer, description: ...}

    ``field`` defaults to ``problem``. A bad file, rule, field or regex raises
    :class:`FormatRuleError` naming the file and the rule.
    """
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    except Exception as err:  # OmegaConf/YAML errors share no base class
        raise FormatRuleError(f"{path}: cannot read format rules: {err}") from None
    if not isinstance(data, dict) or not data:
        raise FormatRuleError(f"{path}: expected a mapping rule name -> {{pattern, field}}")
    return [_rule_from(path, str(name), spec) for name, spec in data.items()]


def _rule_from(path: str | Path, name: str, spec: Any) -> FormatRule:
    """One rule of a format-rules file, validated."""
    where = f"{path}: rule {name!r}"
    if not isinstance(spec, dict) or not isinstance(spec.get("pattern"), str):
        raise FormatRuleError(f"{where}: needs a 'pattern' string, got {spec!r}")
    unknown = set(spec) - {"pattern", "field", "description"}
    if unknown:
        raise FormatRuleError(f"{where}: unknown keys {sorted(unknown)}")
    fld = spec.get("field", "problem")
    if fld not in FIELDS:
        raise FormatRuleError(f"{where}: field {fld!r} must be one of {list(FIELDS)}")
    try:
        pattern = re.compile(spec["pattern"])
    except re.error as err:
        raise FormatRuleError(f"{where}: bad regex {spec['pattern']!r}: {err}") from None
    return FormatRule(name, fld, pattern, str(spec.get("description", "")))


def format_filter(
    rows: Sequence[CurateRow], rules: Sequence[FormatRule]
) -> tuple[list[CurateRow], list[Drop], dict[str, int]]:
    """Step 4: drop every row some rule matches. Returns ``(kept, drops, matched)``, where
    ``matched[rule]`` counts the rows the rule matched (a row may match several rules; its
    drop lists them all and its reason names the first)."""
    matched = {rule.name: 0 for rule in rules}
    kept, drops = [], []
    for row in rows:
        hits = [rule for rule in rules if rule.matches(row)]
        for rule in hits:
            matched[rule.name] += 1
        if hits:
            about = f" ({hits[0].description})" if hits[0].description else ""
            reason = f"format rule {hits[0].name!r}{about}"
            drops.append(Drop(row, reason, {"rules": [rule.name for rule in hits]}))
        else:
            kept.append(row)
    return kept, drops, matched


# ---------------------------------------------------------------------------- model steps


@dataclass(frozen=True)
class Grader:
    """Where a row is graded: ``env`` (a ``k15_envs.ReasoningEnv``) and its problem index."""

    env: Any
    index: int

    @property
    def problem(self) -> Any:
        return self.env.problem(self.index)


class LazyEngine:
    """An engine built on first use, so a fully cached rerun never loads the model."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory, self._engine = factory, None

    @property
    def built(self) -> bool:
        return self._engine is not None

    def _get(self) -> Any:
        if self._engine is None:
            self._engine = self._factory()
        return self._engine

    def encode_prompt(self, user_message: str) -> list[int]:
        return self._get().encode_prompt(user_message)

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params: Any) -> list[list[Any]]:
        return self._get().generate(prompt_token_ids, params)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


def step_key(row: CurateRow, settings: Mapping[str, Any]) -> str:
    """sha256 of the row's content hash and the step's settings: the cache key."""
    blob = json.dumps({"row": row.content_hash, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _cached_map(
    rows: Sequence[CurateRow],
    settings: Mapping[str, Any],
    compute: Callable[[list[int]], list[Any]],
    cache: ResultCache,
    *,
    batch_problems: int,
    desc: str,
    progress: bool,
) -> list[Any]:
    """``compute(positions)`` for the rows without a cached result, ``batch_problems`` at a
    time, each batch written to ``cache`` before the next; the value of every row, in order."""
    from tqdm.auto import tqdm

    keys = [step_key(row, settings) for row in rows]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    bar = tqdm(
        total=len(rows),
        initial=len(rows) - len(todo),
        desc=desc,
        unit="problem",
        disable=not progress,
    )
    with bar:
        for start in range(0, len(todo), batch_problems):
            batch = todo[start : start + batch_problems]
            cache.put_many(dict(zip([keys[i] for i in batch], compute(batch), strict=True)))
            bar.update(len(batch))
    return [cache.get(key) for key in keys]


def _by_env(graders: Sequence[Grader], positions: list[int]) -> list[tuple[Any, list[int]]]:
    """``positions`` grouped by their grader's env (first-seen order)."""
    groups: dict[int, tuple[Any, list[int]]] = {}
    for pos in positions:
        env = graders[pos].env
        groups.setdefault(id(env), (env, []))[1].append(pos)
    return list(groups.values())


def hack_prompt(text: str, instruction: str = HACK_INSTRUCTION) -> str:
    """The answer-only prompt: the problem text, then ``instruction``."""
    return f"{text.strip()}\n\n{instruction}"


def _correct_without_reasoning(
    engine: Any, rows, graders, positions: list[int], params: Any, instruction: str
) -> list[int]:
    """#correct of ``params.n`` answer-only attempts per row. A response cut by the token cap
    is still graded: an answer given inside the cap is an answer without reasoning."""
    prompts = [engine.encode_prompt(hack_prompt(rows[p].text, instruction)) for p in positions]
    groups = dict(zip(positions, engine.generate(prompts, params), strict=True))
    counts: dict[int, int] = {}
    for env, members in _by_env(graders, positions):
        flat = [(graders[p].problem, c.text) for p in members for c in groups[p]]
        verdicts = env.verify_batch([p for p, _ in flat], [t for _, t in flat])
        for j, pos in enumerate(members):
            counts[pos] = sum(bool(v.correct) for v in verdicts[j * params.n : (j + 1) * params.n])
    return [counts[p] for p in positions]


def hack_filter(
    rows: Sequence[CurateRow],
    graders: Sequence[Grader],
    engine: Any,
    *,
    attempts: int = 8,
    max_tokens: int = 24,
    instruction: str = HACK_INSTRUCTION,
    cache: ResultCache | None = None,
    settings: Mapping[str, Any] | None = None,
    batch_problems: int = 32,
    progress: bool = True,
) -> tuple[list[CurateRow], list[Drop]]:
    """Step 5: sample ``attempts`` answer-only responses per row at temperature 1 (at most
    ``max_tokens`` tokens); drop the row if ANY is graded correct by its env. ``settings``
    (model, engine, seed, env, ...) join the cache key."""
    from rllib_k15.engine import SamplingParams

    params = SamplingParams(n=attempts, temperature=1.0, max_tokens=max_tokens)
    key = {
        **(settings or {}),
        "step": "hack",
        "attempts": attempts,
        "max_tokens": max_tokens,
        "instruction": instruction,
    }
    counts = _cached_map(
        rows,
        key,
        lambda pos: _correct_without_reasoning(engine, rows, graders, pos, params, instruction),
        cache if cache is not None else ResultCache(None),
        batch_problems=batch_problems,
        desc="easy-to-hack",
        progress=progress,
    )
    kept, drops = [], []
    for row, correct in zip(rows, counts, strict=True):
        if correct:
            reason = f"answered correctly without reasoning within {attempts} attempts"
            drops.append(Drop(row, reason, {"correct_attempts": int(correct)}))
        else:
            kept.append(row)
    return kept, drops


def difficulty_pass_rates(
    rows: Sequence[CurateRow],
    graders: Sequence[Grader],
    engine: Any,
    *,
    samples: int = 8,
    max_tokens: int = 1024,
    cache: ResultCache | None = None,
    settings: Mapping[str, Any] | None = None,
    batch_problems: int = 32,
    progress: bool = True,
) -> list[float]:
    """Step 6: each row's pass rate = #correct / ``samples`` responses at temperature 1 to the
    env's own prompt (``pass_rates`` of ``k15 difficulty``; a truncated response is wrong)."""
    from rllib_k15.engine import SamplingParams
    from rllib_k15.sampling.difficulty import pass_rates

    params = SamplingParams(n=samples, temperature=1.0, max_tokens=max_tokens)
    key = {**(settings or {}), "step": "difficulty", "samples": samples, "max_tokens": max_tokens}

    def compute(positions: list[int]) -> list[float]:
        rates: dict[int, float] = {}
        for env, members in _by_env(graders, positions):
            indices = [graders[p].index for p in members]
            found = pass_rates(engine, env, indices, params, batch_problems=len(indices))
            rates.update(zip(members, found, strict=True))
        return [rates[p] for p in positions]

    return _cached_map(
        rows,
        key,
        compute,
        cache if cache is not None else ResultCache(None),
        batch_problems=batch_problems,
        desc="difficulty",
        progress=progress,
    )
