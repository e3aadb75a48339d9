"""reasoning-gym envs: ``k15/GSMSymbolic-v0``, ``k15/Countdown-v0``, ``k15/ReasoningGym-v0``.

All three generate problems with reasoning-gym (deterministic in ``(seed, index)``) and
grade with the dataset's own ``score_answer`` inside sandboxed grading workers (see
``k15_envs.verifiers.rgym``). Difficulty knobs:

- GSMSymbolic: reasoning-gym accepts only ``difficulty=1.0`` for ``gsm_symbolic``, so the
  knob here is the number of computation steps of the problem template (the ``=`` signs
  of its worked solution): level 1 = 2 steps (26 templates), 2 = 3 steps (24), 3 = 4 steps
  (20), 4 = 5+ steps (15). Default: all levels.
- Countdown: level 1 = 3 numbers <= 10, target 10-100; 2 = 4 numbers <= 20, target 20-200;
  3 = 4-5 numbers <= 50, target 100-500; 4 = 5-6 numbers <= 100, target 100-999.
- ReasoningGym: any dataset by name, with ``config`` overrides; ``difficulty`` (optional)
  sets the dataset's reasoning-gym curriculum to that level (1 = its easiest) for every
  attribute. Without it, problems carry difficulty 0.0.

Several levels (``[1, 2]``, ``"1-3"``) mix reproducibly per index, as in Arithmetic.
``split="train"|"test"``: the first ``size`` distinct problems of that split of the same
stream, keyed by dataset name and question (``k15_envs.splits``).
Every env also takes the keyword options of :class:`RGymOptions` (size, seed, instruction,
grading and space limits), listed in its signature.

``problem.metadata["config"]`` is the generator's config object itself (not a JSON copy:
JSON turned ``word_sorting``'s ``TextTransformation`` enum into a string, so its scorer
raised on every answer), and the grading worker rebuilds that exact dataset. A grader that
fails gives reason ``grading_error: ...`` and ``info["grading_error"] = True`` in ``step``.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from functools import cached_property, lru_cache
from typing import Any, ClassVar, SupportsFloat

from k15_envs.base import ReasoningEnv
from k15_envs.extract import ExtractMode
from k15_envs.levels import level_for_index, mix_seed, parse_levels, rng_for
from k15_envs.sandbox import SandboxConfig
from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS
from k15_envs.splits import SplitSpec, candidate_limit, content_key, take_split
from k15_envs.types import Problem
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.base import Verifier, VerifierKind

__all__ = ["GSMSymbolicEnv", "CountdownEnv", "ReasoningGymEnv", "RGymOptions", "COUNTDOWN_LEVELS"]

FINAL_ANSWER_INSTRUCTION = "Give your final answer in \\boxed{}."
COUNTDOWN_INSTRUCTION = (
    "Write one arithmetic expression that uses each number exactly once (no '=' sign) "
    "and put it in \\boxed{}, e.g. \\boxed{(1 + 2) * 3}."
)
COUNTDOWN_LEVELS: dict[int, dict[str, int]] = {
    1: dict(min_numbers=3, max_numbers=3, min_value=1, max_value=10, min_target=10, max_target=100),
    2: dict(min_numbers=4, max_numbers=4, min_value=1, max_value=20, min_target=20, max_target=200),
    3: dict(
        min_numbers=4, max_numbers=5, min_value=1, max_value=50, min_target=100, max_target=500
    ),
    4: dict(
        min_numbers=5, max_numbers=6, min_value=1, max_value=100, min_target=100, max_target=999
    ),
}
_GSM_SUFFIX = " Give the result as your final answer. Do not include units."


@dataclasses.dataclass(frozen=True)
class RGymOptions:
    """The keyword options every reasoning-gym env takes, with their defaults.

    size: number of problems (>= 1).
    seed: generator seed (problems are deterministic in ``(seed, index)``).
    instruction: appended to every question after a blank line (``""``: none); Countdown's
        default is its own (``COUNTDOWN_INSTRUCTION``).
    extract: the verifier's answer extraction mode.
    timeout_s: hard per-answer deadline of the sandboxed scorer.
    num_workers: grading worker processes (default ``min(2, cpu_count)``).
    sandbox: overrides of the grading workers' sandbox (``WORKER_DEFAULTS``).
    partial_credit: reward = the scorer's fractional score instead of 1.0/0.0.
    max_prompt_chars, max_response_chars: the observation and action space limits.
    render_mode: ``"ansi"`` or None.
    split: None (all problems) | ``"train"`` | ``"test"``; test_fraction, split_salt: the
        partition (``k15_envs.splits``: by sha256 of the dataset name and the question).
    """

    size: int = 1000
    seed: int = 0
    instruction: str = FINAL_ANSWER_INSTRUCTION
    extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE
    timeout_s: float = 10.0
    num_workers: int | None = None
    sandbox: SandboxConfig | dict | None = None
    partial_credit: bool = False
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_response_chars: int = MAX_RESPONSE_CHARS
    render_mode: str | None = None
    split: str | None = None
    test_fraction: float = 0.1
    split_salt: str = ""


_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(RGymOptions))


class _RGymEnv(ReasoningEnv):
    """Shared constructor: size/seed/levels, verifier wiring, prompt assembly.

    Subclasses take the :class:`RGymOptions` as ``**options``, bind them first with
    :meth:`_bind_options` and pass them on with their levels.
    """

    _option_defaults: ClassVar[dict[str, Any]] = {}  # this env's own option defaults
    _ascii_operators: ClassVar[bool] = False  # the verifier rewrites LaTeX operators

    @classmethod
    def _bind_options(cls, options: dict[str, Any]) -> RGymOptions:
        """``options`` over this env's defaults; an unknown name is the ``TypeError`` a
        signature listing the options explicitly would raise."""
        for name in options:
            if name not in _OPTION_NAMES:
                raise TypeError(
                    f"{cls.__init__.__qualname__}() got an unexpected keyword argument {name!r}"
                )
        return RGymOptions(**{**cls._option_defaults, **options})

    def __init__(self, levels: tuple[int, ...], options: RGymOptions) -> None:
        super().__init__(
            verifier=self._make_verifier(options),
            max_prompt_chars=options.max_prompt_chars,
            max_response_chars=options.max_response_chars,
            render_mode=options.render_mode,
        )
        if int(options.size) < 1:
            raise ValueError(f"size ({options.size}) must be >= 1")
        self.levels, self.size, self.seed = levels, int(options.size), int(options.seed)
        self.instruction = options.instruction
        self.split_spec = SplitSpec(options.split, options.test_fraction, options.split_salt)
        self._split_problems: list[Problem] | None = None
        self._pool_size = self.size  # reasoning-gym dataset size: the candidates a split scans
        if self.split_spec.split is not None:
            self._pool_size = candidate_limit(self.size, self.split_spec)

    def _apply_split(self, name: str) -> None:
        """With a split, keep its first ``size`` distinct problems (subclasses call it last)."""
        if self.split_spec.split is not None:
            what = f"{name} difficulty={list(self.levels)}"
            self._split_problems = take_split(
                self._generate, _split_key, self.size, self.split_spec, what
            )

    def _make_problem(self, index: int) -> Problem:
        """Problem ``index`` of the split, or of the unsplit stream."""
        if self._split_problems is not None:
            return self._split_problems[index]
        return self._generate(index)

    def _generate(self, index: int) -> Problem:
        """Problem ``index`` of the unsplit stream (deterministic in ``(seed, index)``)."""
        raise NotImplementedError

    def _make_verifier(self, options: RGymOptions) -> Verifier:
        """The sandboxed reasoning-gym verifier these options describe."""
        return make_verifier(
            VerifierKind.REASONING_GYM,
            extract=options.extract,
            timeout_s=options.timeout_s,
            num_workers=options.num_workers,
            sandbox=options.sandbox,
            partial_credit=options.partial_credit,
            ascii_operators=self._ascii_operators,
        )

    @property
    def _num_problems(self) -> int:
        """``size``."""
        return self.size

    def _prompt(self, question: str) -> str:
        """The question, then the instruction after a blank line (when there is one)."""
        return f"{question.strip()}\n\n{self.instruction}" if self.instruction else question.strip()

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """``ReasoningEnv.step`` plus ``info["grading_error"]``: True when the scorer (not the
        answer) failed; the reason then reads ``grading_error: ...``."""
        obs, reward, terminated, truncated, info = super().step(action)
        verdict = self._last[1] if self._last is not None else None
        info["grading_error"] = bool(verdict is not None and verdict.grading_error)
        return obs, reward, terminated, truncated, info


def _with_options_signature(cls: type[_RGymEnv]) -> type[_RGymEnv]:
    """Class decorator: ``cls.__init__(..., **options)`` shows the :class:`RGymOptions`
    fields as keyword-only parameters (defaults as ``cls`` applies them), so ``help()`` and
    ``inspect.signature`` list every option."""
    init = cls.__init__
    own = [p for p in inspect.signature(init).parameters.values() if p.kind is not p.VAR_KEYWORD]
    options = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=cls._option_defaults.get(field.name, field.default),
            annotation=field.type,
        )
        for field in dataclasses.fields(RGymOptions)
    ]
    init.__signature__ = inspect.signature(init).replace(parameters=own + options)
    return cls


# -- GSM symbolic ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def gsm_templates_by_level() -> dict[int, tuple[int, ...]]:
    """Template ids of reasoning-gym's ``gsm_symbolic`` grouped by computation steps."""
    from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as gs

    generators = gs.GSMSymbolicDataset(gs.GSMSymbolicDatasetConfig(seed=0, size=1)).generators
    table: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    for template in gs.tasks_ok:
        steps = generators[template](random.Random(0), 1.0)["metadata"]["answer_cot"].count("=")
        table[min(4, max(1, steps - 1))].append(template)
    return {level: tuple(ids) for level, ids in table.items()}


@_with_options_signature
class GSMSymbolicEnv(_RGymEnv):
    """GSM8K-like word problems (reasoning-gym ``gsm_symbolic``); difficulty = steps level 1-4.

    Options: :class:`RGymOptions`.
    """

    def __init__(self, difficulty: int | str | list[int] = (1, 2, 3, 4), **options: Any) -> None:
        bound = self._bind_options(options)
        super().__init__(parse_levels(difficulty, allowed=(1, 2, 3, 4)), bound)
        self._apply_split("k15/GSMSymbolic-v0")

    @cached_property
    def _dataset(self) -> Any:
        from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as gs

        return gs.GSMSymbolicDataset(gs.GSMSymbolicDatasetConfig(seed=0, size=1))

    @property
    def _generators(self) -> dict[int, Any]:
        return self._dataset.generators

    def _generate(self, index: int) -> Problem:
        level = level_for_index(self.levels, self.seed, index)
        templates = gsm_templates_by_level()[level]
        template = templates[rng_for(self.seed, index, 0x65).randrange(len(templates))]
        example = self._generators[template](random.Random(mix_seed(self.seed, index)), 1.0)
        question = example["question"] + _GSM_SUFFIX
        entry = {"question": question, "answer": example["answer"], "metadata": {}}
        metadata = {
            "dataset": "gsm_symbolic",
            "config": self._dataset.config,
            "entry": entry,
            "template": template,
        }
        return Problem(
            f"gsm_symbolic/d{level}/{index:05d}",
            self._prompt(question),
            example["answer"],
            float(level),
            metadata,
        )


# -- Countdown ------------------------------------------------------------------------------
@_with_options_signature
class CountdownEnv(_RGymEnv):
    """Reach a target with the given numbers (reasoning-gym ``countdown``); levels 1-4.

    Options: :class:`RGymOptions` (``instruction`` defaults to ``COUNTDOWN_INSTRUCTION``).
    """

    _option_defaults = {"instruction": COUNTDOWN_INSTRUCTION}
    _ascii_operators = True

    def __init__(self, difficulty: int | str | list[int] = 1, **options: Any) -> None:
        bound = self._bind_options(options)
        super().__init__(parse_levels(difficulty, allowed=COUNTDOWN_LEVELS), bound)
        self._apply_split("k15/Countdown-v0")

    @cached_property
    def _datasets(self) -> dict[int, Any]:
        from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

        return {
            level: CountdownDataset(
                CountdownConfig(
                    seed=mix_seed(self.seed, level) % 2**32,
                    size=self._pool_size,
                    **COUNTDOWN_LEVELS[level],
                )
            )
            for level in self.levels
        }

    def _generate(self, index: int) -> Problem:
        level = level_for_index(self.levels, self.seed, index)
        dataset = self._datasets[level]
        for attempt in range(10):  # the generator gives up on rare seeds; try the next slot
            try:
                entry = dataset[index + attempt * self._pool_size]
                break
            except ValueError:
                continue
        else:
            raise RuntimeError(f"countdown: no problem could be generated for index {index}")
        question = entry["question"].split("\n\nFinal answer format instructions:")[0]
        metadata = {"dataset": "countdown", "config": dataset.config, "entry": entry}
        return Problem(
            f"countdown/d{level}/{index:05d}",
            self._prompt(question),
            entry["answer"],
            float(level),
            metadata,
        )


# -- Any reasoning-gym dataset ----------------------------------------------------------------
@_with_options_signature
class ReasoningGymEnv(_RGymEnv):
    """Any reasoning-gym dataset by name, graded by that dataset's scorer.

    dataset: reasoning-gym dataset name (``reasoning_gym.factory.DATASETS``).
    config: overrides of the dataset's config dataclass.
    difficulty: None (dataset defaults) or curriculum level(s), 1 = easiest.
    partial_credit: reward = the scorer's fractional score.
    Other options: :class:`RGymOptions`.
    """

    def __init__(
        self,
        dataset: str = "chain_sum",
        *,
        config: dict[str, Any] | None = None,
        difficulty: int | str | list[int] | None = None,
        **options: Any,
    ) -> None:
        import reasoning_gym.factory as factory

        bound = self._bind_options(options)

        if dataset not in factory.DATASETS:
            raise ValueError(
                f"unknown reasoning-gym dataset {dataset!r}; see reasoning_gym.factory.DATASETS"
            )
        self.dataset_name, self.overrides = dataset, dict(config or {})
        levels: tuple[int, ...] = (0,)
        if difficulty is not None:
            if not factory.has_curriculum(dataset):
                raise ValueError(
                    f"reasoning-gym dataset {dataset!r} has no curriculum; use difficulty=None"
                )
            curriculum = factory.create_curriculum(dataset)
            top = max(len(attr.levels) for attr in curriculum.attributes.values())
            levels = parse_levels(difficulty, allowed=range(1, top + 1))
        super().__init__(levels, bound)
        self._datasets = {level: self._build(level) for level in self.levels}
        self._apply_split(f"k15/ReasoningGym-v0 dataset={dataset!r}")

    def _build(self, level: int) -> Any:
        import reasoning_gym.factory as factory
        from reasoning_gym.coaching.base_curriculum import (
            DefaultCurriculumContext,
            RangeAttributeMode,
        )

        seed = mix_seed(self.seed, level) % 2**32
        dataset_cls, config_cls = factory.DATASETS[self.dataset_name]
        if level == 0:
            config = config_cls(**self.overrides)
        else:
            curriculum = factory.create_curriculum(self.dataset_name)
            curriculum.set_global_level(level - 1)
            context = DefaultCurriculumContext(mode=RangeAttributeMode.UPPER_BOUND)
            config = curriculum.generate_configuration(context=context)
            config = dataclasses.replace(config, **self.overrides)
        config = dataclasses.replace(config, seed=seed, size=self._pool_size)
        if hasattr(config, "validate"):
            config.validate()
        return dataset_cls(config=config)

    def _generate(self, index: int) -> Problem:
        level = level_for_index(self.levels, self.seed, index)
        dataset = self._datasets[level]
        entry = dataset[index]
        # the config object itself (seed and size included): the grading worker rebuilds
        # this very dataset, enum/tuple fields intact (a JSON copy lost them)
        metadata = {"dataset": self.dataset_name, "config": dataset.config, "entry": entry}
        tag = f"d{level}/" if level else ""
        gold = entry.get("answer")
        return Problem(
            f"rg/{self.dataset_name}/{tag}{index:05d}",
            self._prompt(entry["question"]),
            "" if gold is None else str(gold),  # some datasets (rubiks_cube...) have no gold
            float(level),
            metadata,
        )


def _split_key(problem: Problem) -> str:
    """What the split hashes: the dataset name and the question (not the instruction), so a
    question is in one split whatever answer a generator attached to it."""
    return content_key(problem.metadata["dataset"], problem.metadata["entry"]["question"])
