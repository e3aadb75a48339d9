"""One rollout call as pure functions: generate, cut loops, grade, build the records.

What an EnvRunner does between "here are problem indices" and "here are graded
:class:`~rllib_k15.rollout.records.Rollout` records", with no Ray and no RLlib: the
functions take the rollout engine (:class:`rllib_k15.engine.RolloutEngine`: ``encode_prompt``,
``generate``, ``tokenizer``), the unwrapped reasoning env (``problem(i)``,
``verify_batch(problems, responses, truncated=...)``), the :class:`RolloutSettings` and the
training iteration, and return the records with a :class:`RolloutStats` that the caller
logs as metrics.

- :func:`generate_rollouts`: ``samples_per_problem`` whole responses per problem in ONE
  engine call, loops cut (:func:`cut_loop`), graded in ONE ``verify_batch`` call, loops
  penalised (:func:`penalise_loop`).
- :func:`generate_segments`: one partial-rollout segment per response (new problems and
  continued responses in ONE engine call, :mod:`rllib_k15.rollout.segments`); finished
  responses come back graded, unfinished ones as the extended
  :class:`~rllib_k15.rollout.partial.PartialRollout` to store. Image problems continue
  from the engine's unexpanded prompt + the tokens so far, with the image sent again
  (re-read from the env: a stored unfinished response holds no pixels).

A looping response (:mod:`rllib_k15.rollout.repetition`) is cut after one copy of its
loop, gets ``finish_reason = "repeat"``, counts as truncated for the verifier, and its
verdict is replaced by ``reward = −repeat_penalty``, ``correct = False``, ``reason = "repeat"``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rllib_k15.engine import Completion, SamplingParams
from rllib_k15.rollout.partial import PartialRollout, SegmentStatus
from rllib_k15.rollout.prompts import encode_problems, generate_for
from rllib_k15.rollout.records import Rollout
from rllib_k15.rollout.repetition import RepetitionConfig, detect_repetition
from rllib_k15.rollout.segments import allowed_tokens, apply_segment, segment_prompt

__all__ = [
    "RolloutSettings",
    "RolloutStats",
    "cut_loop",
    "generate_rollouts",
    "generate_segments",
    "penalise_loop",
]

TRUNCATED_REASONS = ("length", "repeat")  # finish reasons the verifier sees as truncated


@dataclass(frozen=True)
class RolloutSettings:
    """The sampling and loop-handling settings of one rollout call.

    samples_per_problem:        k responses per new problem (slots 0..k-1).
    temperature, top_p:         the engine's sampling (:class:`rllib_k15.engine.SamplingParams`).
    max_response_tokens:        cap on a whole response's tokens.
    partial_rollout_max_tokens: new tokens per response per segment (partial rollouts only).
    repeat_detection:           cut looping responses (:func:`cut_loop`).
    repeat_config:              when a response counts as looping.
    repeat_penalty:             a looping response's reward is −repeat_penalty.
    """

    samples_per_problem: int
    temperature: float
    top_p: float
    max_response_tokens: int
    partial_rollout_max_tokens: int | None = None
    repeat_detection: bool = True
    repeat_config: RepetitionConfig = field(default_factory=RepetitionConfig)
    repeat_penalty: float = 0.5

    @classmethod
    def from_config(cls, config: Any) -> RolloutSettings:
        """The settings of a ``K15Config`` (``repeat_config`` there is a dict of overrides,
        read only when ``repeat_detection`` is on)."""
        detect = bool(config.repeat_detection)
        rule = RepetitionConfig(**config.repeat_config) if detect else RepetitionConfig()
        return cls(
            samples_per_problem=config.samples_per_problem,
            temperature=config.temperature,
            top_p=config.top_p,
            max_response_tokens=config.max_response_tokens,
            partial_rollout_max_tokens=config.partial_rollout_max_tokens,
            repeat_detection=detect,
            repeat_config=rule,
            repeat_penalty=config.repeat_penalty,
        )


@dataclass(frozen=True)
class RolloutStats:
    """What one rollout call measured (the EnvRunner logs it as metrics).

    finished:           responses that came back as graded :class:`Rollout` records.
    generated_tokens:   tokens the engine generated that the call kept (before loop cuts).
    generation_seconds: wall time of the engine call.
    scoring_seconds:    wall time of grading (``verify_batch``).
    repeats_detected:   responses cut as loops.
    repeat_tokens_cut:  tokens those cuts removed.
    """

    finished: int
    generated_tokens: int
    generation_seconds: float
    scoring_seconds: float
    repeats_detected: int = 0
    repeat_tokens_cut: int = 0


def cut_loop(completion: Completion, settings: RolloutSettings, tokenizer: Any) -> Completion:
    """Cut a looping completion after one copy of its loop (finish_reason ``"repeat"``).

    Returns ``completion`` itself when repeat detection is off or it does not loop; else a
    new completion of its first ``cut`` tokens and log-probs, text decoded by ``tokenizer``.
    """
    if not settings.repeat_detection:
        return completion
    found = detect_repetition(completion.token_ids, settings.repeat_config)
    if not found.triggered:
        return completion
    ids = completion.token_ids[: found.cut]
    return Completion(
        token_ids=ids,
        logprobs=completion.logprobs[: found.cut],
        text=tokenizer.decode(ids, skip_special_tokens=True),
        finish_reason="repeat",
    )


def penalise_loop(completion: Completion, verdict: Any, repeat_penalty: float) -> Any:
    """The verdict of a cut loop: ``reward = −repeat_penalty``, not correct, reason "repeat";
    any other completion keeps ``verdict``."""
    if completion.finish_reason != "repeat":
        return verdict
    return dataclasses.replace(
        verdict, reward=-float(repeat_penalty), correct=False, reason="repeat"
    )


def _cut_count(
    completions: Sequence[Completion], settings: RolloutSettings, tokenizer: Any
) -> tuple[list[Completion], int, int]:
    """:func:`cut_loop` on each completion; also the number cut and the tokens removed."""
    cut = [cut_loop(c, settings, tokenizer) for c in completions]
    pairs = [(c, k) for c, k in zip(completions, cut) if k is not c]
    removed = sum(len(c.token_ids) - len(k.token_ids) for c, k in pairs)
    return cut, len(pairs), removed


def _verify(env: Any, problems: list, completions: Sequence[Completion]) -> tuple[list, float]:
    """Grade ``completions`` in one ``verify_batch`` call; the verdicts and its seconds."""
    start = time.perf_counter()
    verdicts = env.verify_batch(
        problems,
        [c.text for c in completions],
        truncated=[c.finish_reason in TRUNCATED_REASONS for c in completions],
    )
    return list(verdicts), time.perf_counter() - start


def _record(
    problem_index: int,
    problem: Any,
    prompt_ids: Sequence[int],
    completion: Completion,
    verdict: Any,
    token_iterations: list[int],
    **extra: Any,
) -> Rollout:
    """One graded :class:`Rollout` (``extra``: slot, num_segments, image_inputs)."""
    return Rollout(
        problem_index=int(problem_index),
        problem_id=problem.id,
        prompt_ids=list(prompt_ids),
        response_ids=list(completion.token_ids),
        sample_logp=list(completion.logprobs),
        finish_reason=completion.finish_reason,
        reward=float(verdict.reward),
        correct=bool(verdict.correct),
        reason=verdict.reason,
        difficulty=float(problem.difficulty),
        token_iterations=token_iterations,
        text=completion.text,
        **extra,
    )


def generate_rollouts(
    engine: Any,
    env: Any,
    problem_indices: Sequence[int],
    settings: RolloutSettings,
    iteration: int = 0,
) -> tuple[list[Rollout], RolloutStats | None]:
    """``samples_per_problem`` graded responses per problem, every token stamped ``iteration``.

    One ``generate`` call for all problems (records in problem order, k per problem), loops
    cut, one ``verify_batch`` call, loops penalised. Stats are None when there was nothing
    to generate (no problem indices): no engine call, nothing to log.
    """
    if not problem_indices:
        return [], None
    problems = [env.problem(int(i)) for i in problem_indices]
    prompts = encode_problems(engine, problems)
    prompt_ids, images = prompts.token_ids, prompts.image_inputs
    params = SamplingParams(
        n=settings.samples_per_problem,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_response_tokens,
    )
    start = time.perf_counter()
    groups = generate_for(engine, prompts, params)
    gen_seconds = time.perf_counter() - start

    owner = [i for i, group in enumerate(groups) for _ in group]
    raw = [c for group in groups for c in group]
    cut, repeats, removed = _cut_count(raw, settings, engine.tokenizer)
    start = time.perf_counter()
    verdicts, _ = _verify(env, [problems[i] for i in owner], cut)
    verdicts = [penalise_loop(c, v, settings.repeat_penalty) for c, v in zip(cut, verdicts)]
    score_seconds = time.perf_counter() - start

    rollouts = [
        _record(
            problem_indices[i],
            problems[i],
            prompt_ids[i],
            c,
            v,
            [iteration] * len(c.token_ids),
            image_inputs=None if images is None else images[i],
        )  # fmt: skip
        for i, c, v in zip(owner, cut, verdicts)
    ]
    stats = RolloutStats(
        finished=len(rollouts),
        generated_tokens=sum(len(r.response_ids) for r in rollouts),
        generation_seconds=gen_seconds,
        scoring_seconds=score_seconds,
        repeats_detected=repeats,
        repeat_tokens_cut=removed,
    )
    return rollouts, stats


def _work_items(
    prompts: Mapping[int, SegmentPrompt],
    continuations: Mapping[int, list[PartialRollout]],
    samples_per_problem: int,
) -> list[PartialRollout]:
    """The responses of one segment call: a problem's stored unfinished members if it has
    any in ``continuations``, else ``samples_per_problem`` fresh ones (slots 0..k-1)."""
    work: list[PartialRollout] = []
    for p, prompt in prompts.items():
        if p in continuations:
            work.extend(continuations[p])
        else:
            work += [PartialRollout(p, j, prompt.token_ids) for j in range(samples_per_problem)]
    return work


@dataclass(frozen=True)
class SegmentPrompt:
    """One problem's prompt for partial rollouts: ``token_ids`` as the learner reads them
    (``PartialRollout.prompt_ids``); an image problem also has the engine's unexpanded ids,
    its image and the processor's image tensors (numpy) for the learner's rows."""

    token_ids: list[int]
    engine_token_ids: list[int] | None = None
    image: Any = None
    image_inputs: dict[str, Any] | None = None


def _segment_prompts(engine: Any, problems: Mapping[int, Any]) -> dict[int, SegmentPrompt]:
    """Each problem's :class:`SegmentPrompt` (text and image problems alike)."""
    encoded = encode_problems(engine, list(problems.values()))
    if encoded.images is None:
        return {p: SegmentPrompt(ids) for p, ids in zip(problems, encoded.token_ids)}
    return {
        p: SegmentPrompt(ids, engine_ids, image, inputs)
        for p, ids, engine_ids, image, inputs in zip(
            problems, encoded.token_ids, encoded.engine_token_ids, encoded.images,
            encoded.image_inputs,
        )
    }  # fmt: skip


def _generate_segment(
    engine: Any, work: Sequence[PartialRollout], prompts: Mapping[int, SegmentPrompt], params: Any
) -> list[Completion]:
    """One completion per response of ``work``, continuing its prompt + tokens so far; an
    image problem's row is its unexpanded engine prompt + tokens, with its image."""
    if not any(prompt.image is not None for prompt in prompts.values()):
        return [g[0] for g in engine.generate([segment_prompt(w) for w in work], params)]
    rows = [[*prompts[w.problem_index].engine_token_ids, *w.response_ids] for w in work]
    images = [prompts[w.problem_index].image for w in work]
    return [g[0] for g in engine.generate(rows, params, images=images)]


def _whole(extended: PartialRollout, status: SegmentStatus) -> Completion:
    """The response so far as a completion (text decoded later, only when it finished)."""
    return Completion(
        token_ids=list(extended.response_ids),
        logprobs=list(extended.logprobs),
        text="",
        finish_reason="stop" if status is SegmentStatus.FINISHED else "length",
    )


def generate_segments(
    engine: Any,
    env: Any,
    problem_indices: Sequence[int],
    continuations: Mapping[int, list[PartialRollout]],
    settings: RolloutSettings,
    iteration: int,
) -> tuple[list[Rollout | PartialRollout], RolloutStats | None]:
    """One partial-rollout segment for every response of ``problem_indices``.

    All rows go through ONE ``generate`` call with ``max_tokens = max(allowed)``; each keeps
    its first ``allowed`` tokens (:func:`~rllib_k15.rollout.segments.apply_segment`). A
    response that finished (stop, ``max_response_tokens``) or loops (cut, the loop lies in
    the new segment) comes back as a graded :class:`Rollout`; the others as the extended
    :class:`PartialRollout`. ``generated_tokens`` counts the kept new tokens of all rows.
    Stats are None when there was no row to generate.
    """
    budget = settings.partial_rollout_max_tokens
    cap = settings.max_response_tokens
    problems = {int(p): env.problem(int(p)) for p in problem_indices}
    if not problems:
        return [], None
    prompts = _segment_prompts(engine, problems)
    work = _work_items(prompts, continuations, settings.samples_per_problem)
    if not work:
        return [], None
    allowed = [allowed_tokens(w, cap, budget) for w in work]
    params = SamplingParams(
        n=1, temperature=settings.temperature, top_p=settings.top_p, max_tokens=max(allowed)
    )
    start = time.perf_counter()
    completions = _generate_segment(engine, work, prompts, params)
    gen_seconds = time.perf_counter() - start

    out: list[Rollout | PartialRollout] = []
    done: list[tuple[PartialRollout, Completion]] = []
    repeats = removed = 0
    for partial, c in zip(work, completions):
        extended, status = apply_segment(
            partial, c.token_ids, c.logprobs, c.finish_reason == "stop",
            iteration=iteration, max_response_tokens=cap, per_iteration_budget=budget,
        )  # fmt: skip
        whole = _whole(extended, status)
        cut = cut_loop(whole, settings, engine.tokenizer)  # the first loop point is new
        if cut is not whole:
            repeats += 1
            removed += len(whole.token_ids) - len(cut.token_ids)
        elif status is SegmentStatus.UNFINISHED:
            out.append(extended)
            continue
        else:
            whole.text = engine.tokenizer.decode(whole.token_ids, skip_special_tokens=True)
        done.append((extended, cut))

    verdicts, score_seconds = [], 0.0
    if done:
        verdicts, score_seconds = _verify(
            env, [problems[p.problem_index] for p, _ in done], [c for _, c in done]
        )
    for (p, c), v in zip(done, verdicts):
        v = penalise_loop(c, v, settings.repeat_penalty)
        iters = list(p.token_iterations[: len(c.token_ids)])
        problem = problems[p.problem_index]
        out.append(
            _record(p.problem_index, problem, p.prompt_ids, c, v, iters,
                    slot=p.slot, num_segments=p.num_segments,
                    image_inputs=prompts[p.problem_index].image_inputs)
        )  # fmt: skip
    stats = RolloutStats(
        finished=len(done),
        generated_tokens=sum(len(c.token_ids[:a]) for c, a in zip(completions, allowed)),
        generation_seconds=gen_seconds,
        scoring_seconds=score_seconds,
        repeats_detected=repeats,
        repeat_tokens_cut=removed,
    )
    return out, stats
