"""``k15/MultipleChoice-v0``: a question, lettered options, graded by the option letter.

Rows: a question (``question`` or ``problem``), options (``options`` or ``choices``: a
list, or a dict whose values are taken in key order) and ``answer``: a letter (``"B"``),
a 0-based index (``1``) or the exact text of the correct option. Column names are
overridable; optional difficulty and id columns as in Math-v0. Up to 26 options.

Without ``dataset`` a 5-question bundled sample is used.
"""

from __future__ import annotations

import string

from k15_envs.base import ReasoningEnv
from k15_envs.datasets import (
    DatasetError,
    DatasetSource,
    list_field,
    number_field,
    pick_column,
    read_rows,
    text_field,
)
from k15_envs.envs._common import bundled_dataset, source_stem
from k15_envs.extract import ExtractMode
from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS
from k15_envs.splits import SplitSpec, content_key, filter_split
from k15_envs.types import Problem
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.base import VerifierKind

__all__ = ["MultipleChoiceEnv", "CHOICE_INSTRUCTION"]

CHOICE_INSTRUCTION = "Answer with the letter of the correct option in \\boxed{}, e.g. \\boxed{A}."


def _answer_letter(source, lines, index, row, field, options) -> str:
    letters = string.ascii_uppercase[: len(options)]
    value = row.get(field)
    line = lines[index] if lines is not None else None
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(options):
            return letters[value]
        raise DatasetError(
            source,
            f"index {value} out of range for {len(options)} options",
            row=index,
            field=field,
            line=line,
        )
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if len(text) == 1 and text.upper() in letters:
            return text.upper()
        for letter, option in zip(letters, options, strict=True):
            if text == option.strip():
                return letter
        raise DatasetError(
            source,
            f"{text!r} is neither an option letter ({letters}) nor an option",
            row=index,
            field=field,
            line=line,
        )
    raise DatasetError(
        source,
        f"expected a letter, an index or option text, got {value!r:.40}",
        row=index,
        field=field,
        line=line,
    )


class MultipleChoiceEnv(ReasoningEnv):
    """Multiple choice, graded by letter.

    dataset: path or rows (None = sample). question_column / options_column /
    answer_column / difficulty_column / id_column: names (None = auto-detect).
    instruction: appended after the options. extract: ``boxed_or_line`` (default),
    ``boxed`` or ``lenient`` (also accepts a bare option letter near the end).
    split: None (every row) | ``"train"`` | ``"test"``: the rows of that split, in order
    (``k15_envs.splits``: by sha256 of the question and options); test_fraction, split_salt.
    """

    def __init__(
        self,
        dataset: DatasetSource | None = None,
        *,
        question_column: str | None = None,
        options_column: str | None = None,
        answer_column: str | None = None,
        difficulty_column: str | None = None,
        id_column: str | None = None,
        instruction: str = CHOICE_INSTRUCTION,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        split: str | None = None,
        test_fraction: float = 0.1,
        split_salt: str = "",
    ) -> None:
        split_spec = SplitSpec(split, test_fraction, split_salt)
        super().__init__(
            verifier=make_verifier(VerifierKind.CHOICE, extract=extract),
            max_prompt_chars=max_prompt_chars,
            max_response_chars=max_response_chars,
            render_mode=render_mode,
        )
        source, rows, lines = read_rows(
            bundled_dataset("choice_sample.jsonl") if dataset is None else dataset
        )
        columns = (
            pick_column(source, rows, question_column, ("question", "problem"), required=True),
            pick_column(source, rows, options_column, ("options", "choices"), required=True),
            pick_column(source, rows, answer_column, ("answer",), required=True),
            pick_column(source, rows, difficulty_column, ("difficulty", "level"), required=False),
            pick_column(source, rows, id_column, ("id",), required=False),
        )
        stem = source_stem(source)
        problems = [
            self._row_problem(source, lines, i, row, columns, stem, instruction)
            for i, row in enumerate(rows)
        ]
        keys = [
            content_key(row[columns[0]].strip(), *problem.metadata["options"])
            for row, problem in zip(rows, problems, strict=True)
        ]
        self.split_spec = split_spec
        what = f"k15/MultipleChoice-v0 {source}"
        self._problems = filter_split(problems, keys, split_spec, what)

    def _row_problem(self, source, lines, index, row, columns, stem, instruction) -> Problem:
        question_col, options_col, answer_col, difficulty_col, id_col = columns
        question = text_field(source, lines, index, row, question_col)
        options = list_field(source, lines, index, row, options_col)
        if len(options) > 26:
            raise DatasetError(
                source, f"{len(options)} options; at most 26", row=index, field=options_col
            )
        letter = _answer_letter(source, lines, index, row, answer_col, options)
        letters = string.ascii_uppercase[: len(options)]
        difficulty = 0.0
        if difficulty_col is not None and row.get(difficulty_col) is not None:
            difficulty = number_field(source, lines, index, row, difficulty_col)
        pairs = zip(letters, options, strict=True)
        listing = "\n".join(f"{letter}. {option.strip()}" for letter, option in pairs)
        prompt = f"{question.strip()}\n\n{listing}"
        prompt = f"{prompt}\n\n{instruction}" if instruction else prompt
        if len(prompt) > self.max_prompt_chars:
            raise DatasetError(
                source,
                f"prompt longer than max_prompt_chars={self.max_prompt_chars}",
                row=index,
                field=question_col,
            )
        row_id = row.get(id_col) if id_col is not None else None
        problem_id = f"mc/{stem}/{row_id}" if row_id not in (None, "") else f"mc/{stem}/{index:05d}"
        metadata = {"letters": letters, "options": options}
        return Problem(problem_id, prompt, letter, difficulty, metadata)

    @property
    def _num_problems(self) -> int:
        return len(self._problems)

    def _make_problem(self, index: int) -> Problem:
        return self._problems[index]
