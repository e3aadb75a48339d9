"""Chain-of-thought judge for free-form answers (the Kimi k1.5 report, §2.2: the CoT reward model).

math-verify compares two parsed expressions; it cannot know that ``five`` is 5, that
``500 cm`` answers "how many metres" with 5, or that ``0.25`` does not answer "what
percent". The judge asks a language model instead: the prompt (:data:`JUDGE_TEMPLATE`)
holds the problem, the reference answer and the response's **final answer** (found with
the env's extraction; when none is marked, the last ``tail_chars`` characters of the
response), and asks the model to reason step by step and end with exactly
``VERDICT: CORRECT`` or ``VERDICT: INCORRECT``. The last such line decides.

Backends (anything with ``complete(prompts: list[str]) -> list[str]``, :class:`JudgeBackend`):

- ``base_url=...``: any OpenAI-compatible chat-completions endpoint (``k15 serve``, vLLM,
  a hosted API) through the ``openai`` client (an optional dependency of k15_envs):
  ``timeout_s`` per request, ``max_retries`` bounded retries (the client's own back-off),
  ``concurrency`` requests in flight, ``temperature`` 0 by default;
- ``backend=...``: an object, e.g. ``rllib_k15.data.judge.EngineJudge`` over a local
  rollout engine, or its name ``"rllib_k15.data.judge:EngineJudge"`` with
  ``backend_kwargs`` (for JSON/YAML env configs). A reply may be a :class:`JudgeFailure`.

Outcomes: ``correct`` / ``wrong``; ``judge_unparseable`` when the reply has no verdict
line; ``judge_error: <what>`` when the backend failed (timeout, connection, HTTP error).
Neither is a plain "wrong": both are counted in :attr:`JudgeVerifier.stats` and the first
error is logged. Verdicts are cached by ``(problem, reference, final answer)``: an LRU of
``cache_size`` entries in memory and, with ``cache_path``, a SQLite file shared by every
process that names it. Only parsed verdicts are cached; failures are asked again.

Pickling (Ray ships verifiers to actors) drops the client, thread pool and SQLite
connection; each process opens its own on first use.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from hashlib import sha256
from typing import Any

from k15_envs.extract import ExtractMode, extract_answer
from k15_envs.types import Problem, Reason, Verdict, judge_error_reason
from k15_envs.verifiers.base import Verifier, VerifierKind, register_verifier
from k15_envs.verifiers.judge_backends import (
    EndpointConfig,
    JudgeBackend,
    JudgeFailure,
    OpenAIJudgeBackend,
    VerdictCache,
    load_backend,
)
from k15_envs.verifiers.math import gold_answer_text

__all__ = [
    "JUDGE_TEMPLATE",
    "JudgeBackend",
    "JudgeFailure",
    "JudgeVerifier",
    "OpenAIJudgeBackend",
    "load_backend",
    "parse_verdict",
]

logger = logging.getLogger(__name__)

JUDGE_TEMPLATE = """\
You are grading a student's final answer to a math problem against the reference answer.

Problem:
{problem}

Reference answer:
{reference}

Student's final answer:
{answer}

Decide whether the student's final answer is equivalent to the reference answer as an answer \
to this problem. Equivalent forms are correct: 1/2 and 0.5, 2\\sqrt{{2}} and \\sqrt{{8}}, \
"x = 3" and 3, a number written in words, the same set or interval written differently, the \
same quantity with or without the unit the problem asks for. A different value, a different \
unit, an approximation of an exact answer, a missing or an extra part is incorrect.
Think step by step, then end your reply with exactly one line, either
VERDICT: CORRECT
or
VERDICT: INCORRECT"""

MAX_SHOWN_ANSWER = 2000  # characters of an extracted final answer the judge sees
_VERDICT_LINE = re.compile(r"^[\W_]*verdict[\W_]*[:：][\W_]*(correct|incorrect)[\W_]*$", re.I)


def parse_verdict(reply: str) -> bool | None:
    """The last ``VERDICT: CORRECT|INCORRECT`` line of ``reply`` (case and markdown
    emphasis ignored) as True/False; None when there is none."""
    for line in reversed(reply.splitlines()):
        found = _VERDICT_LINE.match(line.strip())
        if found:
            return found.group(1).lower() == "correct"
    return None


@register_verifier(VerifierKind.JUDGE)
class JudgeVerifier(Verifier):
    """A model judges whether the final answer matches the reference (see the module docstring).

    base_url, model, api_key, timeout_s, max_retries, max_tokens, temperature, concurrency:
        the OpenAI-compatible endpoint and how to ask it (:class:`EndpointConfig`).
    backend: instead of ``base_url``, any :class:`JudgeBackend` (e.g.
        ``rllib_k15.data.judge.EngineJudge``), which holds its own sampling settings, or
        its ``"module:Class"`` name, built as ``Class(**backend_kwargs)`` (JSON/YAML configs).
    cache_size: in-memory LRU entries (0: none). cache_path: SQLite verdict file (optional).
    extract: how the final answer is found (``boxed_or_line`` default, as ``k15/Math-v0``).
    tail_chars: how much of the response's end is shown when no final answer is marked.

    ``stats``: counts of ``cache_hits``, ``cache_misses``, ``disk_hits``, ``judged_correct``,
    ``judged_incorrect``, ``judge_unparseable`` and ``judge_errors`` (this process).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        backend: JudgeBackend | str | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        api_key: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        concurrency: int | None = None,
        cache_size: int = 4096,
        cache_path: str | None = None,
        extract: ExtractMode | str = ExtractMode.BOXED_OR_LINE,
        tail_chars: int = 400,
    ) -> None:
        endpoint = {k: v for k, v in dict(model=model, api_key=api_key, timeout_s=timeout_s,
                    max_retries=max_retries, max_tokens=max_tokens, temperature=temperature,
                    concurrency=concurrency).items() if v is not None}  # fmt: skip
        if (base_url is None) == (backend is None):
            raise ValueError(
                "judge: pass exactly one of base_url (an OpenAI-compatible endpoint, e.g. "
                "'http://127.0.0.1:8000/v1') or backend (an object with complete(prompts)); "
                f"got base_url={base_url!r}, backend={backend!r}"
            )
        if isinstance(backend, str):
            backend = load_backend(backend, backend_kwargs or {})
        elif backend_kwargs:
            raise ValueError("judge: backend_kwargs need backend='module:Class'")
        if backend is not None and endpoint:
            raise ValueError(f"judge: {sorted(endpoint)} apply to base_url only; the backend "
                             f"{type(backend).__name__} holds its own settings")  # fmt: skip
        if backend is not None and not callable(getattr(backend, "complete", None)):
            raise ValueError(f"judge: backend {backend!r} has no complete(prompts) method")
        if cache_size < 0 or tail_chars < 1:
            raise ValueError(f"judge: cache_size={cache_size} must be >= 0 and "
                             f"tail_chars={tail_chars} >= 1")  # fmt: skip
        if backend is None:
            backend = OpenAIJudgeBackend(EndpointConfig(str(base_url), **endpoint))
        self.backend = backend
        self.extract = ExtractMode(extract)
        self.tail_chars = int(tail_chars)
        self.cache = VerdictCache(cache_size, cache_path)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._warned = False

    @property
    def stats(self) -> dict[str, int]:
        """This process's counts (see the class docstring)."""
        with self._lock:
            counts = Counter(self._counts)
        cache = self.cache.stats
        counts.update(cache_hits=cache["hits"], cache_misses=cache["misses"],
                      disk_hits=cache["disk_hits"])  # fmt: skip
        return dict(counts)

    # -- prompt ------------------------------------------------------------------------------
    def final_answer(self, response: str) -> tuple[str | None, str]:
        """``(extracted answer or None, text shown to the judge)``: the extracted final
        answer, else the response's last ``tail_chars`` characters, marked as such."""
        found = extract_answer(response, self.extract).answer
        if found is not None:
            return found, found[:MAX_SHOWN_ANSWER]
        tail = response.strip()[-self.tail_chars :]
        return None, f"(no final answer was marked; the end of the response follows)\n{tail}"

    def prompt(self, problem: Problem, shown_answer: str) -> str:
        """The judge's user message for ``problem`` and the answer text ``shown_answer``."""
        question = problem.metadata.get("question") or problem.prompt
        return JUDGE_TEMPLATE.format(
            problem=question.strip(), reference=_reference(problem), answer=shown_answer
        )

    def cache_key(self, prompt: str) -> str:
        """sha256 of the judge's identity (``backend.cache_id``, else its class) and the
        prompt, which holds the problem, the reference and the final answer."""
        judge_id = getattr(self.backend, "cache_id", None) or type(self.backend).__name__
        return sha256(json.dumps([str(judge_id), prompt]).encode()).hexdigest()

    # -- grading -----------------------------------------------------------------------------
    def verify(self, problem: Problem, response: str) -> Verdict:
        return self.verify_many([problem], [response])[0]

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        """Cached verdicts at once; every distinct uncached prompt asked once, in one batch."""
        verdicts: list[Verdict | None] = []
        asks: dict[str, tuple[str, list[tuple[int, str | None]]]] = {}  # key -> prompt, uses
        for problem, response in zip(problems, responses, strict=True):
            if not response.strip():
                verdicts.append(Verdict.failed(Reason.NO_ANSWER))
                continue
            extracted, shown = self.final_answer(response)
            prompt = self.prompt(problem, shown)
            key = self.cache_key(prompt)
            if key in asks:  # the same question twice in one batch: asked once
                asks[key][1].append((len(verdicts), extracted))
                verdicts.append(None)
                continue
            cached = self.cache.get(key)
            if cached is not None:
                verdicts.append(Verdict.graded(cached, extracted))
                continue
            asks.setdefault(key, (prompt, []))[1].append((len(verdicts), extracted))
            verdicts.append(None)
        if asks:
            self._ask_all(asks, verdicts)
        return [v for v in verdicts if v is not None]

    def _ask_all(self, asks: dict, verdicts: list[Verdict | None]) -> None:
        """Ask the backend every prompt of ``asks``; fill in the verdicts; cache parsed ones."""
        keys = list(asks)
        try:
            replies: list[Any] = list(self.backend.complete([asks[k][0] for k in keys]))
            if len(replies) != len(keys):
                raise RuntimeError(f"the backend returned {len(replies)} replies for {len(keys)}")
        except Exception as exc:  # noqa: BLE001 - the backend failed: every prompt's verdict says so
            replies = [JudgeFailure(f"{type(exc).__name__}: {exc}")] * len(keys)
        parsed: dict[str, bool] = {}
        for key, reply in zip(keys, replies, strict=True):
            correct, verdict_of = self._read_reply(reply)
            if correct is not None:
                parsed[key] = correct
            for index, extracted in asks[key][1]:
                verdicts[index] = verdict_of(extracted)
        self.cache.put(parsed)

    def _read_reply(self, reply: Any) -> tuple[bool | None, Any]:
        """``(parsed verdict or None, extracted -> Verdict)`` for one reply, counted."""
        if isinstance(reply, JudgeFailure) or not isinstance(reply, str):
            detail = reply.detail if isinstance(reply, JudgeFailure) else f"reply {reply!r:.80}"
            self._count("judge_errors")
            self._warn_once(detail)
            return None, lambda extracted: Verdict.failed(judge_error_reason(detail), extracted)
        correct = parse_verdict(reply)
        if correct is None:
            self._count(Reason.JUDGE_UNPARSEABLE.value)
            return None, lambda extracted: Verdict.failed(Reason.JUDGE_UNPARSEABLE, extracted)
        self._count("judged_correct" if correct else "judged_incorrect")
        return correct, lambda extracted: Verdict.graded(correct, extracted)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _warn_once(self, detail: str) -> None:
        """Log the first backend failure of this verifier; later ones are only counted."""
        with self._lock:
            first, self._warned = not self._warned, True
        if first:
            logger.warning(
                "judge request failed: %s -- graded reward 0 with reason 'judge_error' (NOT a "
                "wrong answer); further failures are counted in verifier.stats['judge_errors']",
                " ".join(detail.split())[:300],
            )

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        self.cache.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _reference(problem: Problem) -> str:
    """The reference final answer: the env's parsed gold, else the gold field reduced."""
    return str(problem.metadata.get("gold") or gold_answer_text(problem.answer))
