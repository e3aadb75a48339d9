"""Sample n responses per problem from a model and grade them (input of shortest-rs / DPO).

Orchestration only: a rollout engine (:mod:`rllib_k15.engine`) samples ``n`` completions
per problem at the given temperature; the env's verifier grades them; the result is one
:class:`~rllib_k15.long2short.selection.ProblemSamples` per problem, which the pure rules
in :mod:`.selection` turn into SFT examples or DPO pairs.

Contracts used: ``engine.generate_text(user_messages, SamplingParams(n, temperature,
max_tokens)) -> list[list[Completion]]``; ``env = gymnasium.make(env_id, **kw).unwrapped``
with ``len(env)``, ``env.problem(i) -> Problem(id, prompt, …)`` and
``env.verify_batch(problems, responses, truncated) -> list[Verdict(correct, …)]``.
A response cut by ``max_tokens`` (``finish_reason == "length"``) is passed as truncated;
the verifier decides whether such a response can count as correct.

Length = ``len(Completion.token_ids)`` (EOS included when the model emitted it — the same
for every sample, so comparisons are unaffected).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from rllib_k15 import env_factory
from rllib_k15.algorithm.o1_reference import ReferenceStats
from rllib_k15.long2short.selection import ProblemSamples, Sample

__all__ = ["collect_reference_stats", "problem_indices", "sample_groups"]


def problem_indices(num_available: int, num_problems: int | None, start: int = 0) -> range:
    """Indices ``start … start+num_problems-1`` (all remaining if ``num_problems`` is None)."""
    if start < 0 or start >= num_available:
        raise ValueError(f"`start` ({start}) must be in [0, {num_available}) for this env")
    stop = num_available if num_problems is None else min(num_available, start + num_problems)
    if num_problems is not None and num_problems < 1:
        raise ValueError(f"`num_problems` ({num_problems}) must be >= 1")
    return range(start, stop)


def sample_groups(
    engine: Any,
    env: Any,
    indices: Sequence[int],
    n: int,
    temperature: float = 1.0,
    max_tokens: int = 1024,
    problems_per_call: int = 16,
    progress: bool = True,
) -> Iterator[ProblemSamples]:
    """Yield one graded group of ``n`` samples per problem, ``problems_per_call`` at a time."""
    from rllib_k15.engine import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens)
    bar = tqdm(total=len(indices), desc=f"sampling n={n}", unit="problem", disable=not progress)
    for start in range(0, len(indices), problems_per_call):
        problems = [env.problem(i) for i in indices[start : start + problems_per_call]]
        completions = engine.generate_text([p.prompt for p in problems], params)
        if len(completions) != len(problems):
            raise RuntimeError(
                f"engine returned {len(completions)} groups for {len(problems)} prompts"
            )
        flat_problems = [p for p, group in zip(problems, completions, strict=True) for _ in group]
        flat = [c for group in completions for c in group]
        verdicts = env.verify_batch(
            flat_problems,
            [c.text for c in flat],
            truncated=[c.finish_reason == "length" for c in flat],
        )
        if len(verdicts) != len(flat):
            raise RuntimeError(
                f"verifier returned {len(verdicts)} verdicts for {len(flat)} responses"
            )
        pos = 0
        for problem, group in zip(problems, completions, strict=True):
            samples = [
                Sample(c.text, len(c.token_ids), bool(v.correct))
                for c, v in zip(group, verdicts[pos : pos + len(group)], strict=True)
            ]
            pos += len(group)
            yield ProblemSamples(str(problem.id), problem.prompt, samples)
        bar.update(len(problems))
    bar.close()


def collect_reference_stats(
    engine: Any,
    env_id: str,
    env_config: dict[str, Any] | None = None,
    *,
    samples: int = 8,
    indices: Sequence[int] | None = None,
    temperature: float = 1.0,
    max_tokens: int = 256,
    model: str = "",
    progress: bool = False,
) -> ReferenceStats:
    """Sample ``samples`` (K) responses per problem with ``engine`` and grade them.

    ``engine`` must hold the reference (start) weights. ``indices`` defaults to every
    problem of the env. Lengths are ``len(Completion.token_ids)``, as in training rows.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"`o1_pruner_reference_samples` ({samples!r}) must be an integer >= 1")
    env = env_factory.make_unwrapped_env(env_id, env_config)
    indices = list(range(len(env))) if indices is None else [int(i) for i in indices]
    stats = ReferenceStats(env_id, dict(env_config or {}), samples, model)
    groups = sample_groups(
        engine,
        env,
        indices,
        samples,
        temperature=temperature,
        max_tokens=max_tokens,
        progress=progress,
    )
    for index, group in zip(indices, groups, strict=True):
        stats.add(
            index, [s.token_length for s in group.samples], [s.correct for s in group.samples]
        )
    return stats
