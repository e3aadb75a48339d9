"""Crash-safe checkpoints of a ``k15 train`` run: atomic writes, a ``latest`` pointer, keep-N.

Layout of a run directory (``k15 train --out RUN``)::

    RUN/metrics.jsonl                    one JSON row per finished iteration
    RUN/run.json                         how the run was started (for ``--resume``)
    RUN/experiment.yaml                  copy of the experiment file
    RUN/checkpoints/iter_000004/         complete RLlib checkpoints (Algorithm.save_to_path)
    RUN/checkpoints/iter_000006/
    RUN/checkpoints/latest -> iter_000006     relative symlink, swapped atomically
    RUN/checkpoint -> checkpoints/latest      stable path for `k15 export`, `rllib evaluate`

Save protocol (:meth:`CheckpointManager.save`): the algorithm writes into a hidden
``checkpoints/.tmp-iter_000006-<pid>`` directory; every file and directory in it is fsynced;
a ``k15_checkpoint.json`` marker (the iteration) is written and fsynced last; the directory
is renamed to ``iter_000006`` (atomic within one file system) and its parent fsynced; then
``latest`` is re-pointed by renaming a fresh symlink over it. Only then are checkpoints
beyond ``keep`` removed, oldest first (renamed to a hidden ``.del-*`` name before deletion,
so a half-deleted directory never looks complete).

A SIGKILL at any point therefore leaves ``latest`` naming a complete checkpoint: before the
rename the new one is invisible, after it the pointer still names the previous one until
the pointer swap, which is a single rename. Leftover ``.tmp-*``/``.del-*`` directories are
removed by the next :class:`CheckpointManager`. :func:`truncate_metrics` drops the rows of
iterations the resumed run will redo, so ``metrics.jsonl`` has each iteration exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CheckpointManager",
    "fsync_tree",
    "read_metrics",
    "truncate_metrics",
]

MARKER = "k15_checkpoint.json"
LATEST = "latest"
_PREFIX = "iter_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> int:
    """fsync every regular file and directory under ``root`` (deepest first); returns
    the number of files synced. Symlinks are not followed."""
    root = Path(root)
    files = 0
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            files += 1
        _fsync_dir(Path(dirpath))
    return files


def _write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + fsync + rename (readers see old or new)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _point_symlink(link: Path, target: str) -> None:
    """Atomically make ``link`` a symlink to ``target`` (relative), replacing what was there."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


class CheckpointManager:
    """Atomic, rotated checkpoints under ``run_dir/checkpoints`` (see the module docstring).

    keep: how many complete checkpoints to keep (>= 1); the newest ``keep`` survive.
    """

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"`keep_checkpoints` ({keep!r}) must be an integer >= 1")
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()

    # ------------------------------------------------------------------ queries
    @staticmethod
    def name_for(iteration: int) -> str:
        return f"{_PREFIX}{iteration:06d}"

    @staticmethod
    def iteration_of(path: str | Path) -> int | None:
        """The iteration recorded in a checkpoint's marker; None if it is not complete."""
        try:
            marker = json.loads((Path(path) / MARKER).read_text())
            return int(marker["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def complete(self) -> list[tuple[int, Path]]:
        """(iteration, path) of every complete checkpoint, oldest first."""
        found = []
        for path in self.root.glob(f"{_PREFIX}*"):
            iteration = self.iteration_of(path)
            if path.is_dir() and not path.is_symlink() and iteration is not None:
                found.append((iteration, path))
        return sorted(found)

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` points at; if the pointer is missing or names an
        incomplete directory, the newest complete checkpoint; None if there is none."""
        pointer = self.root / LATEST
        if pointer.is_symlink():
            target = self.root / os.readlink(pointer)
            if self.iteration_of(target) is not None:
                return target
        complete = self.complete()
        return complete[-1][1] if complete else None

    # ------------------------------------------------------------------ saving
    def save(self, write: Callable[[str], object], iteration: int) -> Path:
        """Checkpoint ``iteration``: ``write(tmp_dir)`` fills a fresh directory (e.g.
        ``algo.save_to_path``), then it is made durable, published and rotated."""
        final = self.root / self.name_for(iteration)
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(str(tmp.resolve()))
        marker = {"iteration": int(iteration), "saved_at": time.time()}
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        fsync_tree(tmp)
        self._publish(tmp, final)
        self.rotate()
        return final

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the durable temp directory into place and re-point ``latest``."""
        if final.exists():  # the same iteration saved again (e.g. a redone iteration)
            self._delete(final)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        _point_symlink(self.root / LATEST, final.name)
        stable = self.run_dir / "checkpoint"
        if not stable.is_symlink():
            if stable.exists():  # a plain directory from an older version: leave it alone
                return
            _point_symlink(stable, f"checkpoints/{LATEST}")

    def rotate(self) -> list[Path]:
        """Delete complete checkpoints beyond ``keep`` (oldest first, never ``latest``)."""
        latest = self.latest()
        complete = [p for _, p in self.complete()]
        removed = []
        for path in complete[: max(0, len(complete) - self.keep)]:
            if latest is not None and path.resolve() == latest.resolve():
                continue
            self._delete(path)
            removed.append(path)
        return removed

    def _delete(self, path: Path) -> None:
        doomed = self.root / f".del-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(path, doomed)
        _fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Remove what an interrupted save or rotation left behind."""
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".del-")):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            elif path.name.startswith(_PREFIX) and self.iteration_of(path) is None:
                shutil.rmtree(path, ignore_errors=True)  # no marker: never completed


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl``; a torn last line (killed mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(path: str | Path, iteration: int) -> list[dict]:
    """Keep only rows with ``iteration <= iteration`` (the checkpoint being resumed), written
    atomically; the resumed run appends the rest, so every iteration appears once."""
    path = Path(path)
    kept = [r for r in read_metrics(path) if int(r.get("iteration", 0)) <= iteration]
    _write_durably(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def write_run_info(run_dir: str | Path, info: dict) -> None:
    """``run.json``: what ``--resume`` needs to continue the run (written atomically)."""
    _write_durably(Path(run_dir) / "run.json", json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {str(run_dir)!r} is not a `k15 train` run directory"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
