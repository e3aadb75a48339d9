"""Problems shown as images: ``k15/RenderedArithmetic-v0``, ``k15/RenderedMath-v0``,
``k15/Rendered-v0`` (any text task) and ``k15/ImageQA-v0`` (a user's image dataset).

The observation is ``{"image": uint8 array (H, W, 3), "text": instruction}`` in a
``gymnasium.spaces.Dict``; the action is still the response text, and the grade comes from
the text task's own verifier, so a rendered problem is graded exactly as its text twin.
Each :class:`~k15_envs.types.Problem` carries its image as encoded bytes in
``metadata["image"]`` (what a vision-language policy reads: any size, any format Pillow
opens) and the text it shows in ``metadata["question"]``; ``Problem.prompt`` is the
instruction that goes beside the image.

Rendered envs draw ``question`` with :func:`k15_envs.render.render_text` (``render=`` takes
its :class:`~k15_envs.render.RenderStyle` fields: size, font, noise, rotation, jitter);
problem ``i`` is drawn with the seed ``(render_seed, i)``, so images are reproducible. The
task's own options (``difficulty``, ``size``, ``dataset``, ``split``...) pass through.

``k15/ImageQA-v0`` reads rows of (image, question, answer) from ``.jsonl``/``.parquet`` or
row dicts: the image is a path (relative to the dataset file's folder), raw bytes, a
``data:image/...;base64,`` string or a Hugging Face ``{"bytes": ..., "path": ...}`` struct;
answers are graded by math-verify. Every image is decoded when the env is built, so a
broken one is an error naming its row and column, not a zero reward later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from k15_envs.base import ReasoningEnv
from k15_envs.datasets import (
    DatasetError,
    DatasetSource,
    answer_field,
    pick_column,
    read_rows,
    text_field,
)
from k15_envs.envs._common import BOXED_INSTRUCTION, bundled_dataset, source_stem
from k15_envs.render import RenderStyle, decode_image, letterbox, png_bytes, render_text
from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS, ReasoningText
from k15_envs.splits import SplitSpec, content_key, filter_split
from k15_envs.types import Problem
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.base import Verifier, VerifierKind
from k15_envs.verifiers.math import gold_answer_text

__all__ = [
    "ImageProblemEnv",
    "RenderedEnv",
    "RenderedArithmeticEnv",
    "RenderedMathEnv",
    "ImageQAEnv",
    "RENDERED_INSTRUCTION",
]

RENDERED_INSTRUCTION = (
    "Solve the problem shown in the image. Reason step by step, and put your final answer "
    "within \\boxed{}."
)


class ImageProblemEnv(ReasoningEnv):
    """A :class:`ReasoningEnv` whose observation is ``{"image", "text"}`` (see the module
    docstring); subclasses put encoded image bytes in ``Problem.metadata["image"]``."""

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}

    def __init__(self, *, verifier: Verifier, image_shape: tuple[int, int], **kwargs) -> None:
        super().__init__(verifier=verifier, **kwargs)
        self.image_height, self.image_width = (int(v) for v in image_shape)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(
                    0, 255, (self.image_height, self.image_width, 3), dtype=np.uint8
                ),
                "text": ReasoningText(self.max_prompt_chars, min_length=1),
            }
        )

    def image_array(self, problem: Problem) -> np.ndarray:
        """The problem's image as the observation holds it: ``(H, W, 3)`` uint8, scaled to
        fit and centred (rendered images already have the shape)."""
        image = decode_image(problem.metadata["image"], what=problem.id)
        if (image.height, image.width) == (self.image_height, self.image_width):
            return np.asarray(image, dtype=np.uint8)
        return letterbox(image, self.image_width, self.image_height)

    def _observation(self) -> dict[str, Any]:
        assert self._current is not None
        return {"image": self.image_array(self._current), "text": self._current.prompt}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = super().reset(seed=seed, options=options)
        return self._observation(), info

    def step(self, action: str):
        _, reward, terminated, truncated, info = super().step(action)
        return self._observation(), reward, terminated, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._current is None else self.image_array(self._current)
        return super().render()


class RenderedEnv(ImageProblemEnv):
    """A text task's problems drawn as images.

    task: the text env id (e.g. ``"k15/Arithmetic-v0"``); its options go in ``**task_options``
        (a task with an ``instruction`` option gets ``""``, so only the question is drawn).
    render: :class:`RenderStyle` or a dict of its fields. render_seed: seed of the noise,
        jitter and rotation (problem ``i`` uses ``(render_seed, i)``).
    instruction: the text beside the image (``Problem.prompt``).
    """

    def __init__(
        self,
        task: str = "k15/Arithmetic-v0",
        *,
        render: RenderStyle | dict[str, Any] | None = None,
        render_seed: int = 0,
        instruction: str = RENDERED_INSTRUCTION,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        **task_options: Any,
    ) -> None:
        if not isinstance(task, str) or task not in gym.registry:
            raise ValueError(f"render: task {task!r} is not a registered env id")
        if not instruction or not instruction.strip():
            raise ValueError(
                "render: instruction must be non-empty text (it goes beside the image)"
            )
        self.style = RenderStyle.from_options(render)
        if _accepts(task, "instruction"):
            task_options = {"instruction": "", **task_options}
        self.task = task
        self.task_env: ReasoningEnv = gym.make(task, **task_options).unwrapped
        self.render_seed = int(render_seed)
        self.instruction = instruction
        super().__init__(
            verifier=self.task_env.verifier,
            image_shape=(self.style.height, self.style.width),
            max_prompt_chars=max_prompt_chars,
            max_response_chars=max_response_chars,
            render_mode=render_mode,
        )

    @property
    def _num_problems(self) -> int:
        return len(self.task_env)

    def _make_problem(self, index: int) -> Problem:
        text_problem = self.task_env.problem(index)
        question = text_problem.prompt.strip()
        image = render_text(
            question, self.style, (self.render_seed, index), what=f"problem {text_problem.id}"
        )
        metadata = {**text_problem.metadata, "image": png_bytes(image), "question": question}
        return Problem(
            f"rendered/{text_problem.id}",
            self.instruction,
            text_problem.answer,
            text_problem.difficulty,
            metadata,
        )

    def close(self) -> None:
        self.task_env.close()
        super().close()


class RenderedArithmeticEnv(RenderedEnv):
    """``k15/Arithmetic-v0`` drawn as images (its options: ``difficulty``, ``size``...)."""

    def __init__(self, **options: Any) -> None:
        super().__init__("k15/Arithmetic-v0", **options)


class RenderedMathEnv(RenderedEnv):
    """``k15/Math-v0`` drawn as images (its options: ``dataset``, ``split``...)."""

    def __init__(self, **options: Any) -> None:
        super().__init__("k15/Math-v0", **options)


def _accepts(env_id: str, option: str) -> bool:
    entry_point = gym.spec(env_id).entry_point
    creator = (
        gym.envs.registration.load_env_creator(entry_point)
        if isinstance(entry_point, str)
        else entry_point
    )
    return option in inspect.signature(creator).parameters


class ImageQAEnv(ImageProblemEnv):
    """(image, question, answer) rows from a file, graded by math-verify.

    dataset: ``.jsonl``/``.parquet`` path or a list of row dicts; None = the bundled
        12-row sample (shape counting, bar charts: smoke tests and demos only).
        Columns: ``image`` (or ``image_path``), ``question`` (or ``problem``), ``answer``;
        override with ``image_column`` / ``question_column`` / ``answer_column``.
    image_size: ``(height, width)`` of the observation's image (images are scaled to fit;
        ``Problem.metadata["image"]`` keeps the original bytes).
    instruction, extract, timeout_s, num_workers, sandbox, split, test_fraction,
        split_salt: as for ``k15/Math-v0`` (splits hash the question and the image bytes).
    """

    def __init__(
        self,
        dataset: DatasetSource | None = None,
        *,
        image_column: str | None = None,
        question_column: str | None = None,
        answer_column: str | None = None,
        image_size: tuple[int, int] = (448, 448),
        instruction: str = BOXED_INSTRUCTION,
        extract: str = "boxed_or_line",
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        sandbox: Any = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        split: str | None = None,
        test_fraction: float = 0.1,
        split_salt: str = "",
    ) -> None:
        grader = make_verifier(
            VerifierKind.MATH, extract=extract, timeout_s=timeout_s,
            num_workers=num_workers, sandbox=sandbox,
        )  # fmt: skip
        super().__init__(
            verifier=grader,
            image_shape=tuple(image_size),
            max_prompt_chars=max_prompt_chars,
            max_response_chars=max_response_chars,
            render_mode=render_mode,
        )
        source, rows, lines = read_rows(
            bundled_dataset("imageqa_sample.jsonl") if dataset is None else dataset
        )
        base = Path(source).parent if source != "<rows>" else Path.cwd()
        columns = (
            pick_column(source, rows, image_column, ("image", "image_path"), required=True),
            pick_column(source, rows, question_column, ("question", "problem"), required=True),
            pick_column(source, rows, answer_column, ("answer",), required=True),
        )
        stem = source_stem(source)
        problems, keys = [], []
        for index, row in enumerate(rows):
            problem = self._row_problem(source, lines, index, row, columns, base, stem, instruction)
            problems.append(problem)
            image_digest = hashlib.sha256(problem.metadata["image"]).hexdigest()
            keys.append(content_key(problem.metadata["question"], image_digest))
        self.split_spec = SplitSpec(split, test_fraction, split_salt)
        self._problems = filter_split(problems, keys, self.split_spec, f"k15/ImageQA-v0 {source}")

    def _row_problem(self, source, lines, index, row, columns, base, stem, instruction) -> Problem:
        image_col, question_col, answer_col = columns
        line = lines[index] if lines is not None else None
        data = _image_bytes(row.get(image_col), base, source, index, image_col, line)
        try:
            decode_image(data)
        except ValueError as exc:
            raise DatasetError(source, str(exc), row=index, field=image_col, line=line) from None
        question = text_field(source, lines, index, row, question_col).strip()
        answer = answer_field(source, lines, index, row, answer_col)
        gold = gold_answer_text(answer)
        if not gold:
            raise DatasetError(source, "no final answer", row=index, field=answer_col, line=line)
        prompt = f"{question}\n\n{instruction}" if instruction else question
        if len(prompt) > self.max_prompt_chars:
            raise DatasetError(
                source, f"prompt longer than max_prompt_chars={self.max_prompt_chars}",
                row=index, field=question_col, line=line,
            )  # fmt: skip
        metadata = {"gold": gold, "question": question, "image": data}
        row_id = row.get("id")
        suffix = row_id if isinstance(row_id, (str, int)) and str(row_id) else f"{index:05d}"
        return Problem(f"imageqa/{stem}/{suffix}", prompt, answer, 0.0, metadata)

    @property
    def _num_problems(self) -> int:
        return len(self._problems)

    def _make_problem(self, index: int) -> Problem:
        return self._problems[index]


def _image_bytes(value: Any, base: Path, source: str, row: int, field: str, line) -> bytes:
    """Encoded image bytes from a path, bytes, a base64 data URL or a ``{"bytes", "path"}``
    struct (Hugging Face datasets' Image feature)."""

    def fail(message: str) -> DatasetError:
        return DatasetError(source, message, row=row, field=field, line=line)

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str) or not value.strip():
        raise fail(f"expected an image path, bytes or a data URL, got {type(value).__name__}")
    if value.startswith("data:image/"):
        _, _, payload = value.partition(",")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise fail(f"bad base64 in the data URL: {exc}") from None
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise fail(f"image file not found: {path}")
    return path.read_bytes()
