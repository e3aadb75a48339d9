"""Shortest rejection sampling and DPO pair rules (Kimi k1.5 §2.4, long2short).

Both methods start from n responses sampled per problem from the long-CoT model, each with
its length in tokens and the verifier's verdict:

* **Shortest rejection sampling** keeps, per problem, the shortest *correct* response as an
  SFT example (the report samples n = 8). Problems with no correct response contribute
  nothing; they are counted in :class:`SelectionStats` so a run shows how much it lost.
* **DPO pairs**: the shortest correct response is the chosen one; the rejected ones are
  (a) every wrong response strictly longer than it and (b) every correct response at
  least ``length_ratio`` times as long (report: 1.5×).

Conventions (decided here, since the report is silent):

* Length is the response's token count (``Completion.token_ids``), not characters.
* Ties for the shortest correct response are broken by the earliest sample index, i.e.
  engine order. The engine is seeded, so a rerun selects the same response.
* "At least 1.5× longer" means ``len_rejected ≥ 1.5 · len_chosen`` (inclusive), evaluated
  exactly with rational arithmetic so 15 tokens against a 10-token positive counts at
  1.5× and 149 against 100 (1.49×) does not. A correct rejected response must also be
  strictly longer than the chosen one (this only matters when the chosen one is empty).
* Wrong responses that are not longer than the chosen one are not used: the report pairs
  the short positive with *longer* negatives so the preference teaches brevity.

Everything here is pure Python over plain data; no model, engine or env is touched.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

__all__ = [
    "PairStats",
    "PreferencePair",
    "ProblemSamples",
    "SFTExample",
    "Sample",
    "SelectionStats",
    "build_dpo_pairs",
    "dpo_pair_indices",
    "select_shortest",
    "shortest_correct_index",
    "shortest_rejection_sampling",
]


class Sample(NamedTuple):
    """One sampled response: text, length in tokens, verifier verdict."""

    response: str
    token_length: int
    correct: bool


@dataclass(frozen=True)
class ProblemSamples:
    """All responses sampled for one problem (``prompt`` is the user message text)."""

    problem_id: str
    prompt: str
    samples: Sequence[Sample]


@dataclass(frozen=True)
class SFTExample:
    """One row of the shortest-rejection-sampling SFT data set."""

    problem_id: str
    prompt: str
    response: str
    response_tokens: int
    num_samples: int
    num_correct: int


@dataclass(frozen=True)
class PreferencePair:
    """One row of the DPO data set: ``chosen`` is preferred over ``rejected``."""

    problem_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_tokens: int
    rejected_tokens: int
    rejected_correct: bool


@dataclass
class SelectionStats:
    """What shortest rejection sampling kept and lost."""

    num_problems: int = 0
    num_selected: int = 0
    num_samples: int = 0
    num_correct: int = 0
    problems_without_correct: list[str] = field(default_factory=list)

    @property
    def num_without_correct(self) -> int:
        return len(self.problems_without_correct)


@dataclass
class PairStats:
    """What the DPO pair builder produced and where problems fell out."""

    num_problems: int = 0
    num_pairs: int = 0
    num_pairs_wrong_rejected: int = 0
    num_pairs_long_correct_rejected: int = 0
    problems_without_correct: list[str] = field(default_factory=list)
    problems_without_rejected: list[str] = field(default_factory=list)

    @property
    def num_without_correct(self) -> int:
        return len(self.problems_without_correct)


def _as_samples(samples: Sequence[Sample | tuple[str, int, bool]]) -> list[Sample]:
    """Validate and normalise to :class:`Sample` (plain 3-tuples are accepted)."""
    out = []
    for i, s in enumerate(samples):
        response, token_length, correct = s
        if isinstance(token_length, bool) or not isinstance(token_length, numbers.Integral):
            raise TypeError(f"sample {i}: token_length must be an int, got {token_length!r}")
        if token_length < 0:
            raise ValueError(f"sample {i}: token_length ({token_length}) must be >= 0")
        out.append(Sample(response, int(token_length), bool(correct)))
    return out


def shortest_correct_index(samples: Sequence[Sample | tuple[str, int, bool]]) -> int | None:
    """argmin over correct samples of (token_length, index); None if none is correct."""
    samples = _as_samples(samples)
    best: int | None = None
    for i, s in enumerate(samples):
        if s.correct and (best is None or s.token_length < samples[best].token_length):
            best = i  # strict '<' keeps the earliest index on ties
    return best


def select_shortest(group: ProblemSamples) -> SFTExample | None:
    """The shortest correct response of one problem as an SFT example, or None."""
    samples = _as_samples(group.samples)
    best = shortest_correct_index(samples)
    if best is None:
        return None
    chosen = samples[best]
    return SFTExample(
        problem_id=group.problem_id,
        prompt=group.prompt,
        response=chosen.response,
        response_tokens=chosen.token_length,
        num_samples=len(samples),
        num_correct=sum(1 for s in samples if s.correct),
    )


def shortest_rejection_sampling(
    groups: Iterable[ProblemSamples],
) -> tuple[list[SFTExample], SelectionStats]:
    """Apply :func:`select_shortest` to every problem; count problems with no correct answer."""
    examples: list[SFTExample] = []
    stats = SelectionStats()
    for group in groups:
        stats.num_problems += 1
        stats.num_samples += len(group.samples)
        stats.num_correct += sum(1 for s in _as_samples(group.samples) if s.correct)
        example = select_shortest(group)
        if example is None:
            stats.problems_without_correct.append(group.problem_id)
        else:
            examples.append(example)
            stats.num_selected += 1
    return examples, stats


def _as_fraction(length_ratio: float) -> Fraction:
    if not length_ratio >= 1.0:  # also rejects NaN
        raise ValueError(f"`length_ratio` ({length_ratio}) must be >= 1")
    return Fraction(length_ratio).limit_denominator(10_000)


def dpo_pair_indices(
    samples: Sequence[Sample | tuple[str, int, bool]], length_ratio: float = 1.5
) -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs for one problem, rejected in sample order.

    chosen  = shortest correct sample (ties: earliest index);
    rejected = { j : ¬correct_j ∧ len_j > len_w }
             ∪ { j : correct_j ∧ len_j > len_w ∧ len_j ≥ length_ratio · len_w }.
    Empty if no sample is correct.
    """
    ratio = _as_fraction(length_ratio)
    samples = _as_samples(samples)
    best = shortest_correct_index(samples)
    if best is None:
        return []
    len_w = samples[best].token_length
    pairs = []
    for j, s in enumerate(samples):
        if j == best or s.token_length <= len_w:
            continue
        # Exact: len_j ≥ (p/q)·len_w  ⇔  q·len_j ≥ p·len_w.
        if not s.correct or ratio.denominator * s.token_length >= ratio.numerator * len_w:
            pairs.append((best, j))
    return pairs


def build_dpo_pairs(
    groups: Iterable[ProblemSamples], length_ratio: float = 1.5
) -> tuple[list[PreferencePair], PairStats]:
    """Apply :func:`dpo_pair_indices` to every problem and materialise the pairs."""
    _as_fraction(length_ratio)  # validate even when ``groups`` is empty
    pairs: list[PreferencePair] = []
    stats = PairStats()
    for group in groups:
        stats.num_problems += 1
        samples = _as_samples(group.samples)
        indices = dpo_pair_indices(samples, length_ratio)
        if not indices:
            if shortest_correct_index(samples) is None:
                stats.problems_without_correct.append(group.problem_id)
            else:
                stats.problems_without_rejected.append(group.problem_id)
            continue
        for chosen_idx, rejected_idx in indices:
            chosen, rejected = samples[chosen_idx], samples[rejected_idx]
            pairs.append(
                PreferencePair(
                    problem_id=group.problem_id,
                    prompt=group.prompt,
                    chosen=chosen.response,
                    rejected=rejected.response,
                    chosen_tokens=chosen.token_length,
                    rejected_tokens=rejected.token_length,
                    rejected_correct=bool(rejected.correct),
                )
            )
            if rejected.correct:
                stats.num_pairs_long_correct_rejected += 1
            else:
                stats.num_pairs_wrong_rejected += 1
    stats.num_pairs = len(pairs)
    return pairs, stats
