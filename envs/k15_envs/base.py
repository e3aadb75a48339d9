"""``ReasoningEnv``: the Gymnasium env every ``k15/*`` task is, plus the batch API RL needs.

One episode = one problem, one step = one complete response:

    obs, info = env.reset(seed=0)            # obs: the prompt; info: problem_id, difficulty
    obs, reward, terminated, truncated, info = env.step(response)

- ``terminated`` is True when a response was graded (whether or not an answer was found:
  ``info["reason"] == "no_answer"`` says so).
- ``truncated`` is True when the response was cut by a length limit: call
  ``env.unwrapped.mark_truncated()`` before ``step`` (or pass a response longer than
  ``max_response_chars``). Nothing is graded, the reward is 0, ``terminated`` is False
  and the episode stays open: a partial-rollout trainer can later ``step`` the same
  problem again with the continued response.
- ``reset(seed=s)`` seeds ``np_random``, which picks the problem index;
  ``reset(options={"problem_index": i})`` picks problem ``i`` directly.

Step info keys: ``correct``, ``extracted_answer``, ``reason``, ``difficulty``,
``problem_id``, ``problem_index``.

Batch API (what the trainer uses; ``env.unwrapped`` of every registered env):
``len(env)``, ``problem(i)``, ``verify(problem, response, truncated=False)``,
``verify_batch(problems, responses, truncated=None)`` (parallel through the verifier's
bounded pool, safe from any thread) and ``close()`` (shuts the pools down).
"""

from __future__ import annotations

import abc
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from k15_envs.spaces import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS, ReasoningText
from k15_envs.types import Problem, Reason, Verdict
from k15_envs.verifiers.base import Verifier

__all__ = ["ReasoningEnv"]


class ReasoningEnv(gym.Env[str, str], abc.ABC):
    """Base class: subclasses provide ``_num_problems`` and ``_make_problem(index)``."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        *,
        verifier: Verifier,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
        cache_size: int = 4096,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} not in {self.metadata['render_modes']}")
        self.verifier = verifier
        self.max_prompt_chars = int(max_prompt_chars)
        self.max_response_chars = int(max_response_chars)
        self.render_mode = render_mode
        self.observation_space = ReasoningText(self.max_prompt_chars, min_length=1)
        self.action_space = ReasoningText(self.max_response_chars)
        self._cache: OrderedDict[int, Problem] = OrderedDict()
        self._cache_size = int(cache_size)
        self._cache_lock = threading.Lock()
        self._current: Problem | None = None
        self._current_index: int | None = None
        self._pending_truncation = False
        self._last: tuple[str, Verdict] | None = None

    # -- problems -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def _num_problems(self) -> int:
        """How many problems the env has."""

    @abc.abstractmethod
    def _make_problem(self, index: int) -> Problem:
        """Build problem ``index`` (0 <= index < len); must be deterministic."""

    def __len__(self) -> int:
        return self._num_problems

    def problem(self, index: int) -> Problem:
        """Problem ``index`` (deterministic; cached)."""
        if isinstance(index, bool) or not isinstance(index, int):
            try:
                index = int(index)  # numpy integers
            except (TypeError, ValueError):
                raise TypeError(
                    f"problem index must be an int, got {type(index).__name__}"
                ) from None
        if not 0 <= index < len(self):
            raise IndexError(f"problem index {index} out of range [0, {len(self)})")
        with self._cache_lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        problem = self._make_problem(index)
        if len(problem.prompt) > self.max_prompt_chars:
            raise ValueError(
                f"problem {problem.id}: prompt has {len(problem.prompt)} characters, more than "
                f"max_prompt_chars={self.max_prompt_chars}"
            )
        with self._cache_lock:
            self._cache[index] = problem
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return problem

    # -- grading --------------------------------------------------------------------------
    def verify(self, problem: Problem, response: str, *, truncated: bool = False) -> Verdict:
        """Grade one response; ``truncated=True`` gives reward 0, reason "truncated"."""
        if truncated:
            return Verdict.failed(Reason.TRUNCATED)
        return self.verifier.verify(problem, response)

    def verify_batch(
        self,
        problems: Sequence[Problem],
        responses: Sequence[str],
        truncated: Sequence[bool] | None = None,
    ) -> list[Verdict]:
        """Grade many responses in parallel (bounded by the verifier's pool); in order."""
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
        flags = [False] * len(problems) if truncated is None else [bool(t) for t in truncated]
        if len(flags) != len(problems):
            raise ValueError(f"{len(problems)} problems but {len(flags)} truncated flags")
        todo = [i for i, cut in enumerate(flags) if not cut]
        graded = self.verifier.verify_many(
            [problems[i] for i in todo], [responses[i] for i in todo]
        )
        verdicts = [Verdict.failed(Reason.TRUNCATED)] * len(problems)
        for i, verdict in zip(todo, graded, strict=True):
            verdicts[i] = verdict
        return verdicts

    # -- gymnasium API --------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        index = options.get("problem_index")
        if index is None:
            index = int(self.np_random.integers(len(self)))
        self._current = self.problem(index)
        self._current_index = int(index)
        self._pending_truncation = False
        self._last = None
        return self._current.prompt, self._problem_info()

    def mark_truncated(self) -> None:
        """Declare that the response passed to the next ``step`` was cut by a length limit."""
        self._pending_truncation = True

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._current is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"the action is the response text (str), got {type(action).__name__}")
        truncated = self._pending_truncation or len(action) > self.max_response_chars
        self._pending_truncation = False
        verdict = self.verify(self._current, action, truncated=truncated)
        self._last = (action, verdict)
        info = self._problem_info()
        info.update(
            correct=verdict.correct,
            extracted_answer=verdict.extracted_answer,
            reason=verdict.reason,
        )
        return self._current.prompt, float(verdict.reward), not truncated, truncated, info

    def _problem_info(self) -> dict[str, Any]:
        assert self._current is not None
        return {
            "problem_id": self._current.id,
            "problem_index": self._current_index,
            "difficulty": self._current.difficulty,
        }

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._current is None:
            return "(no problem: call reset())"
        text = f"[{self._current.id}] difficulty={self._current.difficulty}\n{self._current.prompt}"
        if self._last is not None:
            response, verdict = self._last
            text += f"\n--- response ---\n{response}\n"
            text += f"--- verdict: {verdict.reason} (reward {verdict.reward})"
        return text

    def close(self) -> None:
        """Shut the verifier's worker pools down (idempotent)."""
        self.verifier.close()
        super().close()
