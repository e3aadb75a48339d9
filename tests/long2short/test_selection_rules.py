"""Shortest rejection sampling and DPO pair rules on hand-made samples."""

from __future__ import annotations

import pytest

from rllib_k15.long2short.selection import (
    ProblemSamples,
    Sample,
    build_dpo_pairs,
    dpo_pair_indices,
    select_shortest,
    shortest_correct_index,
    shortest_rejection_sampling,
)


def S(text: str, n: int, ok: bool) -> Sample:
    return Sample(text, n, ok)


# --- shortest rejection sampling -------------------------------------------------------


@pytest.mark.parametrize(
    "samples,expected",
    [
        # the shortest correct one wins even if a wrong one is shorter
        ([S("a", 30, True), S("b", 5, False), S("c", 12, True), S("d", 40, True)], 2),
        # tie on length: the earliest sample index wins
        ([S("a", 20, False), S("b", 10, True), S("c", 10, True)], 1),
        ([S("a", 10, True), S("b", 10, True)], 0),
        # no correct response: nothing selected
        ([S("a", 10, False), S("b", 3, False)], None),
        ([], None),
    ],
)
def test_shortest_correct_index(samples, expected):
    assert shortest_correct_index(samples) == expected


def test_select_shortest_records_counts():
    group = ProblemSamples("p1", "2+2?", [S("long 4", 30, True), S("4", 2, True), S("5", 1, False)])
    ex = select_shortest(group)
    assert ex is not None
    assert (ex.problem_id, ex.prompt, ex.response, ex.response_tokens) == ("p1", "2+2?", "4", 2)
    assert (ex.num_samples, ex.num_correct) == (3, 2)


def test_shortest_rejection_sampling_counts_problems_without_correct():
    groups = [
        ProblemSamples("p1", "q1", [S("x", 9, True), S("y", 4, True)]),
        ProblemSamples("p2", "q2", [S("x", 9, False), S("y", 4, False)]),
        ProblemSamples("p3", "q3", [S("z", 7, True)]),
    ]
    examples, stats = shortest_rejection_sampling(groups)
    assert [(e.problem_id, e.response) for e in examples] == [("p1", "y"), ("p3", "z")]
    assert stats.num_problems == 3 and stats.num_selected == 2
    assert stats.num_without_correct == 1 and stats.problems_without_correct == ["p2"]
    assert (stats.num_samples, stats.num_correct) == (5, 3)


def test_tuples_are_accepted_and_bad_lengths_rejected():
    assert shortest_correct_index([("a", 3, True), ("b", 2, True)]) == 1
    with pytest.raises(TypeError, match="token_length"):
        shortest_correct_index([Sample("a", 2.5, True)])
    with pytest.raises(ValueError, match="token_length"):
        shortest_correct_index([Sample("a", -1, True)])


# --- DPO pairs -------------------------------------------------------------------------


def test_dpo_pairs_ratio_boundary_is_inclusive():
    samples = [
        S("chosen", 100, True),  # 0: shortest correct
        S("exactly 1.5x", 150, True),  # 1: rejected (>= 1.5x)
        S("1.49x", 149, True),  # 2: kept out (< 1.5x)
        S("wrong longer", 101, False),  # 3: rejected (wrong and longer)
        S("wrong same length", 100, False),  # 4: not longer: not used
        S("wrong shorter", 50, False),  # 5: not longer: not used
        S("2x", 200, True),  # 6: rejected
    ]
    assert dpo_pair_indices(samples, 1.5) == [(0, 1), (0, 3), (0, 6)]


def test_dpo_pairs_exact_ratio_with_inexact_float():
    # 1.1 * 10 is 11.000000000000002 in floats; 11 tokens must still count as 1.1x.
    samples = [S("c", 10, True), S("d", 11, True)]
    assert dpo_pair_indices(samples, 1.1) == [(0, 1)]


def test_dpo_pairs_tie_for_chosen_uses_earliest_and_other_tied_one_is_not_rejected():
    samples = [S("w", 20, False), S("a", 10, True), S("b", 10, True), S("c", 15, True)]
    # chosen = index 1; index 2 has equal length (not 1.5x), index 3 is 1.5x -> rejected
    assert dpo_pair_indices(samples, 1.5) == [(1, 0), (1, 3)]


def test_dpo_pairs_no_correct_response_gives_no_pairs():
    assert dpo_pair_indices([S("a", 10, False), S("b", 30, False)]) == []


def test_dpo_pairs_empty_chosen_needs_strictly_longer_rejected():
    # 0 * 1.5 = 0: every correct response satisfies the ratio, but an equally empty one
    # must not be rejected against itself.
    assert dpo_pair_indices([S("", 0, True), S("", 0, True), S("x", 1, True)]) == [(0, 2)]


@pytest.mark.parametrize("ratio", [0.9, float("nan")])
def test_dpo_pairs_invalid_ratio(ratio):
    with pytest.raises(ValueError, match="length_ratio"):
        dpo_pair_indices([S("a", 1, True)], ratio)
    with pytest.raises(ValueError, match="length_ratio"):
        build_dpo_pairs([], ratio)


def test_build_dpo_pairs_materialises_rows_and_stats():
    groups = [
        ProblemSamples(
            "p1", "q1", [S("short", 10, True), S("bad", 12, False), S("long", 15, True)]
        ),
        ProblemSamples("p2", "q2", [S("bad", 10, False)]),
        ProblemSamples("p3", "q3", [S("a", 10, True), S("b", 14, True)]),  # nothing 1.5x
    ]
    pairs, stats = build_dpo_pairs(groups, length_ratio=1.5)
    assert [(p.chosen, p.rejected, p.rejected_correct) for p in pairs] == [
        ("short", "bad", False),
        ("short", "long", True),
    ]
    assert all(p.problem_id == "p1" and p.prompt == "q1" for p in pairs)
    assert (pairs[1].chosen_tokens, pairs[1].rejected_tokens) == (10, 15)
    assert stats.num_pairs == 2 and stats.num_problems == 3
    assert (stats.num_pairs_wrong_rejected, stats.num_pairs_long_correct_rejected) == (1, 1)
    assert stats.problems_without_correct == ["p2"]
    assert stats.problems_without_rejected == ["p3"]
