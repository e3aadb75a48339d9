"""The one reader of a run's ``metrics.jsonl`` (one JSON object per finished iteration).

Every consumer — resume (``rllib_k15.checkpointing``), ``k15 plot runs``, the experiment
scripts — reads through :func:`read_metrics`, so a file is treated the same everywhere:

- a **torn last line** (the run was killed while appending it) is skipped, with one warning
  per file: the iteration it describes was not checkpointed either, and resume redoes it;
- a bad line **before** the last one is corruption, not a torn write: ``ValueError`` naming
  the file and line, never a silently shorter curve;
- blank lines are ignored; a missing file has no rows.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

__all__ = ["read_metrics"]

log = logging.getLogger(__name__)


@functools.cache
def _warn_torn(path: str, line: int) -> None:
    log.warning(
        "%s:%d: skipping a half-written last line (the run was stopped while writing it)",
        path,
        line,
    )


def read_metrics(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of ``path`` in file order (see the module docstring for bad lines)."""
    path = Path(path)
    if not path.is_file():
        return []
    numbered = [
        (n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()
    ]
    rows = []
    for position, (n, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if position == len(numbered) - 1:
                _warn_torn(str(path), n)
                continue
            raise ValueError(f"{path}:{n}: not a JSON row ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: a metrics row must be a JSON object, got {row!r:.60}")
        rows.append(row)
    return rows
