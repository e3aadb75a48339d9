"""Verifier base class and the verifier registry (keyed by :class:`VerifierKind`).

A verifier turns ``(Problem, response)`` into a :class:`~k15_envs.types.Verdict`. Envs never
special-case a verifier: they build one with :func:`make_verifier` and call
``verify``/``verify_many``. Verifiers are picklable (Ray ships them to actors): worker
pools are created lazily per process and dropped when pickled.

Register a new one with::

    @register_verifier(VerifierKind.MY_KIND)
    class MyVerifier(Verifier): ...
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

from k15_envs.types import Problem, Verdict

__all__ = ["Verifier", "VerifierKind", "register_verifier", "make_verifier", "verifier_kinds"]


class VerifierKind(str, Enum):  # noqa: UP042 - Python 3.10 has no StrEnum
    NUMERIC = "numeric"  # exact number compare, in process (Arithmetic)
    MATH = "math"  # math-verify in sandboxed worker processes (Math)
    CHOICE = "choice"  # option letter compare, in process (MultipleChoice)
    REASONING_GYM = "reasoning_gym"  # the dataset's own scorer, in sandboxed workers
    CODE = "code"  # run the program against tests in the sandbox (Code, HumanEval)
    JUDGE = "judge"  # a model reasons about the final answer vs the reference (Math)


class Verifier(abc.ABC):
    """Grades responses. Subclasses implement ``verify`` and, if they can batch, ``verify_many``."""

    kind: VerifierKind

    @abc.abstractmethod
    def verify(self, problem: Problem, response: str) -> Verdict:
        """Grade one (untruncated) response."""

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        """Grade many responses; the default grades them one by one."""
        return [self.verify(p, r) for p, r in zip(problems, responses, strict=True)]

    def close(self) -> None:  # noqa: B027 - optional hook; in-process verifiers hold nothing
        """Release worker processes (idempotent)."""

    def __call__(self, problem: Problem, response: str) -> float:
        """Reward-function style: just the reward."""
        return self.verify(problem, response).reward


class PooledVerifier(Verifier):
    """A verifier that owns a lazily created resource (a worker pool) per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resource: Any = None

    @abc.abstractmethod
    def _create_resource(self) -> Any:
        """Build the per-process resource (called once, under the lock)."""

    def _get_resource(self) -> Any:
        with self._lock:
            if self._resource is None:
                self._resource = self._create_resource()
            return self._resource

    def close(self) -> None:
        with self._lock:
            resource, self._resource = self._resource, None
        if resource is not None:
            resource.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_resource"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_V = TypeVar("_V", bound=type[Verifier])
_REGISTRY: dict[VerifierKind, type[Verifier]] = {}


def register_verifier(kind: VerifierKind) -> Callable[[_V], _V]:
    """Class decorator; rejects a second registration of the same kind."""

    def decorator(cls: _V) -> _V:
        if kind in _REGISTRY:
            raise ValueError(f"verifier kind {kind.value!r} is already registered")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorator


def make_verifier(kind: VerifierKind | str, **kwargs: Any) -> Verifier:
    """Build the verifier registered for ``kind`` (a :class:`VerifierKind` or its value)."""
    try:
        key = VerifierKind(kind)
    except ValueError:
        raise ValueError(
            f"unknown verifier kind {kind!r}; known: {[k.value for k in VerifierKind]}"
        ) from None
    if key not in _REGISTRY:
        raise ValueError(f"no verifier registered for {key.value!r}")
    return _REGISTRY[key](**kwargs)


def verifier_kinds() -> list[VerifierKind]:
    return list(_REGISTRY)
