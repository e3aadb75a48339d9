"""Repeat detection: end a response early once it has fallen into a loop (report §2.6).

Works on token ids only (no tokenizer). Two rules, both checked after every token; the
result is the **first** prefix of the response at which either holds, so the batch form
:func:`detect_repetition` and the streaming form :class:`RepetitionDetector` agree exactly
(an engine that stops the response at that token sees the same thing as a check of the
finished text).

**Period rule** (exact loops, the common failure). At prefix length m, for a period p
with 1 ≤ p ≤ ``max_period``, let L be the length of the longest suffix with
``x[t] == x[t − p]`` for all its tokens but the first p (a p-periodic tail). It triggers
when ``L >= min_repeats · p`` **and** ``L >= min_tokens``. The loop starts at ``m − L``;
the smallest triggering p is reported.

**N-gram rule** (loops with small variations, e.g. a changing counter). An n-gram of
``ngram_size`` tokens that occurs more than ``max_ngram_repeats`` times, counting
non-overlapping occurrences greedily from the left, triggers. The loop starts at its
first counted occurrence and ``period`` is the distance to the second one.
``ngram_size = 0`` disables the rule.

**Short digit runs.** "1111", "0.333333", "0.142857142857142857" or "1000000" are
p-periodic tails (p = 1 or 6) but short: ``min_tokens`` (default 48) is the guard. With a
one-digit-per-token tokenizer (Llama, Qwen) a run must be 48 tokens long to count, which
reasoning text never needs; a float repr like 0.3333333333333333 (16 digits) is safe. The
n-gram rule counts non-overlapping occurrences, so a run of one digit needs
``ngram_size · (max_ngram_repeats + 1)`` (220) tokens to trigger it.

**Partial rollouts.** After each segment, ``detect_repetition(partial.response_ids)`` on
the whole response so far is enough: earlier segments did not trigger, so the first
trigger point lies in the new segment (or rebuild a :class:`RepetitionDetector` by
feeding it the stored tokens).

A triggered response should be cut (:attr:`RepetitionResult.cut` keeps one copy of the
loop) and penalised by the reward code; this module only detects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "RepetitionConfig",
    "RepetitionDetector",
    "RepetitionResult",
    "RepetitionRule",
    "detect_repetition",
]


@dataclass(frozen=True)
class RepetitionConfig:
    """When a response counts as looping. Defaults favour no false alarms on normal text."""

    max_period: int = 256
    """Longest loop period (tokens) the period rule sees. Longer catches paragraph-sized
    loops; cost is O(max_period) per token in both forms, and a loop of period p needs
    ``min_repeats · p`` tokens before it triggers anyway."""

    min_repeats: int = 3
    """Copies of the period needed. 3 is the smallest value that never cuts a deliberate
    restatement ("The answer is 5. The answer is 5."); higher wastes more tokens per loop
    (3 · p before the cut)."""

    min_tokens: int = 48
    """Tokens the periodic tail must cover. Guards short periods against number runs
    ("1111", "0.333333"): a single repeated token must run 48 times. Lower cuts short loops
    earlier but risks digits; higher lets p = 1–15 loops run longer."""

    ngram_size: int = 20
    """N-gram length of the n-gram rule; 0 disables the rule. Shorter n-grams recur in
    normal text (formulas, "let me check the"); longer ones miss loops that vary every
    few tokens."""

    max_ngram_repeats: int = 10
    """An n-gram may occur this many times (non-overlapping); one more triggers. Higher is
    safer for long reflective chains of thought, lower stops varied loops sooner."""

    def __post_init__(self) -> None:
        if self.max_period < 1:
            raise ValueError(f"`max_period` ({self.max_period}) must be >= 1")
        if self.min_repeats < 2:
            raise ValueError(f"`min_repeats` ({self.min_repeats}) must be >= 2")
        if self.min_tokens < 2:
            raise ValueError(f"`min_tokens` ({self.min_tokens}) must be >= 2")
        if self.ngram_size < 0:
            raise ValueError(f"`ngram_size` ({self.ngram_size}) must be >= 0 (0 disables)")
        if self.max_ngram_repeats < 1:
            raise ValueError(f"`max_ngram_repeats` ({self.max_ngram_repeats}) must be >= 1")

    def period_need(self) -> np.ndarray:
        """(max_period,) int64: entry p−1 = matches ``x[t] == x[t−p]`` needed in a row,
        ``max(min_repeats · p, min_tokens) − p``."""
        p = np.arange(1, self.max_period + 1, dtype=np.int64)
        return np.maximum(self.min_repeats * p, self.min_tokens) - p


class RepetitionRule(str, Enum):  # noqa: UP042 (StrEnum needs 3.11; we support 3.10)
    """Which rule triggered."""

    PERIOD = "period"
    NGRAM = "ngram"


@dataclass(frozen=True)
class RepetitionResult:
    """Outcome of a check. When ``triggered``: the loop is (about) ``x[start:start+period]``
    repeated, and the rule first held after ``end`` tokens (``x[:end]``)."""

    triggered: bool
    rule: RepetitionRule | None = None
    period: int = 0
    start: int = -1
    end: int = -1

    @property
    def cut(self) -> int:
        """Length to truncate the response to so that one copy of the loop remains
        (``start + period``); -1 when not triggered."""
        return self.start + self.period if self.triggered else -1


NOT_TRIGGERED = RepetitionResult(triggered=False)


def _first_period_trigger(x: np.ndarray, config: RepetitionConfig) -> RepetitionResult:
    """Earliest prefix at which the period rule holds (smallest p on ties)."""
    n = x.size
    need = config.period_need()
    best = NOT_TRIGGERED
    for p in range(1, min(config.max_period, n - 1) + 1):
        # Shortest prefix that can trigger for p; non-decreasing in p, so stop once it
        # exceeds the input or cannot beat the best so far (ties go to the smaller p).
        earliest_possible = p + int(need[p - 1])
        if earliest_possible > n or (best.triggered and earliest_possible >= best.end):
            break
        eq = x[p:] == x[:-p]  # eq[j] ⇔ x[j + p] == x[j]
        pos = np.arange(eq.size)
        last_false = np.maximum.accumulate(np.where(eq, -1, pos))
        run = pos - last_false  # consecutive matches ending at j
        hits = np.flatnonzero(run >= need[p - 1])
        if hits.size:
            end = int(hits[0]) + p + 1
            if not best.triggered or end < best.end:
                length = int(run[hits[0]]) + p
                best = RepetitionResult(True, RepetitionRule.PERIOD, p, end - length, end)
    return best


def _first_ngram_trigger(x: np.ndarray, config: RepetitionConfig) -> RepetitionResult:
    """Earliest prefix at which some n-gram has ``max_ngram_repeats + 1`` non-overlapping
    occurrences (greedy from the left)."""
    n, limit = config.ngram_size, config.max_ngram_repeats
    if n == 0 or x.size < n * (limit + 1):
        return NOT_TRIGGERED
    windows = np.lib.stride_tricks.sliding_window_view(x, n)  # (W, n)
    _, inverse, counts = np.unique(windows, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    best = NOT_TRIGGERED
    for group in np.flatnonzero(counts > limit):
        counted: list[int] = []
        for s in np.flatnonzero(inverse == group).tolist():
            if not counted or s >= counted[-1] + n:
                counted.append(s)
                if len(counted) == limit + 1:
                    end = s + n
                    if not best.triggered or end < best.end:
                        period = counted[1] - counted[0]
                        best = RepetitionResult(True, RepetitionRule.NGRAM, period, counted[0], end)
                    break
    return best


def detect_repetition(
    token_ids: Sequence[int] | np.ndarray, config: RepetitionConfig | None = None
) -> RepetitionResult:
    """Check a response; return the first point at which it was looping (see module
    docstring for the rules). On a tie at the same token the period rule wins."""
    config = config or RepetitionConfig()
    x = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    by_period = _first_period_trigger(x, config)
    by_ngram = _first_ngram_trigger(x, config)
    if by_ngram.triggered and (not by_period.triggered or by_ngram.end < by_period.end):
        return by_ngram
    return by_period


class RepetitionDetector:
    """Streaming form of :func:`detect_repetition` for a response being generated.

    Feed tokens as they arrive with :meth:`update`; once triggered the result is final
    and further tokens are ignored. O(max_period) numpy work plus one dict lookup per
    token. ``detector.update(ids).triggered`` after the whole response equals
    ``detect_repetition(ids).triggered`` (same fields too).
    """

    def __init__(self, config: RepetitionConfig | None = None) -> None:
        self.config = config or RepetitionConfig()
        self._need = self.config.period_need()
        self.reset()

    def reset(self) -> None:
        """Forget everything (start of a new response)."""
        self._tokens: list[int] = []
        self._history = np.zeros(1024, dtype=np.int64)
        self._runs = np.zeros(self.config.max_period, dtype=np.int64)
        # n-gram -> [count, end of last counted occurrence, first start, second start]
        self._ngrams: dict[tuple[int, ...], list[int]] = {}
        self._result = NOT_TRIGGERED

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    @property
    def result(self) -> RepetitionResult:
        return self._result

    def update(self, new_ids: Sequence[int]) -> RepetitionResult:
        """Consume ``new_ids`` (stops at the token that triggers) and return the result."""
        for token in new_ids:
            if self._result.triggered:
                break
            self._result = self._push(int(token))
        return self._result

    def _push(self, token: int) -> RepetitionResult:
        t = len(self._tokens)  # index of the new token
        if t == self._history.size:
            self._history = np.concatenate([self._history, np.zeros_like(self._history)])
        self._history[t] = token
        self._tokens.append(token)
        m = t + 1
        k = min(self.config.max_period, t)
        if k:
            previous = self._history[t - 1 :: -1][:k]  # x[t-1], x[t-2], …: periods 1..k
            runs = self._runs[:k]
            runs[:] = np.where(previous == token, runs + 1, 0)
            hits = np.flatnonzero(runs >= self._need[:k])
            if hits.size:
                p = int(hits[0]) + 1
                length = int(runs[hits[0]]) + p
                return RepetitionResult(True, RepetitionRule.PERIOD, p, m - length, m)
        n = self.config.ngram_size
        if n and m >= n:
            s = m - n
            key = tuple(self._tokens[s:])
            entry = self._ngrams.get(key)
            if entry is None:
                self._ngrams[key] = [1, m, s, -1]
            elif s >= entry[1]:
                entry[0] += 1
                entry[1] = m
                if entry[0] == 2:
                    entry[3] = s
                if entry[0] > self.config.max_ngram_repeats:
                    return RepetitionResult(
                        True, RepetitionRule.NGRAM, entry[3] - entry[2], entry[2], m
                    )
        return NOT_TRIGGERED
