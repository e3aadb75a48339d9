"""An in-process judge backend: the CoT judge of ``k15_envs`` on a local rollout engine.

``EngineJudge`` implements ``k15_envs.verifiers.judge.JudgeBackend``
(``complete(prompts) -> replies``) over any :class:`~rllib_k15.engine.RolloutEngine`: each
judge prompt is chat-templated with the engine's ``encode_prompt`` and all of them are
sampled in one ``generate`` call (``n=1``, greedy by default)::

    import gymnasium as gym, k15_envs
    from rllib_k15.data.judge import EngineJudge

    judge = EngineJudge("smollm2-135m-instruct", engine="hf", max_tokens=512)
    env = gym.make("k15/Math-v0", dataset="math500.jsonl", verifier="judge",
                   judge={"backend": judge})

Built from a model name, the engine is created on first use and not pickled: a copy
shipped to a Ray actor builds its own there. ``EngineJudge.wrap(engine)`` reuses an engine
you already hold (e.g. the one that sampled the responses); such a judge stays in its
process (pickling it raises). A reply cut by ``max_tokens`` before its verdict line is
graded ``judge_unparseable`` by the verifier: give the judge room to reason.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rllib_k15.engine.base import RolloutEngine, SamplingParams

__all__ = ["EngineJudge"]


class EngineJudge:
    """``JudgeBackend`` on a ``RolloutEngine``.

    model: registered model name or HF directory of the judge (None only via :meth:`wrap`).
    engine: ``"hf"`` or ``"vllm"`` (``rllib_k15.engine.make_engine``).
    max_tokens: reasoning room per verdict. temperature: 0 = greedy (deterministic).
    engine_kwargs: passed to ``make_engine`` (``dtype``, ``seed``, ``batch_size``, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None,
        *,
        engine: str = "hf",
        max_tokens: int = 512,
        temperature: float = 0.0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.params = SamplingParams(n=1, temperature=temperature, max_tokens=max_tokens)
        self.model = None if model is None else str(model)
        self.engine_kind = engine
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engine: RolloutEngine | None = None
        self._owned = True  # built here (rebuildable after pickling) or handed in by wrap()
        self._lock = threading.Lock()

    @classmethod
    def wrap(
        cls, engine: RolloutEngine, *, max_tokens: int = 512, temperature: float = 0.0
    ) -> EngineJudge:
        """A judge on an engine the caller owns (not closed by :meth:`close`, not picklable)."""
        judge = cls(None, max_tokens=max_tokens, temperature=temperature)
        judge._engine, judge._owned = engine, False
        judge.model = str(getattr(engine, "model_path", type(engine).__name__))
        return judge

    @property
    def cache_id(self) -> str:
        """The judge's identity for the verdict cache: model and sampling settings."""
        return f"engine:{self.model}:{self.params.temperature}:{self.params.max_tokens}"

    def engine(self) -> RolloutEngine:
        """The engine, built on first use from ``model`` and ``engine``."""
        with self._lock:
            if self._engine is None:
                from rllib_k15.engine import make_engine

                assert self.model is not None
                self._engine = make_engine(self.engine_kind, self.model, **self.engine_kwargs)
            return self._engine

    def complete(self, prompts: list[str]) -> list[str]:
        """One greedy (or ``temperature``) reply per judge prompt, in order."""
        if not prompts:
            return []
        engine = self.engine()
        token_ids = [engine.encode_prompt(prompt) for prompt in prompts]
        return [completions[0].text for completions in engine.generate(token_ids, self.params)]

    def close(self) -> None:
        """Close the engine if this judge built it (idempotent)."""
        with self._lock:
            engine, owned = self._engine, self._owned
            if owned:
                self._engine = None
        if engine is not None and owned:
            engine.close()

    def __getstate__(self) -> dict:
        if not self._owned:
            raise TypeError(
                "an EngineJudge.wrap(engine) judge cannot be pickled (its engine lives in this "
                "process); build EngineJudge(model, engine=...) to ship it to Ray actors"
            )
        return {**self.__dict__, "_engine": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
