"""One generation segment of a partial rollout: from an engine completion to the next state.

The EnvRunner generates every segment of an iteration in ONE engine call with
``max_tokens = max(allowed)`` (one sampling setting for the whole batch keeps the
continuous batch full; :func:`allowed_tokens` differs only for responses close to
``max_response_tokens``). :func:`apply_segment` then keeps the first ``allowed`` tokens of
each completion, so a response never passes ``max_response_tokens``, and classifies the
segment with :func:`~rllib_k15.rollout.partial.segment_status`. The result is token-wise
what one uninterrupted generation with ``max_tokens = max_response_tokens`` would have
produced when the weights do not change (tested at temperature 0).

KV cache. The vLLM engine runs with prefix caching on: the k fresh samples of a problem
share their prompt's KV, and within an iteration a prefix is computed once. A weight sync
resets the cache (those KV entries came from the old weights), so a continued response's
prompt + earlier tokens are prefilled once under the new weights — the cost of continuing
is one prefill of the prefix, not its regeneration.
"""

from __future__ import annotations

from collections.abc import Sequence

from rllib_k15.rollout.partial import (
    PartialRollout,
    SegmentStatus,
    extend,
    remaining_budget,
    segment_status,
)

__all__ = ["allowed_tokens", "apply_segment", "segment_prompt"]


def segment_prompt(partial: PartialRollout) -> list[int]:
    """The engine prompt that continues ``partial``: prompt ids + tokens generated so far."""
    return [*partial.prompt_ids, *partial.response_ids]


def allowed_tokens(
    partial: PartialRollout, max_response_tokens: int, per_iteration_budget: int
) -> int:
    """New tokens this segment may keep (:func:`~rllib_k15.rollout.partial.remaining_budget`);
    >= 1 for any response that is still unfinished."""
    allowed = remaining_budget(partial, max_response_tokens, per_iteration_budget)
    if allowed < 1:
        raise ValueError(
            f"partial rollout {partial.key} has {partial.num_generated} tokens, at "
            f"max_response_tokens ({max_response_tokens}); it should have been truncated"
        )
    return allowed


def apply_segment(
    partial: PartialRollout,
    new_ids: Sequence[int],
    new_logprobs: Sequence[float],
    engine_stopped: bool,
    *,
    iteration: int,
    max_response_tokens: int,
    per_iteration_budget: int,
) -> tuple[PartialRollout, SegmentStatus]:
    """Append one segment to ``partial`` and say how it ended.

    ``engine_stopped``: the engine ended the completion on a stop token/string. Tokens past
    ``allowed = min(budget, max_response_tokens − generated)`` are dropped; a stop that lies
    past ``allowed`` therefore does not count (the response was cut before it).
    """
    allowed = allowed_tokens(partial, max_response_tokens, per_iteration_budget)
    kept = list(new_ids[:allowed])
    stopped = bool(engine_stopped) and len(new_ids) <= allowed
    extended = extend(partial, kept, list(new_logprobs[:allowed]), iteration)
    status = segment_status(
        extended.num_generated, len(kept), stopped, max_response_tokens, per_iteration_budget
    )
    return extended, status
