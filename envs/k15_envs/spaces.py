"""Text spaces for prompts and responses, with documented maximum lengths.

:class:`ReasoningText` is a ``gymnasium.spaces.Text`` whose ``contains`` accepts *any*
Unicode string within the length bounds (LaTeX, code, emoji, CJK...). Its ``charset``
(printable ASCII) only drives ``sample()``.

Default bounds (characters, not tokens; override per env with ``max_prompt_chars`` /
``max_response_chars``):

- observations (prompts): ``MAX_PROMPT_CHARS`` = 16,384
- actions (responses): ``MAX_RESPONSE_CHARS`` = 65,536; a longer response is treated as
  truncated by ``step`` (reward 0, ``truncated=True``).
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium import spaces

__all__ = ["ReasoningText", "MAX_PROMPT_CHARS", "MAX_RESPONSE_CHARS"]

MAX_PROMPT_CHARS = 16_384
MAX_RESPONSE_CHARS = 65_536


class ReasoningText(spaces.Text):
    """``Text`` that contains every ``str`` of ``min_length..max_length`` characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(
            max_length=max_length, min_length=min_length, charset=string.printable, seed=seed
        )

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"ReasoningText({self.min_length}, {self.max_length}, charset=<any unicode>)"
