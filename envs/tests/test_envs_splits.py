"""Train/test splits by construction (``k15_envs.splits``): disjoint whatever the seeds,
covering the unsplit pool, ``split=None`` unchanged, clear errors."""

from __future__ import annotations

import hashlib

import pytest
from k15_envs.envs.arithmetic import ArithmeticEnv
from k15_envs.envs.arithmetic import _split_key as arithmetic_key
from k15_envs.envs.choice_env import MultipleChoiceEnv
from k15_envs.envs.code_env import CodeEnv, HumanEvalEnv
from k15_envs.envs.math_env import MathEnv
from k15_envs.envs.rgym_envs import CountdownEnv, GSMSymbolicEnv, ReasoningGymEnv
from k15_envs.splits import SplitError, SplitSpec, split_of, split_unit

ALL_ENVS = {
    "arithmetic": lambda **kw: ArithmeticEnv(1, size=5, **kw),
    "gsm": lambda **kw: GSMSymbolicEnv(size=3, **kw),
    "countdown": lambda **kw: CountdownEnv(size=3, **kw),
    "rgym": lambda **kw: ReasoningGymEnv("chain_sum", size=3, **kw),
    "math": lambda **kw: MathEnv(**kw),
    "choice": lambda **kw: MultipleChoiceEnv(**kw),
    "code": lambda **kw: CodeEnv(**kw),
    "humaneval": lambda **kw: HumanEvalEnv(**kw),
}
# digests of split=None problems, computed with the code before splits existed
UNSPLIT = {
    "arithmetic": (lambda: ArithmeticEnv("1-6", size=60, seed=7), 60, "02d5522850aed1d5"),
    "gsm": (lambda: GSMSymbolicEnv(size=20, seed=2), 20, "7adaf59cbeba62c8"),
    "countdown": (lambda: CountdownEnv([1, 2], size=20, seed=3), 20, "501043cc5c5040a5"),
    "rgym": (lambda: ReasoningGymEnv("chain_sum", size=20, seed=4), 20, "25931da5b663d651"),
    "math": (lambda: MathEnv(), 12, "80af374f3a2013e7"),
    "choice": (lambda: MultipleChoiceEnv(), 5, "a86b285c04387691"),
    "code": (lambda: CodeEnv(), 3, "f4ba476d70380ddc"),
    "humaneval": (lambda: HumanEvalEnv(), 164, "697e849c95ee13d1"),
}


def contents(env) -> set[tuple[str, str]]:
    """The (prompt, answer) of every problem of ``env``."""
    return {(env.problem(i).prompt, env.problem(i).answer) for i in range(len(env))}


def digest(env) -> str:
    """A short hash of every problem's id, prompt, answer and difficulty, in order."""
    h = hashlib.sha256()
    for i in range(len(env)):
        p = env.problem(i)
        h.update(repr((p.id, p.prompt, p.answer, p.difficulty)).encode())
    return h.hexdigest()[:16]


def closing(*envs):
    for env in envs:
        env.close()


# -- the rule ---------------------------------------------------------------------------------
def test_split_unit_is_the_documented_sha256_rule():
    key, salt = "Calculate 3 + 5.", "s"
    digest_ = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    assert split_unit(key, salt) == int.from_bytes(digest_[:8], "big") / 2**64
    for fraction in (0.05, 0.1, 0.5, 0.9):
        expected = "test" if split_unit(key, salt) < fraction else "train"
        assert split_of(key, fraction, salt) == expected
    assert split_unit(key, salt) != split_unit(key)  # the salt is part of the hash


def test_test_fraction_is_roughly_right_and_the_salt_redraws():
    keys = [f"problem {i}" for i in range(20000)]
    share = sum(split_of(k, 0.1) == "test" for k in keys) / len(keys)
    assert 0.09 < share < 0.11
    salted = {k for k in keys if split_of(k, 0.1, "other") == "test"}
    plain = {k for k in keys if split_of(k, 0.1) == "test"}
    assert 0.07 < len(salted & plain) / len(plain) < 0.13  # independent draws: ~10% overlap


def test_arithmetic_test_fraction_on_a_large_pool():
    env = ArithmeticEnv(3, size=4000, seed=5)
    spec = SplitSpec("test", 0.25)
    keys = {arithmetic_key(p) for p in map(env.problem, range(4000))}
    share = sum(spec.contains(k) for k in keys) / len(keys)
    assert 0.22 < share < 0.28


@pytest.mark.parametrize("name", sorted(ALL_ENVS))
def test_arguments_are_validated_naming_the_field(name):
    make = ALL_ENVS[name]
    with pytest.raises(ValueError, match=r"^split must be 'train', 'test' or None, got 'val'"):
        make(split="val")
    for bad in (0, 1, 1.5, -0.1, "0.1", True):
        with pytest.raises(ValueError, match=r"^test_fraction must be"):
            make(split="test", test_fraction=bad)
    with pytest.raises(ValueError, match=r"^split_salt must be a str"):
        make(split="test", split_salt=3)


@pytest.mark.parametrize("name", sorted(UNSPLIT))
def test_split_none_is_unchanged(name):
    make, size, expected = UNSPLIT[name]
    env = make()
    try:
        assert (len(env), digest(env)) == (size, expected)
    finally:
        env.close()


# -- generated envs -------------------------------------------------------------------------
def test_arithmetic_train_and_test_cover_level_1_and_are_disjoint():
    pool = ArithmeticEnv(1, size=3000, seed=0)
    everything = contents(pool)
    assert len(everything) == 100
    by_expr = {pool.problem(i).metadata["expression"]: pool.problem(i) for i in range(3000)}
    n_test = sum(split_of(arithmetic_key(p), 0.1) == "test" for p in by_expr.values())
    train = ArithmeticEnv(1, size=100 - n_test, seed=1, split="train")
    test = ArithmeticEnv(1, size=n_test, seed=2, split="test")
    assert not contents(train) & contents(test)
    assert contents(train) | contents(test) == everything


def test_arithmetic_split_is_a_subsequence_of_the_unsplit_stream():
    unsplit = ArithmeticEnv([2, 5], size=2000, seed=3)
    test = ArithmeticEnv([2, 5], size=30, seed=3, split="test", test_fraction=0.2)
    indices = [int(test.problem(i).id[-5:]) for i in range(30)]
    assert indices == sorted(indices)
    for i, j in enumerate(indices):
        a, b = test.problem(i), unsplit.problem(j)
        assert (a.id, a.prompt, a.answer, a.difficulty) == (b.id, b.prompt, b.answer, b.difficulty)


def test_arithmetic_disjoint_with_other_seeds_and_instructions():
    train = ArithmeticEnv([2, 3, 4], size=400, seed=11, split="train")
    test = ArithmeticEnv([2, 3, 4], size=100, seed=12, split="test", instruction="")
    exprs = lambda env: {env.problem(i).metadata["expression"] for i in range(len(env))}  # noqa: E731
    assert len(exprs(train)) == 400 and len(exprs(test)) == 100  # distinct problems
    assert not exprs(train) & exprs(test)


def test_exhausted_generated_split_names_env_level_split_and_count():
    pattern = (
        r"^k15/Arithmetic-v0 difficulty=\[1\] split='test' \(test_fraction=0\.1\): "
        r"only (\d+) distinct problems in that split .*fewer than size=50"
    )
    with pytest.raises(SplitError, match=pattern):
        ArithmeticEnv(1, size=50, split="test")


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: GSMSymbolicEnv([1, 2], size=kw.pop("size"), **kw),
        lambda **kw: CountdownEnv(1, size=kw.pop("size"), **kw),
        lambda **kw: ReasoningGymEnv("chain_sum", size=kw.pop("size"), **kw),
    ],
    ids=["gsm", "countdown", "rgym"],
)
def test_reasoning_gym_splits_are_disjoint_across_seeds(make):
    train = make(size=24, seed=0, split="train", test_fraction=0.3)
    test = make(size=8, seed=1, split="test", test_fraction=0.3)
    unsplit = make(size=8, seed=1)
    try:
        assert len(contents(train)) == 24 and len(contents(test)) == 8
        assert not contents(train) & contents(test)
        questions = lambda e: {e.problem(i).metadata["entry"]["question"] for i in range(len(e))}  # noqa: E731
        assert not questions(train) & questions(test)
        first = test.problem(0)
        index = int(first.id[-5:])
        if index < len(unsplit):  # the same problem as the unsplit env's at that index
            same = unsplit.problem(index)
            assert (same.id, same.prompt, same.answer) == (first.id, first.prompt, first.answer)
    finally:
        closing(train, test, unsplit)


def test_reasoning_gym_exhausted_split_names_the_env():
    with pytest.raises(SplitError, match=r"^k15/ReasoningGym-v0 dataset='chain_sum'"):
        ReasoningGymEnv(
            "chain_sum",
            size=300,
            split="test",
            config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
            test_fraction=0.5,
        )


# -- loaded datasets ------------------------------------------------------------------------
MATH_ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(300)]
CHOICE_ROWS = [
    {"question": f"Which is {i}?", "options": [str(i), str(i + 1)], "answer": "A"}
    for i in range(200)
]
CODE_ROWS = [
    {
        "prompt": f"def f{i}(x):\n    '''Return x + {i}.'''\n",
        "test": f"def check(c):\n    assert c(0) == {i}\n",
        "entry_point": f"f{i}",
    }
    for i in range(100)
]


@pytest.mark.parametrize(
    ("cls", "rows"),
    [(MathEnv, MATH_ROWS), (MultipleChoiceEnv, CHOICE_ROWS), (CodeEnv, CODE_ROWS)],
    ids=["math", "choice", "code"],
)
def test_loaded_splits_partition_the_rows_in_order(cls, rows):
    full = cls(rows)
    train = cls(rows, split="train", test_fraction=0.2)
    test = cls(rows, split="test", test_fraction=0.2)
    try:
        assert not contents(train) & contents(test)
        assert contents(train) | contents(test) == contents(full)
        assert len(train) + len(test) == len(full)
        assert 0.1 < len(test) / len(full) < 0.3
        ids = [test.problem(i).id for i in range(len(test))]
        assert ids == sorted(ids)  # file order, original row ids
        by_id = {full.problem(i).id: full.problem(i) for i in range(len(full))}
        assert all(by_id[test.problem(i).id] == test.problem(i) for i in range(len(test)))
    finally:
        closing(full, train, test)


def test_humaneval_splits_partition_its_164_problems():
    train, test = HumanEvalEnv(split="train"), HumanEvalEnv(split="test")
    assert len(train) + len(test) == 164
    assert not contents(train) & contents(test)


def test_a_loaded_split_with_no_rows_is_a_clear_error():
    rows = [r for r in MATH_ROWS if split_of(r["problem"], 0.1) == "train"][:5]
    with pytest.raises(SplitError, match=r"^k15/Math-v0 <rows> split='test'.*none of its 5 rows"):
        MathEnv(rows, split="test")
