"""The judge's backends and its verdict cache (see :mod:`k15_envs.verifiers.judge`).

- :class:`OpenAIJudgeBackend`: any OpenAI-compatible chat-completions endpoint, through the
  ``openai`` client (an optional dependency of k15_envs), with a per-request timeout,
  bounded retries and a bounded number of requests in flight;
- :func:`load_backend`: an in-process backend named ``"module:Class"`` (for JSON/YAML
  configs), e.g. ``rllib_k15.data.judge:EngineJudge`` over a local rollout engine;
- :class:`VerdictCache`: an LRU in memory plus an optional SQLite file shared by processes.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "EndpointConfig",
    "JudgeBackend",
    "JudgeFailure",
    "OpenAIJudgeBackend",
    "VerdictCache",
    "load_backend",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeFailure:
    """A reply the backend could not get; ``detail`` says why (``"APITimeoutError: ..."``)."""

    detail: str


@runtime_checkable
class JudgeBackend(Protocol):
    """What the judge talks to: one reply per prompt, in order."""

    def complete(self, prompts: list[str]) -> list[str | JudgeFailure]:
        """The model's reply to each user message (or a :class:`JudgeFailure`)."""
        ...


@dataclass(frozen=True)
class EndpointConfig:
    """How the ``base_url`` backend asks an OpenAI-compatible chat-completions server.

    model: the served model id (None: the first id ``GET {base_url}/models`` lists).
    timeout_s: deadline of one request; max_retries: retries on connection errors,
        timeouts, 429 and 5xx (the openai client's back-off), so a dead server costs at
        most about ``(max_retries + 1) * timeout_s`` plus a few seconds of back-off.
    max_tokens: room for the reasoning and the verdict line (a cut reply is unparseable).
    temperature: 0 (default) makes the judge deterministic, so the cache is exact.
    concurrency: requests in flight at once.
    """

    base_url: str
    model: str | None = None
    api_key: str = "none"
    timeout_s: float = 60.0
    max_retries: int = 2
    max_tokens: int = 1024
    temperature: float = 0.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        bad = [
            f"{name}={getattr(self, name)!r} (must be {rule})"
            for name, ok, rule in (
                ("timeout_s", self.timeout_s > 0, "> 0"),
                ("max_retries", self.max_retries >= 0, ">= 0"),
                ("max_tokens", self.max_tokens >= 1, ">= 1"),
                ("temperature", self.temperature >= 0, ">= 0"),
                ("concurrency", self.concurrency >= 1, ">= 1"),
            )
            if not ok
        ]
        if bad:
            raise ValueError(f"judge: invalid option(s) {'; '.join(bad)}")


class OpenAIJudgeBackend:
    """:class:`JudgeBackend` over an OpenAI-compatible server (see :class:`EndpointConfig`)."""

    def __init__(self, config: EndpointConfig) -> None:
        if importlib.util.find_spec("openai") is None:
            raise ImportError(
                "the judge's base_url backend needs the openai package: pip install 'openai>=1'"
            )
        self.config = config
        self.model = config.model
        self._lock = threading.Lock()
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def cache_id(self) -> str:
        """Who answers: cached verdicts are kept per server, model and sampling settings."""
        c = self.config
        return f"openai:{c.base_url}:{c.model}:{c.temperature}:{c.max_tokens}"

    def _resources(self) -> tuple[Any, ThreadPoolExecutor]:
        """The per-process client and thread pool (created on first use)."""
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                c = self.config
                self._client = OpenAI(base_url=c.base_url, api_key=c.api_key,
                                      timeout=c.timeout_s, max_retries=c.max_retries)  # fmt: skip
                self._pool = ThreadPoolExecutor(c.concurrency, thread_name_prefix="k15-judge")
            assert self._pool is not None
            return self._client, self._pool

    def _ask(self, client: Any, prompt: str) -> str | JudgeFailure:
        """One chat completion; any failure becomes a :class:`JudgeFailure`."""
        try:
            if self.model is None:
                models = list(client.models.list())
                if not models:
                    raise RuntimeError("the server lists no model; pass the judge's model")
                self.model = str(models[0].id)
            answer = client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature,
            )
            return answer.choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - a failed request is a verdict, not a crash
            return JudgeFailure(f"{type(exc).__name__}: {exc} ({self.config.base_url})")

    def complete(self, prompts: list[str]) -> list[str | JudgeFailure]:
        client, pool = self._resources()
        return list(pool.map(lambda p: self._ask(client, p), prompts))

    def close(self) -> None:
        with self._lock:
            (client, pool), self._client, self._pool = (self._client, self._pool), None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lock": None, "_client": None, "_pool": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class VerdictCache:
    """``key -> correct``: an in-memory LRU of ``size`` entries over an optional SQLite file
    (``path``; shared safely by every process and thread that names it). Counts ``hits``,
    ``misses`` and ``disk_hits`` in :attr:`stats`."""

    def __init__(self, size: int, path: str | None = None) -> None:
        self.size, self.path = int(size), (str(path) if path else None)
        self.stats: Counter[str] = Counter()
        self._memory: OrderedDict[str, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._conn: Any = None

    def _db(self) -> Any:
        """The per-process SQLite connection (caller holds the lock)."""
        if self._conn is None:
            import sqlite3

            Path(str(self.path)).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            self._conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, "
                               "correct INTEGER)")  # fmt: skip
            self._conn.commit()
        return self._conn

    def get(self, key: str) -> bool | None:
        """The cached verdict (memory, then disk) or None; counted as a hit or a miss."""
        with self._lock:
            found = self._memory.get(key)
            if found is None and self.path:
                row = self._db().execute("SELECT correct FROM verdicts WHERE key = ?", (key,))
                row = row.fetchone()
                found = None if row is None else bool(row[0])
                self.stats["disk_hits"] += found is not None
            self.stats["hits" if found is not None else "misses"] += 1
            if found is not None:
                self._remember({key: found})
            return found

    def put(self, items: dict[str, bool]) -> None:
        """Remember ``items`` (and write them to the file)."""
        if not items:
            return
        with self._lock:
            self._remember(items)
            if self.path:
                rows = [(k, int(v)) for k, v in items.items()]
                self._db().executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", rows)
                self._conn.commit()

    def _remember(self, items: dict[str, bool]) -> None:
        """Into the LRU, oldest dropped past ``size`` (caller holds the lock)."""
        for key, value in items.items():
            self._memory[key] = value
            self._memory.move_to_end(key)
        while len(self._memory) > self.size:
            self._memory.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lock": None, "_conn": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def load_backend(spec: str, kwargs: dict[str, Any]) -> JudgeBackend:
    """``"module:Class"`` -> ``Class(**kwargs)`` (a clear error for a bad name)."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"judge: backend {spec!r} is not an importable 'module:Class' "
                         f"({type(err).__name__}: {err})") from None  # fmt: skip
    return factory(**kwargs)
