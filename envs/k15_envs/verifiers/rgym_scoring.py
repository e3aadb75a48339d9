"""Worker side of the reasoning-gym verifier: calls the dataset's own ``score_answer``.

Runs only inside a sandboxed grading worker: some scorers evaluate the answer text with
sympy's ``parse_expr`` (which uses ``eval``), so untrusted answers must never reach them
in the trainer's process.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import reasoning_gym

__all__ = ["score"]


@lru_cache(maxsize=64)
def _dataset(name: str, config_json: str):
    return reasoning_gym.create_dataset(name, **json.loads(config_json))


def score(name: str, config_json: str, answer: str | None, entry: dict[str, Any]) -> float:
    """The dataset's score for ``answer`` on ``entry`` (a float in [0, 1])."""
    return float(_dataset(name, config_json).score_answer(answer, entry))
