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
``checkpoints/.tmp-iter_000006-<pid>`` directory; a ``k15_checkpoint.json`` marker (the
iteration) is written, then, last, ``MANIFEST.json``: the relative path, size and sha256 of
every other file in the directory (marker included); every file and directory is fsynced;
the directory is renamed to ``iter_000006`` (atomic within one file system) and its parent
fsynced; then ``latest`` is re-pointed by renaming a fresh symlink over it. Only then are
checkpoints beyond ``keep`` removed, oldest first (renamed to a hidden ``.del-*`` name
before deletion, so a half-deleted directory never looks complete). A save that fails
(e.g. ``ENOSPC``: disk full) removes its temp directory and raises
:class:`CheckpointSaveError` naming the checkpoint ``latest`` still names.

A SIGKILL at any point therefore leaves ``latest`` naming a complete checkpoint: before the
rename the new one is invisible, after it the pointer still names the previous one until
the pointer swap, which is a single rename. Leftover ``.tmp-*``/``.del-*`` directories are
removed by the next :class:`CheckpointManager`.
:func:`rllib_k15.runs.run_files.truncate_metrics` drops the rows of
iterations the resumed run will redo, so ``metrics.jsonl`` has each iteration exactly once.

Integrity (manifests, verification) is :mod:`rllib_k15.runs.integrity`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rllib_k15.runs.integrity import (
    MANIFEST,
    MARKER,
    CheckpointCorruptError,
    CheckpointSaveError,
    fsync_dir,
    fsync_tree,
    point_symlink,
    stat_fingerprint,
    verify_checkpoint,
    write_manifest,
    write_synced,
)

__all__ = [
    "CheckpointCorruptError",
    "CheckpointManager",
    "CheckpointSaveError",
    "verify_checkpoint",
]

log = logging.getLogger(__name__)

LATEST = "latest"  # checkpoints/latest -> the newest complete checkpoint
_PREFIX = "iter_"


class CheckpointManager:
    """Atomic, rotated, verified checkpoints under ``run_dir/checkpoints`` (see the module
    docstring).

    keep: how many complete checkpoints to keep (>= 1); the newest ``keep`` survive.
    """

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"`keep_checkpoints` ({keep!r}) must be an integer >= 1")
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.keep = keep
        self._verified: dict[str, tuple] = {}  # checkpoint name -> fingerprint when verified
        self._bad: dict[str, tuple] = {}  # checkpoint name -> fingerprint when it failed
        self._errors: dict[str, CheckpointCorruptError] = {}  # ... and why
        self._warned: dict[str, tuple] = {}  # damaged checkpoints already warned about
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
        """(iteration, path) of every complete checkpoint (marker present), oldest first.
        Complete is not verified: see :meth:`latest` and :func:`verify_checkpoint`."""
        found = []
        for path in self.root.glob(f"{_PREFIX}*"):
            iteration = self.iteration_of(path)
            if path.is_dir() and not path.is_symlink() and iteration is not None:
                found.append((iteration, path))
        return sorted(found)

    def _pointed(self) -> Path | None:
        """What ``latest`` points at, if that is a complete checkpoint (not verified)."""
        pointer = self.root / LATEST
        if pointer.is_symlink():
            target = self.root / os.readlink(pointer)
            if self.iteration_of(target) is not None:
                return target
        return None

    def _published(self) -> Path | None:
        """The checkpoint ``latest`` names, else the newest complete one; no hashing."""
        pointed = self._pointed()
        if pointed is not None:
            return pointed
        complete = self.complete()
        return complete[-1][1] if complete else None

    def _check(self, path: Path) -> None:
        """verify_checkpoint, remembered per checkpoint while its files are unchanged."""
        fingerprint = stat_fingerprint(path)
        if self._verified.get(path.name) == fingerprint:
            return
        if self._bad.get(path.name) == fingerprint:  # found damaged before: no re-hashing
            raise self._errors[path.name]
        try:
            verify_checkpoint(path)
        except CheckpointCorruptError as err:
            self._bad[path.name] = fingerprint
            self._errors[path.name] = err
            raise
        self._bad.pop(path.name, None)
        self._verified[path.name] = fingerprint

    def latest(self) -> Path | None:
        """The checkpoint to resume from: the one ``latest`` points at, else the newest
        complete one, that verifies against its manifest (:func:`verify_checkpoint`).

        Checkpoints that do not verify are skipped with a warning naming them and the
        damaged files, and the next newer-to-older one is tried; one without a manifest
        from before manifests existed is accepted with a warning. None if there is no
        checkpoint; :class:`CheckpointCorruptError` if there are checkpoints but none
        verifies (a resume must not silently start over)."""
        pointed = self._pointed()
        ordered = sorted(self.complete(), reverse=True)
        candidates = ([pointed] if pointed is not None else []) + [
            p for _, p in ordered if pointed is None or p.name != pointed.name
        ]
        skipped, news = [], False
        for path in candidates:
            try:
                self._check(path)
            except CheckpointCorruptError as err:
                skipped.append(err)
                if self._warned.get(path.name) != self._bad[path.name]:  # once per damage
                    self._warned[path.name] = self._bad[path.name]
                    log.warning("skipping checkpoint %s: %s", path, "; ".join(err.problems))
                    news = True
                continue
            if news:
                log.warning(
                    "using checkpoint %s (iteration %s), the newest one that verifies; skipped %s",
                    path,
                    self.iteration_of(path),
                    ", ".join(str(e.path.name) for e in skipped),
                )
            return path
        if not skipped:
            return None
        details = " | ".join(f"{e.path.name}: {'; '.join(e.problems)}" for e in skipped)
        raise CheckpointCorruptError(
            f"no checkpoint in {self.root} verifies, so there is nothing to resume from "
            f"({details}). Restore a checkpoint from a backup, or move these away and start "
            f"a new run",
            path=self.root,
            problems=tuple(p for e in skipped for p in e.problems),
        )

    # ------------------------------------------------------------------ saving
    def save(self, write: Callable[[str], object], iteration: int) -> Path:
        """Checkpoint ``iteration``: ``write(tmp_dir)`` fills a fresh directory (e.g.
        ``algo.save_to_path``), then the marker and, last, the manifest are written, and it
        is made durable, published and rotated.

        If anything fails before the checkpoint is published (e.g. ``ENOSPC``), the temp
        directory is removed, ``latest`` still names the previous checkpoint, and an
        OSError is raised as :class:`CheckpointSaveError` saying so (other exceptions are
        re-raised after the same clean-up)."""
        final = self.root / self.name_for(iteration)
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        created = False
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            created = True
            write(str(tmp.resolve()))
            marker = {"iteration": int(iteration), "saved_at": time.time(), "manifest": MANIFEST}
            write_synced(tmp / MARKER, json.dumps(marker) + "\n")
            write_manifest(tmp)  # last: it covers every other file, the marker included
            fsync_tree(tmp)
            self._publish(tmp, final)
        except BaseException as err:
            renamed = created and not tmp.exists()  # into place; publishing failed after
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError) and not isinstance(err, CheckpointSaveError):
                raise self._save_error(err, iteration, tmp, final, renamed) from err
            raise
        self._verified[final.name] = stat_fingerprint(final)
        self._bad.pop(final.name, None)
        self.rotate()
        return final

    def _save_error(
        self, err: OSError, iteration: int, tmp: Path, final: Path, renamed: bool
    ) -> OSError:
        kept = self._published()
        what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        if err.errno == errno.ENOSPC:
            what = f"the disk is full ({what})"
        if renamed:  # the pointer swap (or what follows it) failed
            head = f"checkpoint of iteration {iteration} was written to {final} but `latest` "
            head += f"was not re-pointed: {what}"
        else:
            head = f"checkpoint of iteration {iteration} was NOT saved: {what}"
            if tmp.exists():
                head += f"; could not remove its partial directory {tmp}"
            else:
                head += f"; removed its partial directory {tmp}"
        if kept is not None:
            tail = f"; `latest` still names {kept} (iteration {self.iteration_of(kept)})"
        else:
            tail = "; there is no earlier checkpoint"
        if err.errno == errno.ENOSPC:
            tail += f". Free disk space, then continue with `k15 train --resume {self.run_dir}`"
        return CheckpointSaveError(err.errno, head + tail, kept=kept)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the durable temp directory into place and re-point ``latest``."""
        old = None
        if final.exists():  # the same iteration saved again (e.g. a redone iteration)
            old = self.root / f".del-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            if old is not None:
                os.rename(old, final)  # put the previous one back
            raise
        fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._verified.pop(final.name, None)
        point_symlink(self.root / LATEST, final.name)
        stable = self.run_dir / "checkpoint"
        if not stable.is_symlink():
            if stable.exists():  # a plain directory from an older version: leave it alone
                return
            point_symlink(stable, f"checkpoints/{LATEST}")

    def rotate(self) -> list[Path]:
        """Delete complete checkpoints beyond ``keep`` (oldest first, never ``latest``).
        Checkpoints this manager found damaged (see :meth:`latest`) do not count towards
        ``keep``; once a newer checkpoint is published they are deleted."""
        latest = self._published()
        newest = self.iteration_of(latest) if latest is not None else None
        complete = self.complete()
        bad = [(i, p) for i, p in complete if self._bad.get(p.name) == stat_fingerprint(p)]
        good = [p for i, p in complete if (i, p) not in bad]
        removed = []
        for path in good[: max(0, len(good) - self.keep)]:
            if latest is not None and path.resolve() == latest.resolve():
                continue
            self._delete(path)
            removed.append(path)
        for iteration, path in bad:
            if newest is not None and iteration < newest:
                log.warning("deleting damaged checkpoint %s (superseded by %s)", path, latest)
                self._delete(path)
                removed.append(path)
        return removed

    def _delete(self, path: Path) -> None:
        doomed = self.root / f".del-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(path, doomed)
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)
        self._verified.pop(path.name, None)
        self._bad.pop(path.name, None)

    def _remove_leftovers(self) -> None:
        """Remove what an interrupted save or rotation left behind."""
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".del-", f".{LATEST}.tmp-")):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            elif path.name.startswith(_PREFIX) and self.iteration_of(path) is None:
                if (path / MANIFEST).is_file():  # saved whole, its marker damaged since
                    log.warning(
                        "removing checkpoint %s: its marker %s is missing or unreadable",
                        path,
                        MARKER,
                    )
                shutil.rmtree(path, ignore_errors=True)  # no marker: never completed
