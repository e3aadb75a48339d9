"""Repeat detection: loops trigger (where they start), normal reasoning text does not.

Texts are tokenised by two toy tokenizers that mimic real ones: ``digits`` splits numbers
into one token per digit (Llama, Qwen), ``words`` keeps whole numbers as one token.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rllib_k15.rollout import (
    RepetitionConfig,
    RepetitionDetector,
    RepetitionResult,
    RepetitionRule,
    detect_repetition,
)

VOCAB: dict[str, int] = {}


def digits(text: str) -> list[int]:
    return [VOCAB.setdefault(t, len(VOCAB)) for t in re.findall(r"\d|[A-Za-z]+|\S", text)]


def words(text: str) -> list[int]:
    return [VOCAB.setdefault(t, len(VOCAB)) for t in re.findall(r"\d+|[A-Za-z]+|\S", text)]


def running_sum_cot(steps: int) -> str:
    total, lines = 0, ["Let us add the numbers one at a time."]
    for k in range(1, steps + 1):
        term = (k * 37) % 90 + 10
        lines.append(f"Step {k}: {total} + {term} = {total + term}.")
        total += term
    return " ".join(lines) + f" The answer is {total}."


def long_addition_cot() -> str:
    return (
        "To add 4587 and 2968, add the digits from the right. 7 + 8 = 15, write 5 carry 1. "
        "8 + 6 + 1 = 15, write 5 carry 1. 5 + 9 + 1 = 15, write 5 carry 1. 4 + 2 + 1 = 7, "
        "write 7. So 4587 + 2968 = 7555. Check: 7555 - 2968 = 4587. Correct. \\boxed{7555}"
    )


def reflective_cot() -> str:
    parts = ["We need the sum of the first 12 odd numbers."]
    for k in range(1, 9):
        parts.append(f"The sum of the first {k} odd numbers is {k * k}.")
        parts.append("Wait, let me double-check this step before moving on.")
    return " ".join(parts) + " So the pattern is n^2 and the answer is 144."


NORMAL_TEXT = [
    # digit runs: 16-digit float reprs, a 6-digit period ×3, 13-digit power of ten
    (
        "digit runs",
        digits(
            "1/3 = 0.3333333333333333 and 2/3 = 0.6666666666666666, so 1/3 + 2/3 = 1. "
            "Also 1/7 = 0.142857142857142857 and 10^12 = 1000000000000, "
            "and 11111111 * 9 = 99999999, 1111 + 1111 = 2222."
        ),
    ),
    ("running sum, digits", digits(running_sum_cot(80))),  # ~1400 tokens
    ("running sum, words", words(running_sum_cot(80))),
    ("long addition with carries", digits(long_addition_cot())),
    ("times table", digits(" ".join(f"7 x {k} = {7 * k}." for k in range(1, 13)))),
    ("counting to 100", digits(", ".join(str(k) for k in range(1, 101)))),
    ("counting in words tokens", words(", ".join(str(k) for k in range(1, 101)))),
    (
        "deliberate restatement",
        digits("12 * 3.5 = 42. Therefore the answer is 42. Therefore the answer is 42."),
    ),
    ("reflective chain of thought", digits(reflective_cot())),
    (
        "markdown table",
        digits("| a | b | c | d | e | f |\n" + "|---" * 6 + "|\n| 1 | 2 | 3 | 4 | 5 | 6 |"),
    ),
]


@pytest.mark.parametrize("name,ids", NORMAL_TEXT, ids=[n for n, _ in NORMAL_TEXT])
def test_normal_text_does_not_trigger(name: str, ids: list[int]) -> None:
    assert not detect_repetition(ids).triggered
    assert not RepetitionDetector().update(ids).triggered


def test_random_text_does_not_trigger() -> None:
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 32000, size=4000)
    zipf = np.minimum(rng.zipf(1.3, size=4000), 5000)  # a few very frequent tokens
    assert not detect_repetition(uniform).triggered
    assert not detect_repetition(zipf).triggered


PREFIX = digits("Let us add 12 and 30.")  # 8 tokens, ends with "."
SENTENCE = digits(" So the answer is 42. Let me check again.")  # 12 tokens
PARAGRAPH = digits(
    "First we multiply 23 by 17, which gives 391, then we subtract 45 to get 346, "
    "and dividing by 2 we obtain 173, which is odd, so we go back and try the other "
    "order of operations to see whether the result changes at all in this case."
)
VARIED = [
    digits(
        f" Wait, let me recompute the sum of the first row once more to be sure that "
        f"it is right and correct. Attempt {k}."
    )
    for k in range(1, 16)
]

LOOPS = [
    # name, ids, rule, period, earliest start, latest start, end
    # a sentence repeated after a prefix: 4 copies (48 tokens = min_tokens) to trigger
    ("sentence loop", PREFIX + SENTENCE * 6, RepetitionRule.PERIOD, 12, 8, 8, 8 + 48),
    # one digit forever: the run must reach 48 tokens
    (
        "digit run",
        digits("The value is 1.") + [VOCAB["1"]] * 60,
        RepetitionRule.PERIOD,
        1,
        5,
        5,
        53,
    ),
    # 0.121212…: period 2, 48 tokens
    ("two-digit period", digits("x = 0." + "12" * 40), RepetitionRule.PERIOD, 2, 4, 4, 52),
    # a ~70-token paragraph: needs 3 copies (min_repeats) since 3·p > 48
    (
        "paragraph loop",
        PREFIX + PARAGRAPH * 4,
        RepetitionRule.PERIOD,
        len(PARAGRAPH),
        8 - len(PARAGRAPH),
        8,
        8 + 3 * len(PARAGRAPH),
    ),
    # the whole response is the loop
    ("loop from token 0", SENTENCE * 5, RepetitionRule.PERIOD, 12, 0, 0, 48),
    # a loop that the model escapes later still counted at the first point it held
    (
        "escaped loop",
        PREFIX + SENTENCE * 5 + digits(" OK, 42 is right."),
        RepetitionRule.PERIOD,
        12,
        8,
        8,
        56,
    ),
    # copies differ by a counter: not periodic, the n-gram rule catches it at copy 11;
    # the first repeated 20-gram starts at the "." just before the first copy
    (
        "varied loop",
        digits("We compute.") + sum(VARIED, []),
        RepetitionRule.NGRAM,
        len(VARIED[0]),
        2,
        3,
        None,
    ),
]


@pytest.mark.parametrize(
    "name,ids,rule,period,start_min,start_max,end", LOOPS, ids=[case[0] for case in LOOPS]
)
def test_loops_trigger_where_they_start(
    name: str,
    ids: list[int],
    rule: RepetitionRule,
    period: int,
    start_min: int,
    start_max: int,
    end: int | None,
) -> None:
    result = detect_repetition(ids)
    assert result.triggered and result.rule is rule and result.period == period
    assert start_min <= result.start <= start_max
    if end is not None:
        assert result.end == end
    # Cutting at result.cut keeps one copy of the loop and leaves no loop behind.
    assert result.cut == result.start + result.period
    assert not detect_repetition(ids[: result.cut]).triggered
    if rule is RepetitionRule.PERIOD:
        assert ids[result.cut : result.end] == ids[result.start : result.end - result.period]


def test_varied_loop_is_missed_when_the_ngram_rule_is_off() -> None:
    ids = digits("We compute.") + sum(VARIED, [])
    assert not detect_repetition(ids, RepetitionConfig(ngram_size=0)).triggered


SMALL = RepetitionConfig(max_period=8, min_repeats=3, min_tokens=10, ngram_size=0)


@pytest.mark.parametrize(
    "ids,expected",
    [
        ([7] * 9, RepetitionResult(False)),  # 9 < min_tokens
        ([7] * 10, RepetitionResult(True, RepetitionRule.PERIOD, 1, 0, 10)),
        ([1, 2, 3, 4, 5] * 2, RepetitionResult(False)),  # 2 copies < min_repeats
        ([1, 2, 3, 4, 5] * 3, RepetitionResult(True, RepetitionRule.PERIOD, 5, 0, 15)),
        ([9, 1, 2] + [1, 2] * 5, RepetitionResult(True, RepetitionRule.PERIOD, 2, 1, 11)),
        (list(range(9)) * 3, RepetitionResult(False)),  # period 9 > max_period
        ([], RepetitionResult(False)),
    ],
)
def test_period_rule_boundaries(ids: list[int], expected: RepetitionResult) -> None:
    assert detect_repetition(ids, SMALL) == expected
    assert RepetitionDetector(SMALL).update(ids) == expected


def test_ngram_rule_counts_non_overlapping_occurrences() -> None:
    config = RepetitionConfig(max_period=1, min_tokens=1000, ngram_size=3, max_ngram_repeats=2)
    # [5,5,5] occurs overlapping 6 times in eight 5s, but only twice without overlap...
    assert not detect_repetition([5] * 8, config).triggered
    # ...and a third time once there are nine.
    assert detect_repetition([5] * 9, config) == RepetitionResult(
        True, RepetitionRule.NGRAM, 3, 0, 9
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_period": 0}, r"`max_period` \(0\)"),
        ({"min_repeats": 1}, r"`min_repeats` \(1\)"),
        ({"min_tokens": 1}, r"`min_tokens` \(1\)"),
        ({"ngram_size": -1}, r"`ngram_size` \(-1\)"),
        ({"max_ngram_repeats": 0}, r"`max_ngram_repeats` \(0\)"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RepetitionConfig(**kwargs)


def test_streaming_equals_batch_on_random_sequences() -> None:
    """Random token streams over a tiny vocabulary with injected loops, fed in random
    chunks: the detector's result equals the batch result, and it stops at ``end``."""
    config = RepetitionConfig(
        max_period=6, min_repeats=3, min_tokens=8, ngram_size=3, max_ngram_repeats=3
    )
    rng = np.random.default_rng(0)
    triggered = {RepetitionRule.PERIOD: 0, RepetitionRule.NGRAM: 0, None: 0}
    for _ in range(300):
        ids = rng.integers(0, 6, size=int(rng.integers(0, 60))).tolist()
        if rng.random() < 0.5:  # inject a loop somewhere
            block = rng.integers(0, 6, size=int(rng.integers(1, 8))).tolist()
            at = int(rng.integers(0, len(ids) + 1))
            ids[at:at] = block * int(rng.integers(2, 6))
        expected = detect_repetition(ids, config)
        detector, fed = RepetitionDetector(config), 0
        while fed < len(ids):
            step = int(rng.integers(1, 9))
            detector.update(ids[fed : fed + step])
            fed += step
        assert detector.result == expected, ids
        assert detector.num_tokens == (expected.end if expected.triggered else len(ids))
        triggered[expected.rule] += 1
    assert min(triggered.values()) >= 20  # both rules and non-triggers were exercised


def test_detector_reset_and_sticky_result() -> None:
    detector = RepetitionDetector(SMALL)
    first = detector.update([7] * 12)
    assert first.triggered and detector.num_tokens == 10  # stopped at the trigger
    assert detector.update([1, 2, 3]) == first
    detector.reset()
    assert detector.num_tokens == 0 and not detector.result.triggered
