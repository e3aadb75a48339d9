"""``k15/Math-v0``: math word problems from a user's ``.jsonl`` / ``.parquet`` file, graded
with math-verify in sandboxed worker processes (default) or by a judge model
(``verifier="judge"``, see :mod:`k15_envs.verifiers.judge`).

Rows need a problem column (``problem`` or ``question``; override with ``problem_column``)
and an ``answer`` column (override with ``answer_column``): a plain answer (``42``,
``\\frac{1}{2}``, ``(3, \\infty)``, ``\\{1, 2\\}``), a solution ending in ``\\boxed{}``, or
GSM8K's ``... #### 72``. Optional: a difficulty column (``difficulty`` or ``level``;
``"Level 3"`` reads as 3.0) and an id column (``id`` or ``unique_id``).

Without ``dataset`` a 12-problem bundled sample is used (smoke tests and demos only).

Example::

    import gymnasium as gym, k15_envs
    env = gym.make("k15/Math-v0", dataset="math500.jsonl")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("... so the answer is \\\\boxed{42}")

    # a chain-of-thought judge on an OpenAI-compatible server instead of math-verify
    env = gym.make("k15/Math-v0", dataset="math500.jsonl", verifier="judge",
                   judge={"base_url": "http://127.0.0.1:8000/v1", "model": "k15"})
"""

from __future__ import annotations

import inspect
from typing import Any

from k15_envs.base import ReasoningEnv
from k15_envs.datasets import (
    DatasetError,
    DatasetSource,
    answer_field,
    number_field,
    pick_column,
    read_rows,
    text_field,
)
from k15_envs.envs._common import BOXED_INSTRUCTION, bundled_dataset, source_stem
from k15_envs.extract import ExtractMode
from k15_envs.sandbox import SandboxConfig
from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS
from k15_envs.splits import SplitSpec, content_key, filter_split
from k15_envs.types import Problem
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.base import Verifier, VerifierKind
from k15_envs.verifiers.math import gold_answer_text

__all__ = ["MathEnv"]


class MathEnv(ReasoningEnv):
    """Math problems from a file, graded by math-verify.

    dataset: path to ``.jsonl``/``.json`` (JSON lines) or ``.parquet``, or a list of row
        dicts; None = bundled sample.
    problem_column / answer_column / difficulty_column / id_column: column names
        (None = auto-detect as described in the module docstring).
    instruction: appended to each problem (default asks for ``\\boxed{}``).
    extract: ``boxed`` | ``boxed_or_line`` (default) | ``lenient``.
    timeout_s: hard per-answer grading deadline. num_workers: grading processes.
    sandbox: overrides of the grading-worker sandbox.
    split: None (every row) | ``"train"`` | ``"test"``: the rows of that split, in order
        (``k15_envs.splits``: by sha256 of the problem text); test_fraction, split_salt.
    verifier: ``"math"`` (default: math-verify) | ``"judge"`` (a judge model decides; it
        understands words, units and percentages, at the cost of a model call per answer).
    judge: the judge's options when ``verifier="judge"``: ``base_url`` and ``model`` of an
        OpenAI-compatible endpoint, or ``backend`` (e.g. ``rllib_k15.data.judge.EngineJudge``),
        plus ``timeout_s``, ``max_retries``, ``max_tokens``, ``temperature``, ``concurrency``,
        ``cache_size``, ``cache_path``, ``tail_chars`` (see ``JudgeVerifier``). The env's
        ``extract`` mode finds the final answer shown to the judge.
    """

    def __init__(
        self,
        dataset: DatasetSource | None = None,
        *,
        problem_column: str | None = None,
        answer_column: str | None = None,
        difficulty_column: str | None = None,
        id_column: str | None = None,
        instruction: str = BOXED_INSTRUCTION,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        sandbox: SandboxConfig | dict | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        split: str | None = None,
        test_fraction: float = 0.1,
        split_salt: str = "",
        verifier: str = "math",
        judge: dict[str, Any] | None = None,
    ) -> None:
        split_spec = SplitSpec(split, test_fraction, split_salt)
        if verifier == VerifierKind.MATH.value and judge is None:
            grader = make_verifier(
                VerifierKind.MATH,
                extract=extract,
                timeout_s=timeout_s,
                num_workers=num_workers,
                sandbox=sandbox,
            )
        else:
            grader = _judge_verifier(verifier, judge, extract)
        super().__init__(
            verifier=grader,
            max_prompt_chars=max_prompt_chars,
            max_response_chars=max_response_chars,
            render_mode=render_mode,
        )
        source, rows, lines = read_rows(
            bundled_dataset("math_sample.jsonl") if dataset is None else dataset
        )
        columns = (
            pick_column(source, rows, problem_column, ("problem", "question"), required=True),
            pick_column(source, rows, answer_column, ("answer",), required=True),
            pick_column(source, rows, difficulty_column, ("difficulty", "level"), required=False),
            pick_column(source, rows, id_column, ("id", "unique_id"), required=False),
        )
        stem = source_stem(source)
        problems = [
            self._row_problem(source, lines, i, row, columns, stem, instruction)
            for i, row in enumerate(rows)
        ]
        keys = [content_key(row[columns[0]].strip()) for row in rows]
        self.split_spec = split_spec
        self._problems = filter_split(problems, keys, split_spec, f"k15/Math-v0 {source}")

    def _row_problem(self, source, lines, index, row, columns, stem, instruction) -> Problem:
        problem_col, answer_col, difficulty_col, id_col = columns
        text = text_field(source, lines, index, row, problem_col)
        answer = answer_field(source, lines, index, row, answer_col)
        gold = gold_answer_text(answer)
        if not gold:
            raise DatasetError(source, "no final answer after '####'", row=index, field=answer_col)
        difficulty = 0.0
        if difficulty_col is not None and row.get(difficulty_col) is not None:
            difficulty = number_field(source, lines, index, row, difficulty_col)
        row_id = row.get(id_col) if id_col is not None else None
        problem_id = (
            f"math/{stem}/{row_id}" if row_id not in (None, "") else f"math/{stem}/{index:05d}"
        )
        prompt = f"{text.strip()}\n\n{instruction}" if instruction else text.strip()
        if len(prompt) > self.max_prompt_chars:
            raise DatasetError(
                source,
                f"prompt longer than max_prompt_chars={self.max_prompt_chars}",
                row=index,
                field=problem_col,
            )
        return Problem(
            problem_id, prompt, answer, difficulty, {"gold": gold, "question": text.strip()}
        )

    @property
    def _num_problems(self) -> int:
        return len(self._problems)

    def _make_problem(self, index: int) -> Problem:
        return self._problems[index]


def _judge_verifier(verifier: str, judge: dict[str, Any] | None, extract: str) -> Verifier:
    """The ``judge`` verifier from the env's ``judge`` options (clear errors for bad ones)."""
    choices = (VerifierKind.MATH.value, VerifierKind.JUDGE.value)
    if verifier not in choices:
        raise ValueError(f"k15/Math-v0: verifier={verifier!r}; choose one of {list(choices)}")
    if verifier == VerifierKind.MATH.value:
        raise ValueError("k15/Math-v0: judge options were given but verifier='math'; pass "
                         "verifier='judge' to grade with the judge")  # fmt: skip
    if not isinstance(judge, dict) or not judge:
        raise ValueError(
            "k15/Math-v0: verifier='judge' needs judge={'base_url': 'http://HOST:PORT/v1', "
            f"'model': NAME}} or judge={{'backend': OBJECT}}; got judge={judge!r}"
        )
    from k15_envs.verifiers.judge import JudgeVerifier

    known = set(inspect.signature(JudgeVerifier).parameters) - {"extract"}
    unknown = sorted(set(judge) - known)
    if unknown:
        raise ValueError(f"k15/Math-v0: unknown judge option(s) {unknown}; known: {sorted(known)}")
    return make_verifier(VerifierKind.JUDGE, extract=extract, **judge)
