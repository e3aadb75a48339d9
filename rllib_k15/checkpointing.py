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

Integrity: :func:`verify_checkpoint` checks a checkpoint against its manifest (sizes first,
then hashes) and raises :class:`CheckpointCorruptError` naming each truncated, missing or
altered file with the expected and found size or hash, before anything is unpickled.
:meth:`CheckpointManager.latest` (what ``k15 train --resume`` restores from) verifies and
skips, with a warning naming them, checkpoints that do not verify, falling back to the
newest one that does; if checkpoints exist but none verifies it raises rather than let a
resume silently start over. Checkpoints saved before manifests existed (a marker without
the ``"manifest"`` key) are accepted with a warning that they cannot be verified.

A SIGKILL at any point therefore leaves ``latest`` naming a complete checkpoint: before the
rename the new one is invisible, after it the pointer still names the previous one until
the pointer swap, which is a single rename. Leftover ``.tmp-*``/``.del-*`` directories are
removed by the next :class:`CheckpointManager`. :func:`truncate_metrics` drops the rows of
iterations the resumed run will redo, so ``metrics.jsonl`` has each iteration exactly once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rllib_k15.run_metrics import read_metrics  # noqa: F401  (re-exported: resume reads it here)

__all__ = [
    "CheckpointCorruptError",
    "CheckpointManager",
    "CheckpointSaveError",
    "fsync_tree",
    "read_metrics",
    "truncate_metrics",
    "verify_checkpoint",
    "write_manifest",
]

log = logging.getLogger(__name__)

MARKER = "k15_checkpoint.json"
MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "k15-checkpoint-manifest"
MANIFEST_VERSION = 1
HASH = "sha256"  # hashlib name; with SHA extensions (x86 SHA-NI, ARMv8) faster than blake2b
LATEST = "latest"
_PREFIX = "iter_"
_CHUNK = 1 << 20


class CheckpointCorruptError(ValueError):
    """A checkpoint that does not match its manifest (or whose manifest is missing or
    unreadable), or a checkpoint directory in which no checkpoint verifies.

    ``path``: the checkpoint (or checkpoints) directory; ``problems``: one line per
    damaged file, each naming the file relative to ``path``."""

    def __init__(self, message: str, path: Path | None = None, problems: tuple = ()) -> None:
        super().__init__(message)
        self.path = path
        self.problems = tuple(problems)


class CheckpointSaveError(OSError):
    """A save that failed (e.g. the disk is full); the message says which checkpoint
    ``latest`` still names. ``errno`` is the underlying error's; ``kept`` that checkpoint
    (None if there is none)."""

    def __init__(self, err_no: int | None, message: str, kept: Path | None = None) -> None:
        super().__init__(err_no, message)
        self.kept = kept

    def __str__(self) -> str:  # the message alone; it already names the cause
        return str(self.strerror)


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


def _write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and fsync it (inside a save's temp directory)."""
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _point_symlink(link: Path, target: str) -> None:
    """Atomically make ``link`` a symlink to ``target`` (relative), replacing what was there."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


# ---------------------------------------------------------------------- manifests
def _file_hash(path: Path, algorithm: str = HASH) -> str:
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):  # Python >= 3.11
            return hashlib.file_digest(fh, algorithm).hexdigest()
        digest = hashlib.new(algorithm)
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
        return digest.hexdigest()


def _tree(root: Path) -> list[str]:
    """Relative POSIX paths of every file and symlink under ``root`` except the manifest
    (sorted; symlinks are listed, not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def write_manifest(directory: str | Path) -> dict:
    """Write ``directory/MANIFEST.json``: format, version, hash algorithm and, per file
    (every file below ``directory`` but the manifest), its relative path, size and hash;
    a symlink is recorded by its target. Fsynced; returns the manifest."""
    root = Path(directory)
    files = []
    for rel in _tree(root):
        path = root / rel
        if path.is_symlink():
            files.append({"path": rel, "symlink": os.readlink(path)})
            continue
        size = path.stat().st_size
        files.append({"path": rel, "size": size, HASH: _file_hash(path)})
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "hash": HASH,
        "created_at": time.time(),
        "files": files,
    }
    _write_synced(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _manifest_problems(path: Path) -> tuple[dict | None, list[str]]:
    """(manifest, problems) of the checkpoint at ``path``; manifest None: there is none to
    check (problems then say whether that is an error)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        marker = _read_marker(path)
        if marker is not None and marker.get("manifest"):
            return None, [f"{MANIFEST} is missing (the checkpoint was saved with one)"]
        return None, []
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        return None, [f"{MANIFEST} is unreadable ({err})"]
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None, [f"{MANIFEST} is not a {MANIFEST_FORMAT} file"]
    version = manifest.get("version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        return None, [
            f"{MANIFEST} has format version {version!r}; this rllib-k15 reads version "
            f"{MANIFEST_VERSION} (upgrade rllib-k15 to load it)"
        ]
    algorithm, files = manifest.get("hash"), manifest.get("files")
    if algorithm not in hashlib.algorithms_available or not isinstance(files, list):
        return None, [f"{MANIFEST} is malformed (hash {algorithm!r}, files {type(files).__name__})"]
    problems, to_hash = [], []
    for entry in files:  # sizes first: a truncated file is found without hashing anything
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"{MANIFEST} has a malformed entry {entry!r}")
            continue
        file = path / rel
        if "symlink" in entry:
            if not file.is_symlink():
                problems.append(f"{rel} is missing (a symlink to {entry['symlink']!r} expected)")
            elif os.readlink(file) != entry["symlink"]:
                problems.append(
                    f"{rel} points to {os.readlink(file)!r}, expected {entry['symlink']!r}"
                )
            continue
        if not file.is_file() or file.is_symlink():
            problems.append(f"{rel} is missing (expected {entry.get('size')} bytes)")
            continue
        found = file.stat().st_size
        if found != entry.get("size"):
            how = (
                "truncated"
                if isinstance(entry.get("size"), int) and found < entry["size"]
                else "size differs"
            )
            problems.append(f"{rel} has {found} bytes, expected {entry.get('size')} ({how})")
            continue
        to_hash.append((rel, file, entry.get(algorithm)))
    for rel, file, expected in to_hash:
        found = _file_hash(file, algorithm)
        if found != expected:
            problems.append(
                f"{rel} has {algorithm} {found}, expected {expected} (contents altered)"
            )
    return manifest, problems


def verify_checkpoint(path: str | Path) -> dict | None:
    """Check the checkpoint directory ``path`` against its ``MANIFEST.json``: every file
    listed is present with its size (all checked first) and its hash. Returns the manifest.

    Raises :class:`CheckpointCorruptError` naming every missing, truncated or altered file
    with the expected and found size or hash, or a missing/unreadable manifest where the
    checkpoint's marker says it was saved with one. A checkpoint without a manifest that
    predates manifests (a ``k15 train`` marker without the ``"manifest"`` key) is accepted
    with a warning (returns None); so is, silently, a directory with neither (e.g. a Tune or
    plain ``Algorithm.save_to_path`` checkpoint: nothing to verify against).
    Call it before ``Algorithm.from_checkpoint`` / ``restore_from_path``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    manifest, problems = _manifest_problems(path)
    if problems:
        raise CheckpointCorruptError(
            f"checkpoint {path} is damaged, not loading it: " + "; ".join(problems),
            path=path,
            problems=problems,
        )
    if manifest is None and _read_marker(path) is not None:
        log.warning(
            "checkpoint %s has no %s (saved before checkpoint manifests): it cannot be "
            "verified; loading it anyway",
            path,
            MANIFEST,
        )
    return manifest


def _fingerprint(path: Path) -> tuple:
    """Cheap identity of a checkpoint's files (path, size, mtime, inode): a manager trusts
    what it verified or wrote itself while this is unchanged."""
    items = []
    for rel in _tree(path) + ([MANIFEST] if (path / MANIFEST).exists() else []):
        try:
            st = os.lstat(path / rel)
        except OSError:
            continue
        items.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(items)


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
        fingerprint = _fingerprint(path)
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
            _write_synced(tmp / MARKER, json.dumps(marker) + "\n")
            write_manifest(tmp)  # last: it covers every other file, the marker included
            fsync_tree(tmp)
            self._publish(tmp, final)
        except BaseException as err:
            renamed = created and not tmp.exists()  # into place; publishing failed after
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError) and not isinstance(err, CheckpointSaveError):
                raise self._save_error(err, iteration, tmp, final, renamed) from err
            raise
        self._verified[final.name] = _fingerprint(final)
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
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._verified.pop(final.name, None)
        _point_symlink(self.root / LATEST, final.name)
        stable = self.run_dir / "checkpoint"
        if not stable.is_symlink():
            if stable.exists():  # a plain directory from an older version: leave it alone
                return
            _point_symlink(stable, f"checkpoints/{LATEST}")

    def rotate(self) -> list[Path]:
        """Delete complete checkpoints beyond ``keep`` (oldest first, never ``latest``).
        Checkpoints this manager found damaged (see :meth:`latest`) do not count towards
        ``keep``; once a newer checkpoint is published they are deleted."""
        latest = self._published()
        newest = self.iteration_of(latest) if latest is not None else None
        complete = self.complete()
        bad = [(i, p) for i, p in complete if self._bad.get(p.name) == _fingerprint(p)]
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
        _fsync_dir(self.root)
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
