"""Difficulty levels for procedural envs: parsing the knob and mixing levels reproducibly.

A procedural env takes ``difficulty`` as one level (``2``), several (``[1, 2, 3]``, or the
strings ``"1,2,3"`` / ``"1-3"`` for command lines). With several, problem ``i`` gets the
level ``level_for_index(levels, seed, i)`` - uniform over the levels, a pure function of
``(seed, i)`` - and records it as its ``difficulty``, so a curriculum sampler can filter
or weight by it later.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

__all__ = ["parse_levels", "mix_seed", "level_for_index", "rng_for"]

_MASK = (1 << 64) - 1


def parse_levels(
    value: int | str | Sequence[int], *, allowed: Collection[int], name: str = "difficulty"
) -> tuple[int, ...]:
    """Normalise the knob to a tuple of distinct allowed levels (order kept)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a list of ints, got {value!r}")
    if isinstance(value, int):
        items: list[int] = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                raise ValueError(f"{name} {value!r}: expected e.g. '2', '1,2,3' or '1-3'")
            items.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    elif isinstance(value, Sequence):
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                if isinstance(item, float) and item.is_integer():
                    item = int(item)
                else:
                    raise ValueError(f"{name} levels must be ints, got {item!r}")
            items.append(int(item))
    else:
        raise ValueError(f"{name} must be an int or a list of ints, got {type(value).__name__}")
    levels = tuple(dict.fromkeys(items))
    bad = [level for level in levels if level not in allowed]
    if not levels or bad:
        raise ValueError(f"{name} {value!r}: levels must be among {sorted(allowed)}")
    return levels


def mix_seed(*parts: int) -> int:
    """A 64-bit seed from integers (splitmix64 over the parts); stable across runs."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & _MASK)) & _MASK
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        state = z ^ (z >> 31)
    return state


def rng_for(*parts: int) -> random.Random:
    return random.Random(mix_seed(*parts))


def level_for_index(levels: Sequence[int], seed: int, index: int) -> int:
    if len(levels) == 1:
        return levels[0]
    return levels[rng_for(seed, index, 0x1E7E1).randrange(len(levels))]
