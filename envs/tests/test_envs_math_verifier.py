"""Math verifier: table of (gold, prediction, expected) plus adversarial answers that must
come back within the timeout, also from worker threads."""

from __future__ import annotations

import threading
import time

import pytest
from k15_envs.types import Problem
from k15_envs.verifiers import MathVerifier
from k15_envs.verifiers.math import gold_answer_text

TIMEOUT_S = 1.5  # deadline for the adversarial cases


@pytest.fixture(scope="module")
def verifier():
    """For correctness: a generous deadline, so a loaded machine cannot flip a verdict."""
    v = MathVerifier(timeout_s=10.0, num_workers=2)
    yield v
    v.close()


@pytest.fixture(scope="module")
def fast_verifier():
    v = MathVerifier(timeout_s=TIMEOUT_S, num_workers=2)
    yield v
    v.close()


def _problem(gold: str) -> Problem:
    return Problem("math/test", "q", gold, 0.0, {})


TABLE = [
    ("42", "\\boxed{42}", True),  # identical integers
    ("42", "\\boxed{42.0}", True),  # decimal form of an integer
    ("42", "\\boxed{43}", False),  # wrong integer
    ("\\frac{1}{2}", "\\boxed{0.5}", True),  # fraction vs decimal
    ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", True),  # unsimplified fraction
    ("\\frac12", "\\boxed{1/2}", True),  # LaTeX shorthand vs slash
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", True),  # equivalent radicals
    ("(3, \\infty)", "\\boxed{(3,\\infty)}", True),  # open interval
    ("(3, \\infty)", "\\boxed{[3,\\infty)}", False),  # closed vs open endpoint
    ("[1, 3]", "\\boxed{[1, 3]}", True),  # closed interval
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}", True),  # sets ignore order
    ("\\{1, 2\\}", "\\boxed{\\{1, 3\\}}", False),  # different sets
    ("x^2 + 2x + 1", "\\boxed{(x+1)^2}", True),  # symbolic equivalence
    ("5", "\\boxed{5 \\text{ cm}}", True),  # LaTeX unit stripped
    ("72", "Answer: 72 dollars", True),  # plain-text unit stripped, answer line
    ("1000", "\\boxed{1,000}", True),  # thousands separator
    ("25", "\\boxed{25\\%}", True),  # percent sign on a percent question
    ("3", "\\boxed{x = 3}", True),  # equation with the value on the right
    ("0.3", "\\boxed{\\frac{3}{10}}", True),  # decimal gold vs fraction
    ("Natalia sold ... #### 72", "#### 72", True),  # GSM8K gold and GSM8K-style answer
    ("so there are $\\boxed{6}$ divisors", "\\boxed{6}", True),  # MATH solution as gold
    ("42", "I think it is 42", False),  # no boxed / answer line: nothing extracted
    ("1", "\\boxed{10**10**10}", False),  # never evaluated into a giant integer
]


@pytest.mark.parametrize("gold,prediction,expected", TABLE)
def test_math_table(verifier, gold, prediction, expected):
    verdict = verifier.verify(_problem(gold), prediction)
    assert verdict.correct is expected, verdict
    assert verdict.reward == (1.0 if expected else 0.0)
    assert verdict.reason in ({"correct"} if expected else {"wrong", "no_answer"})


def test_no_answer_reason(verifier):
    verdict = verifier.verify(_problem("42"), "I think it is 42")
    assert (verdict.reason, verdict.extracted_answer) == ("no_answer", None)


def test_batch_matches_single(verifier):
    problems = [_problem(g) for g, _, _ in TABLE]
    verdicts = verifier.verify_many(problems, [p for _, p, _ in TABLE])
    assert [v.correct for v in verdicts] == [e for _, _, e in TABLE]


@pytest.mark.parametrize(
    "gold,answer",
    [
        ("Natalia sold 24 clips.\n#### 72", "72"),  # GSM8K: after ####
        ("1,234 ... #### 1,234", "1234"),  # GSM8K thousands separator dropped
        ("we get $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # MATH: last boxed
        ("(3, \\infty)", "(3, \\infty)"),  # plain gold unchanged
    ],
)
def test_gold_answer_text(gold, answer):
    assert gold_answer_text(gold) == answer


ADVERSARIAL = [
    "\\boxed{10^{10^{10}}}",  # a power tower sympy would try to evaluate
    "\\boxed{" + "(" * 60 + "1" + ")" * 60 + "}",  # deep nesting (slow LaTeX parse)
    "\\boxed{" + "x+" * 30_000 + "1}",  # huge LaTeX
    "\\boxed{" + "\\frac{1}{" * 200 + "2" + "}" * 200 + "}",  # deeply nested fractions
    "Answer: 9**9**9**9",  # a power tower as a plain expression
]


@pytest.mark.parametrize("answer", ADVERSARIAL, ids=["tower", "nested", "huge", "fracs", "expr"])
def test_adversarial_answers_return_within_timeout_from_a_thread(fast_verifier, answer):
    fast_verifier._get_resource().warm_up()  # start-up time is not part of the deadline
    result = {}

    def grade():
        start = time.monotonic()
        result["verdict"] = fast_verifier.verify(_problem("42"), answer)
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=grade)
    thread.start()
    thread.join(timeout=TIMEOUT_S + 30)
    assert not thread.is_alive()
    assert result["verdict"].reward == 0.0
    assert result["verdict"].reason in ("timeout", "wrong")
    assert result["elapsed"] < TIMEOUT_S + 2.0


def test_many_threads_share_the_bounded_pool(fast_verifier):
    pool = fast_verifier._get_resource()
    answers = ["\\boxed{42}", "\\boxed{41}", ADVERSARIAL[0]] * 3
    verdicts: list = [None] * len(answers)

    def grade(i):
        verdicts[i] = fast_verifier.verify(_problem("42"), answers[i])

    threads = [threading.Thread(target=grade, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [v.reason for v in verdicts[:2]] == ["correct", "wrong"]
    assert verdicts[2].reason in ("timeout", "wrong")
    assert all(v.correct == (a == "\\boxed{42}") for v, a in zip(verdicts, answers, strict=True))
    assert pool._state.live <= pool.size == 2


def test_verifier_pickles_without_its_pool(verifier):
    import pickle

    verifier._get_resource()
    clone = pickle.loads(pickle.dumps(verifier))
    assert clone._resource is None and clone.timeout_s == verifier.timeout_s
