"""The text steps of the RL prompt-set curation (the Kimi k1.5 report, §2.1), as pure functions.

The report builds its RL prompt set for *diverse coverage*, *balanced difficulty* and
*accurate evaluability*: duplicates go, prompts leaked from evaluation sets go, prompts whose
answers are easy to guess or hard to verify (multiple choice, true/false, proofs) go, and
prompts a model answers right without reasoning go. ``k15 curate`` runs the steps in order:

1. exact duplicates — :func:`normalise` the text, hash it, keep the first occurrence;
2. near duplicates — MinHash over word 3-gram shingles with LSH (:func:`near_dedup`);
3. decontamination — drop a row sharing any word n-gram with an eval problem
   (:func:`decontaminate`);
4. the format filter — named regex rules on the problem or its final answer, 5. the
   easy-to-hack filter and 6. model-based difficulty: :mod:`rllib_k15.data.curate_filters`.

Every step takes :class:`CurateRow` s and returns ``(kept, drops)``; a :class:`Drop` names the
row (id, source file, 0-based row) and the reason. :func:`curate` runs the six in order under
a :class:`CurateConfig` (steps 5-6 only with an engine). Nothing here imports torch::

    from rllib_k15.data.curate import curate
    from rllib_k15.data.curate_report import load_rows
    result = curate(load_rows("train.jsonl"), load_rows("math500.jsonl"))  # no model: 1-4
    print([(s.name, s.n_in, len(s.drops)) for s in result.steps])
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CurateConfig",
    "CurateResult",
    "CurateRow",
    "Drop",
    "StepResult",
    "curate",
    "decontaminate",
    "exact_dedup",
    "exact_key",
    "near_dedup",
    "ngrams",
    "normalise",
    "shingles",
    "words",
]

_EDGE = string.punctuation + string.whitespace
_WORD = re.compile(r"\w+")
Progress = Callable[[Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class CurateRow:
    """One input row: where it came from, the fields the steps read, and the row itself.

    source: the input file (as given); index: 0-based row in it; id: the row's id column, or
    ``<file stem>#<index>``; text: the problem text; answer: the answer field as text (None
    when the file has none); domain: the domain column, or the file stem; data: the row.
    """

    source: str
    index: int
    id: str
    text: str
    answer: str | None
    domain: str
    data: dict[str, Any] = field(compare=False, repr=False)

    @property
    def content_hash(self) -> str:
        """sha256 of the row's content (keys sorted): the resume cache's row key."""
        blob = json.dumps(self.data, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Drop:
    """A row a step removed: ``reason`` in words, ``detail`` for the report (JSON values)."""

    row: CurateRow
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The report's record: id, source, row, reason and the detail fields."""
        return {
            "id": self.row.id,
            "source": self.row.source,
            "row": self.row.index,
            "reason": self.reason,
            **self.detail,
        }


@dataclass
class StepResult:
    """One step's outcome. status: ``ran`` | ``off`` (disabled by its flag) | ``skipped``
    (a prerequisite is missing: the note says which). ``extra``: step-specific report fields
    (the format filter's per-rule counts, the difficulty summary)."""

    name: str
    title: str
    status: str
    n_in: int
    kept: list[CurateRow]
    drops: list[Drop] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def normalise(text: str) -> str:
    """casefold, collapse whitespace runs to one space, strip punctuation/space at both ends."""
    return " ".join(text.casefold().split()).strip(_EDGE)


def exact_key(text: str) -> str:
    """sha256 of :func:`normalise` ``(text)``: equal keys = exact duplicates."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def words(text: str) -> list[str]:
    """Casefolded word tokens (``\\w+``): punctuation, LaTeX markup and spacing are ignored."""
    return _WORD.findall(text.casefold())


def _grams(tokens: list[str], size: int) -> set[str]:
    """Word ``size``-grams of ``tokens``; fewer than ``size`` tokens: the whole text, one gram."""
    if len(tokens) < size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def shingles(text: str, size: int = 3) -> set[str]:
    """Word ``size``-gram shingles of ``text`` (the MinHash set of near-dup detection)."""
    return _grams(words(text), size)


def ngrams(text: str, n: int = 13) -> set[str]:
    """Word ``n``-grams of ``text`` for decontamination; a text under ``n`` words is one gram."""
    return _grams(words(text), n)


# ---------------------------------------------------------------------------- steps 1-3


def exact_dedup(rows: Sequence[CurateRow]) -> tuple[list[CurateRow], list[Drop]]:
    """Step 1: keep the first row of each :func:`exact_key`; later ones are dropped."""
    first: dict[str, CurateRow] = {}
    kept, drops = [], []
    for row in rows:
        key = exact_key(row.text)
        if key in first:
            original = first[key]
            drops.append(Drop(row, f"exact duplicate of {original.id}", _dup_detail(original)))
        else:
            first[key] = row
            kept.append(row)
    return kept, drops


def _dup_detail(original: CurateRow, **more: Any) -> dict[str, Any]:
    return {"duplicate_of": original.id, "duplicate_of_source": original.source, **more}


def near_dedup(
    rows: Sequence[CurateRow],
    threshold: float = 0.8,
    *,
    num_perm: int = 128,
    progress: Progress | None = None,
) -> tuple[list[CurateRow], list[Drop]]:
    """Step 2: MinHash (``num_perm`` permutations) of each row's word 3-gram shingles, queried
    against an LSH index (``MinHashLSH(threshold)``) of the rows kept so far.

    An LSH hit is a candidate; it is confirmed when the MinHash estimate of the Jaccard
    similarity |A ∩ B| / |A ∪ B| is >= ``threshold`` (LSH alone admits false positives).
    A confirmed row is dropped as a duplicate of its most similar kept row; otherwise it is
    kept and inserted into the index. First occurrence wins, as in step 1.
    """
    from datasketch import MinHash, MinHashLSH

    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as err:  # e.g. a threshold so high that LSH has fewer than 2 bands
        raise ValueError(f"near-duplicate threshold {threshold} with {num_perm} permutations: "
                         f"{err}") from None  # fmt: skip
    signatures = MinHash.bulk(
        ([s.encode("utf-8") for s in shingles(row.text)] for row in rows), num_perm=num_perm
    )
    kept_sigs: dict[str, tuple[CurateRow, Any]] = {}
    kept, drops = [], []
    pairs = list(zip(rows, signatures, strict=True))
    for i, (row, sig) in enumerate(progress(pairs) if progress else pairs):
        scored = [(sig.jaccard(kept_sigs[k][1]), k) for k in lsh.query(sig)]
        confirmed = [(j, k) for j, k in scored if j >= threshold]
        if confirmed:
            jaccard, key = max(confirmed)
            original = kept_sigs[key][0]
            detail = _dup_detail(original, jaccard=round(float(jaccard), 4))
            drops.append(
                Drop(row, f"near duplicate of {original.id} (Jaccard ≈ {jaccard:.2f})", detail)
            )
        else:
            lsh.insert(str(i), sig)
            kept_sigs[str(i)] = (row, sig)
            kept.append(row)
    return kept, drops


def decontaminate(
    rows: Sequence[CurateRow],
    eval_rows: Sequence[CurateRow],
    n: int = 13,
    *,
    progress: Progress | None = None,
) -> tuple[list[CurateRow], list[Drop]]:
    """Step 3: drop a training row that shares any word ``n``-gram (:func:`ngrams`) with an
    eval problem; the drop names the first eval problem that holds the shared gram."""
    index: dict[str, CurateRow] = {}
    for problem in eval_rows:
        for gram in ngrams(problem.text, n):
            index.setdefault(gram, problem)
    kept, drops = [], []
    for row in progress(rows) if progress else rows:
        hit = next((g for g in sorted(ngrams(row.text, n)) if g in index), None)
        if hit is None:
            kept.append(row)
            continue
        leaked = index[hit]
        detail = {"eval_id": leaked.id, "eval_source": leaked.source, "ngram": hit[:200]}
        drops.append(Drop(row, f"shares a {n}-gram with eval problem {leaked.id}", detail))
    return kept, drops


# ---------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class CurateConfig:
    """Which steps run, and how (one field per ``k15 curate`` flag).

    dedup / near_dedup: steps 1-2 / step 2 alone. near_dup_threshold: the Jaccard
        similarity of 3-gram shingles from which a row is a near duplicate (lower catches
        looser rewordings, and more distinct problems that share a template).
    decontaminate / ngram: step 3 and its n (13, as in GPT-3's check: lower catches shorter
        overlaps and more harmless shared phrases).
    format_filter / format_rules: step 4; ``None`` = the default rules.
    hack_filter / hack_attempts / hack_max_tokens / hack_instruction: step 5 (more attempts
        drop more guessable prompts; the token cap keeps the model from reasoning).
    difficulty / difficulty_samples / max_tokens: step 6 (more samples: finer pass rates).
    batch_problems: rows per generate call and per cache write (a kill loses one batch).
    cache_settings: what else identifies a model result (model, engine, seed, env).
    progress: tqdm bars.
    """

    dedup: bool = True
    near_dedup: bool = True
    near_dup_threshold: float = 0.8
    decontaminate: bool = True
    ngram: int = 13
    format_filter: bool = True
    format_rules: tuple[Any, ...] | None = None
    hack_filter: bool = True
    hack_attempts: int = 8
    hack_max_tokens: int = 24
    hack_instruction: str | None = None
    difficulty: bool = True
    difficulty_samples: int = 8
    max_tokens: int = 1024
    batch_problems: int = 32
    cache_settings: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass
class CurateResult:
    """The steps in order, the kept rows, and (difficulty ran) each kept row's pass rate."""

    steps: list[StepResult]
    kept: list[CurateRow]
    pass_rates: list[float] | None = None


def _bar(config: CurateConfig, desc: str) -> Progress:
    from tqdm.auto import tqdm

    return lambda it: tqdm(it, desc=desc, unit="problem", disable=not config.progress)


def _blocked(enabled: bool, missing: str | None = None) -> tuple[str, str] | None:
    """Why a step does not run: ("off", ...) by its flag, ("skipped", what is missing), or
    None (it runs)."""
    if not enabled:
        return "off", "disabled"
    return ("skipped", missing) if missing else None


def _plan(config, eval_rows, graders, engine, cache, out: CurateResult) -> list[tuple]:
    """The six steps, in order: (name, title, blocked, note, run(rows) -> (kept, drops, extra))."""
    from rllib_k15.data import curate_filters as cf

    rules = cf.default_format_rules() if config.format_rules is None else config.format_rules
    model = {"cache": cache, "settings": config.cache_settings, "progress": config.progress}
    model["batch_problems"] = config.batch_problems

    def exact_step(rows):
        return (*exact_dedup(rows), {})

    def near_step(rows):
        bar = _bar(config, "near duplicates")
        return (*near_dedup(rows, config.near_dup_threshold, progress=bar), {})

    def decontaminate_step(rows):
        bar = _bar(config, "decontamination")
        return (*decontaminate(rows, eval_rows, config.ngram, progress=bar), {})

    def format_step(rows):
        kept, drops, matched = cf.format_filter(rows, rules)
        table = {
            r.name: {"field": r.field, "pattern": r.pattern.pattern, "matched": matched[r.name]}
            for r in rules
        }
        return kept, drops, {"rules": table}

    def hack_step(rows):
        kw = {"instruction": config.hack_instruction} if config.hack_instruction else {}
        attempts, max_tokens = config.hack_attempts, config.hack_max_tokens
        mine = [graders[r.source, r.index] for r in rows]
        kept, drops = cf.hack_filter(
            rows, mine, engine, attempts=attempts, max_tokens=max_tokens, **kw, **model
        )
        return kept, drops, {"attempts": attempts}

    def difficulty_step(rows):
        samples, mine = config.difficulty_samples, [graders[r.source, r.index] for r in rows]
        rates = cf.difficulty_pass_rates(
            rows, mine, engine, samples=samples, max_tokens=config.max_tokens, **model
        )
        out.pass_rates = rates
        summary = {
            "samples": samples,
            "mean_pass_rate": sum(rates) / len(rates) if rates else None,
            "always_solved": sum(r == 1.0 for r in rates),
            "never_solved": sum(r == 0.0 for r in rates),
        }
        return rows, [], summary

    no_model = None if engine is not None else "needs a model (--model)"
    no_eval = None if eval_rows else "no eval sets (--eval-sets)"
    near_note = f"MinHash LSH, Jaccard >= {config.near_dup_threshold}"
    eval_note = f"{config.ngram}-grams vs {len(eval_rows)} eval problems"
    hack_note = f"{config.hack_attempts} answer-only attempts, <= {config.hack_max_tokens} tokens"
    difficulty_note = f"difficulty = 1 - pass rate of {config.difficulty_samples} samples"
    return [
        ("exact_dedup", "exact duplicates", _blocked(config.dedup), "normalised text", exact_step),
        ("near_dedup", "near duplicates", _blocked(config.dedup and config.near_dedup),
         near_note, near_step),
        ("decontaminate", "decontamination", _blocked(config.decontaminate, no_eval),
         eval_note, decontaminate_step),
        ("format_filter", "format filter", _blocked(config.format_filter),
         f"{len(rules)} rules", format_step),
        ("hack_filter", "easy-to-hack filter", _blocked(config.hack_filter, no_model),
         hack_note, hack_step),
        ("difficulty", "model-based difficulty", _blocked(config.difficulty, no_model),
         difficulty_note, difficulty_step),
    ]  # fmt: skip


def curate(
    rows: Sequence[CurateRow],
    eval_rows: Sequence[CurateRow] = (),
    config: CurateConfig | None = None,
    *,
    graders: Any = None,
    engine: Any = None,
    cache: Any = None,
) -> CurateResult:
    """Run the six steps in order on ``rows`` (see the module docstring).

    graders: ``{(row.source, row.index): Grader}`` (``curate_filters.Grader``: the env and
    problem index that grade the row), needed by steps 5-6; engine: a ``RolloutEngine`` (or
    None: steps 5-6 are skipped); cache: a ``curate_report.ResultCache`` for steps 5-6.
    """
    config = config if config is not None else CurateConfig()
    result = CurateResult(steps=[], kept=list(rows))
    for name, title, blocked, note, step in _plan(
        config, eval_rows, graders, engine, cache, result
    ):
        current = result.kept
        if blocked is not None:
            status, why = blocked
            result.steps.append(StepResult(name, title, status, len(current), current, note=why))
            continue
        kept, drops, extra = step(current)
        result.steps.append(StepResult(name, title, "ran", len(current), kept, drops, note, extra))
        result.kept = kept
    return result
