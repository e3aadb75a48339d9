"""Helpers shared by the dataset-backed envs: bundled samples and row-to-field plumbing."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["bundled_dataset", "source_stem", "BOXED_INSTRUCTION"]

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def bundled_dataset(name: str) -> str:
    """Path of a small sample dataset shipped in ``k15_envs/data`` (for demos and tests)."""
    path = resources.files("k15_envs") / "data" / name
    return str(Path(str(path)))


def source_stem(source: str) -> str:
    """``data/gsm8k_test.jsonl`` -> ``gsm8k_test``; in-memory rows -> ``rows``."""
    if source == "<rows>":
        return "rows"
    return Path(source).stem
