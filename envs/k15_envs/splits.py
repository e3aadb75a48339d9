"""Train/test splits by construction: a problem's split is a pure function of its content.

Every problem-serving env takes ``split: "train" | "test" | None = None``,
``test_fraction: float = 0.1`` and ``split_salt: str = ""``. A problem's *content key* is its
canonical text (the question without the env's instruction, plus its gold answer; each env
says what it hashes), and

    u(key) = int.from_bytes(sha256(utf8(split_salt + "\\x00" + key))[:8], "big") / 2**64
    split(key) = "test" if u(key) < test_fraction else "train"

so the train and test problems of an env are disjoint whatever ``seed`` either side uses,
and ``split_salt`` draws another partition. ``split=None`` is the unsplit env, unchanged.

- Loaded datasets (:func:`filter_split`) keep the rows of the split, in file order, with
  their original ids.
- Generated envs (:func:`take_split`) generate candidates ``j = 0, 1, 2, ...`` (candidate
  ``j`` is the problem the unsplit env would give at index ``j``, id included) and keep, in
  order, the first ``size`` whose key is in the split and not yet kept (a split holds
  distinct problems). After :func:`candidate_limit` candidates without ``size`` of them,
  :class:`SplitError` says how many distinct problems the split has.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from k15_envs.types import Problem

__all__ = [
    "SPLITS",
    "SplitError",
    "SplitSpec",
    "split_unit",
    "split_of",
    "content_key",
    "candidate_limit",
    "take_split",
    "filter_split",
]

SPLITS = ("train", "test")
_SEP = "\x1f"  # joins the parts of a content key (a character no prompt uses)


class SplitError(ValueError):
    """A split with too few problems for the env that asked for it.

    ``found``: how many distinct problems the split had (None when not counted)."""

    def __init__(self, message: str, *, found: int | None = None) -> None:
        super().__init__(message)
        self.found = found


@dataclass(frozen=True)
class SplitSpec:
    """The validated ``split`` / ``test_fraction`` / ``split_salt`` arguments of an env."""

    split: str | None = None
    test_fraction: float = 0.1
    split_salt: str = ""

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be 'train', 'test' or None, got {self.split!r}")
        fraction = self.test_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ValueError(f"test_fraction must be a number in (0, 1), got {fraction!r}")
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {fraction!r}")
        if not isinstance(self.split_salt, str):
            raise ValueError(f"split_salt must be a str, got {type(self.split_salt).__name__}")
        object.__setattr__(self, "test_fraction", float(fraction))

    @property
    def share(self) -> float:
        """The expected fraction of problems in ``split`` (1.0 when unsplit)."""
        if self.split is None:
            return 1.0
        return self.test_fraction if self.split == "test" else 1.0 - self.test_fraction

    def contains(self, key: str) -> bool:
        """True when the problem with content ``key`` belongs to ``split`` (always if None)."""
        return self.split is None or split_of(key, self.test_fraction, self.split_salt) == (
            self.split
        )

    def describe(self) -> str:
        """``split='test' (test_fraction=0.1)`` for error messages."""
        salt = f", split_salt={self.split_salt!r}" if self.split_salt else ""
        return f"split={self.split!r} (test_fraction={self.test_fraction}{salt})"


def split_unit(key: str, salt: str = "") -> float:
    """``u = int.from_bytes(sha256(utf8(salt + "\\x00" + key))[:8], "big") / 2**64`` in [0, 1)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, test_fraction: float, salt: str = "") -> str:
    """``"test"`` if ``split_unit(key, salt) < test_fraction`` else ``"train"``."""
    return "test" if split_unit(key, salt) < test_fraction else "train"


def content_key(*parts: object) -> str:
    """The parts of a problem's canonical content joined by ``\\x1f`` (unit separator)."""
    return _SEP.join(str(part) for part in parts)


def candidate_limit(size: int, spec: SplitSpec) -> int:
    """Candidates a generated env scans: ``ceil(4 * size / share) + 1000``."""
    return math.ceil(4 * size / spec.share) + 1000


def take_split(
    generate: Callable[[int], Problem],
    key: Callable[[Problem], str],
    size: int,
    spec: SplitSpec,
    what: str,
) -> list[Problem]:
    """The first ``size`` distinct problems of ``spec.split`` among ``generate(0), (1), ...``.

    ``what`` names the env and its levels in the :class:`SplitError` raised when
    :func:`candidate_limit` candidates hold fewer than ``size`` of them.
    """
    kept: list[Problem] = []
    seen: set[str] = set()
    limit = candidate_limit(size, spec)
    for index in range(limit):
        problem = generate(index)
        content = key(problem)
        if content in seen or not spec.contains(content):
            continue
        seen.add(content)
        kept.append(problem)
        if len(kept) == size:
            return kept
    raise SplitError(
        f"{what} {spec.describe()}: only {len(kept)} distinct problems in that split "
        f"(among the first {limit} generated), fewer than size={size}; ask for a smaller "
        "size, another test_fraction or harder levels",
        found=len(kept),
    )


def filter_split(
    problems: Sequence[Problem], keys: Sequence[str], spec: SplitSpec, what: str
) -> list[Problem]:
    """The problems (rows) whose key is in ``spec.split``, in order; all when unsplit."""
    if spec.split is None:
        return list(problems)
    kept = [p for p, k in zip(problems, keys, strict=True) if spec.contains(k)]
    if not kept:
        raise SplitError(
            f"{what} {spec.describe()}: none of its {len(problems)} rows is in that split",
            found=0,
        )
    return kept
