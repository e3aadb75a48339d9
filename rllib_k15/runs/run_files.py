"""The files of a ``k15 train`` run directory, and the one module that reads and writes them.

Layout (``k15 train --out RUN``)::

    RUN/metrics.jsonl          one JSON row per finished iteration      (METRICS_FILE)
    RUN/run.json               how the run was started, for --resume     (RUN_INFO_FILE)
    RUN/experiment.yaml        copy of the experiment file               (EXPERIMENT_FILE)
    RUN/engine.log             vLLM's and Ray's logs                     (ENGINE_LOG_FILE)
    RUN/learning_curve.png     accuracy and length per iteration         (LEARNING_CURVE_FILE)
    RUN/checkpoints/           complete checkpoints (rllib_k15.runs.checkpoints)
    RUN/checkpoint             -> checkpoints/latest, for `k15 export`, `rllib evaluate`

``metrics.jsonl`` — every consumer (resume, ``k15 plot runs``, the experiment scripts) reads
it through :func:`read_metrics`, so a file is treated the same everywhere:

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

from rllib_k15.runs.integrity import write_durably

__all__ = [
    "CHECKPOINTS_DIR",
    "ENGINE_LOG_FILE",
    "EXPERIMENT_FILE",
    "LEARNING_CURVE_FILE",
    "METRICS_FILE",
    "RUN_INFO_FILE",
    "append_metrics_row",
    "portable_path",
    "read_metrics",
    "read_run_info",
    "truncate_metrics",
    "write_run_info",
]

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run.json"
EXPERIMENT_FILE = "experiment.yaml"
ENGINE_LOG_FILE = "engine.log"
LEARNING_CURVE_FILE = "learning_curve.png"
CHECKPOINTS_DIR = "checkpoints"


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


def append_metrics_row(path: str | Path, row: dict) -> None:
    """One metrics row, flushed and fsynced before the iteration counts as logged."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def truncate_metrics(path: str | Path, iteration: int) -> list[dict]:
    """Keep only rows with ``iteration <= iteration`` (the checkpoint being resumed), written
    atomically; the resumed run appends the rest, so every iteration appears once."""
    path = Path(path)
    kept = [r for r in read_metrics(path) if int(r.get("iteration", 0)) <= iteration]
    write_durably(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def write_run_info(run_dir: str | Path, info: dict) -> None:
    """``run.json``: what ``--resume`` needs to continue the run (written atomically)."""
    write_durably(Path(run_dir) / RUN_INFO_FILE, json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {str(run_dir)!r} is not a `k15 train` run directory"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def portable_path(value: str | os.PathLike[str]) -> str:
    """``value`` as written into result files: relative to the working directory when it lies
    under it, ``~/…`` under the home directory, else unchanged — so committed results do not
    carry one machine's absolute paths."""
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    path, cwd, home = Path(text), Path.cwd(), Path.home()
    for base, prefix in ((cwd, ""), (home, "~/")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return prefix + rel.as_posix() if rel.parts else (prefix.rstrip("/") or ".")
    return text
