"""Answer extraction and exact number parsing (k15_envs.extract)."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from k15_envs.extract import ExtractMode, extract_answer, parse_number


@pytest.mark.parametrize(
    "response,mode,expected,source",
    [
        # the example: boxed wins
        ("... so the answer is \\boxed{42}", "boxed_or_line", "42", "boxed"),
        # the last complete box counts
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "boxed", "\\frac{1}{2}", "boxed"),
        # nested braces and escaped set braces stay inside the box
        ("\\boxed{\\{1, \\frac{2}{3}\\}}", "boxed", "\\{1, \\frac{2}{3}\\}", "boxed"),
        # \boxed{\boxed{x}} unwraps
        ("\\boxed{\\boxed{7}}", "boxed", "7", "boxed"),
        # space form of \boxed
        ("$\\boxed 9$", "boxed", "9", "boxed"),
        # \fbox is a box too
        ("\\fbox{12}", "boxed", "12", "boxed"),
        # unclosed box: nothing in boxed mode
        ("\\boxed{12", "boxed", None, None),
        # trailing Answer: line
        ("work...\nAnswer: 12", "boxed_or_line", "12", "answer_line"),
        # markdown-bold final answer line, $ and period stripped
        ("**Final Answer:** $\\frac{3}{4}$.", "boxed_or_line", "\\frac{3}{4}", "answer_line"),
        # GSM8K style
        ("48 + 24 = 72\n#### 72", "boxed_or_line", "72", "answer_line"),
        # "the answer is X" at the end of a sentence
        ("So the answer is 5.", "boxed_or_line", "5", "answer_line"),
        # <answer> tags (reasoning-gym / R1 convention)
        ("<think>hm</think><answer> B </answer>", "boxed_or_line", "B", "answer_tag"),
        # an Answer: line far above the end is not a *trailing* answer line
        ("Answer: 3\n" + "more text\n" * 5, "boxed_or_line", None, None),
        # boxed mode ignores answer lines
        ("Answer: 12", "boxed", None, None),
        # lenient falls back to the last number (a 135M model's "17 + 25 = 42")
        ("17 + 25 = 42", "lenient", "42", "last_number"),
        # lenient: negative and thousands-separated numbers
        ("it is −1,234, I think", "lenient", "-1,234", "last_number"),
        # lenient with nothing numeric
        ("no idea", "lenient", None, None),
        # raw mode returns the whole stripped response
        ("  (3 + 5) * 2 \n", "raw", "(3 + 5) * 2", "raw"),
    ],
)
def test_extract_answer(response, mode, expected, source):
    found = extract_answer(response, ExtractMode(mode))
    assert found.answer == expected
    assert found.source == source


@pytest.mark.parametrize(
    "text,expected",
    [
        ("42", Fraction(42)),  # plain integer
        ("-7", Fraction(-7)),  # negative
        ("+3", Fraction(3)),  # explicit plus
        ("42.0", Fraction(42)),  # trailing decimal zero
        ("1,234", Fraction(1234)),  # thousands separator
        ("1,2", None),  # not a valid thousands grouping
        ("$42$", Fraction(42)),  # math delimiters
        ("42 apples", Fraction(42)),  # unit words stripped
        ("\\text{42}", Fraction(42)),  # \text wrapper
        ("3/4", Fraction(3, 4)),  # slash fraction
        ("-\\frac{3}{4}", Fraction(-3, 4)),  # LaTeX fraction with sign
        ("5\\%", Fraction(5)),  # percent sign dropped
        ("1/0", None),  # division by zero is not a number
        ("x + 1", None),  # expressions are not numbers
        ("10**10**10", None),  # never evaluated
        ("9" * 60, Fraction(int("9" * 60))),  # 60 digits is the longest number parsed
        ("9" * 61, None),  # longer digit strings are refused
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def test_extraction_is_linear_on_hostile_input():
    hostile = [
        "\\boxed{" * 30_000,  # thousands of unclosed boxes
        "{" * 50_000 + "\\boxed 5 " * 5_000,  # brace soup
        "Answer: " * 20_000 + "\n" + "1" * 100_000,  # giant lines and numbers
        "<answer>" * 20_000,  # unclosed tags
    ]
    start = time.perf_counter()
    for text in hostile:
        for mode in ExtractMode:
            extract_answer(text, mode)
    assert time.perf_counter() - start < 3.0
