"""Checkpoint integrity and durable writes: manifests, verification, fsync, atomic renames.

Integrity: :func:`verify_checkpoint` checks a checkpoint against its manifest (sizes first,
then hashes) and raises :class:`CheckpointCorruptError` naming each truncated, missing or
altered file with the expected and found size or hash, before anything is unpickled.
:meth:`CheckpointManager.latest` (what ``k15 train --resume`` restores from) verifies and
skips, with a warning naming them, checkpoints that do not verify, falling back to the
newest one that does; if checkpoints exist but none verifies it raises rather than let a
resume silently start over. Checkpoints saved before manifests existed (a marker without
the ``"manifest"`` key) are accepted with a warning that they cannot be verified.

The helpers here write files so that a reader sees the old or the new content, never half of
one (temp file + fsync + rename + fsync of the parent), for checkpoints and run files alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

__all__ = [
    "HASH",
    "MANIFEST",
    "MARKER",
    "CheckpointCorruptError",
    "CheckpointSaveError",
    "fsync_dir",
    "fsync_tree",
    "point_symlink",
    "read_marker",
    "stat_fingerprint",
    "verify_checkpoint",
    "write_durably",
    "write_manifest",
    "write_synced",
]

log = logging.getLogger(__name__)

MARKER = "k15_checkpoint.json"
MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "k15-checkpoint-manifest"
MANIFEST_VERSION = 1
HASH = "sha256"  # hashlib name; with SHA extensions (x86 SHA-NI, ARMv8) faster than blake2b
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


def fsync_dir(path: Path) -> None:
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
        fsync_dir(Path(dirpath))
    return files


def write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + fsync + rename (readers see old or new)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and fsync it (inside a save's temp directory)."""
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def point_symlink(link: Path, target: str) -> None:
    """Atomically make ``link`` a symlink to ``target`` (relative), replacing what was there."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


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
    write_synced(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_marker(path: Path) -> dict | None:
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
        marker = read_marker(path)
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
    if manifest is None and read_marker(path) is not None:
        log.warning(
            "checkpoint %s has no %s (saved before checkpoint manifests): it cannot be "
            "verified; loading it anyway",
            path,
            MANIFEST,
        )
    return manifest


def stat_fingerprint(path: Path) -> tuple:
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
