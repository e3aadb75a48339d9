"""Checkpoints prove they are whole: a checksum manifest written last, verified on load.

- every checkpoint gets ``MANIFEST.json`` (path, size, sha256 of every file, marker
  included; format version), written last inside the atomic save;
- one flipped byte or a truncated file fails :func:`verify_checkpoint` naming the file
  with expected vs found hash / size (a real RLlib ``Checkpointable`` checkpoint would
  otherwise restore the flipped byte silently);
- ``CheckpointManager.latest()`` (what ``k15 train --resume`` restores from) skips a
  damaged newest checkpoint with a warning and falls back to the previous good one; if none
  verifies it raises instead of letting the resume start over; a checkpoint from before
  manifests is accepted with a warning;
- a disk-full error (``ENOSPC``) in the middle of a save leaves the previous checkpoint as
  ``latest``, no temp directory, and an error that names the kept checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from rllib_k15.runs import integrity
from rllib_k15.runs.checkpoints import (
    CheckpointCorruptError,
    CheckpointManager,
    CheckpointSaveError,
    verify_checkpoint,
)

WEIGHTS = "learner_group/weights.bin"
RUNS_LOGGER = "rllib_k15.runs"  # checkpoints and integrity log under it


def _writer(tag: str, size: int = 4096):
    """A stand-in for ``algo.save_to_path``: a few files and a sub-directory."""

    def write(path: str) -> None:
        root = Path(path)
        (root / "learner_group").mkdir()
        (root / WEIGHTS).write_bytes(os.urandom(size))
        (root / "algorithm_state.json").write_text(json.dumps({"tag": tag}))

    return write


def _tag(path: Path) -> str:
    return json.loads((path / "algorithm_state.json").read_text())["tag"]


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _checkpoints(tmp_path: Path, keep: int, iterations) -> CheckpointManager:
    manager = CheckpointManager(tmp_path, keep=keep)
    for iteration in iterations:
        manager.save(_writer(f"it{iteration}"), iteration)
    return manager


def _warnings(caplog) -> str:
    return "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(RUNS_LOGGER) and r.levelno >= logging.WARNING
    )


def test_manifest_lists_every_file_with_size_and_hash(tmp_path):
    ckpt = _checkpoints(tmp_path, 2, [1]).latest()
    manifest = json.loads((ckpt / "MANIFEST.json").read_text())
    assert manifest["format"] == "k15-checkpoint-manifest" and manifest["version"] == 1
    assert manifest["hash"] == "sha256"
    files = {e["path"]: e for e in manifest["files"]}
    # written last: it covers the marker too, and nothing is outside it
    assert set(files) == {WEIGHTS, "algorithm_state.json", "k15_checkpoint.json"}
    for rel, entry in files.items():
        data = (ckpt / rel).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert verify_checkpoint(ckpt) == manifest


def test_one_corrupted_byte_fails_the_load_naming_the_file_and_hashes(tmp_path):
    ckpt = _checkpoints(tmp_path, 2, [1]).latest()
    expected = hashlib.sha256((ckpt / WEIGHTS).read_bytes()).hexdigest()
    _flip_byte(ckpt / WEIGHTS)
    found = hashlib.sha256((ckpt / WEIGHTS).read_bytes()).hexdigest()
    with pytest.raises(CheckpointCorruptError) as info:
        verify_checkpoint(ckpt)
    message = str(info.value)
    assert str(ckpt) in message and WEIGHTS in message
    assert f"sha256 {found}, expected {expected}" in message
    assert info.value.problems == (f"{WEIGHTS} has sha256 {found}, expected {expected} "
                                   "(contents altered)",)  # fmt: skip


def test_truncated_file_fails_the_load_with_expected_and_found_size(tmp_path):
    ckpt = _checkpoints(tmp_path, 2, [1]).latest()
    with open(ckpt / WEIGHTS, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(CheckpointCorruptError, match=rf"{WEIGHTS} has 1000 bytes, expected "
                       r"4096 \(truncated\)"):  # fmt: skip
        verify_checkpoint(ckpt)
    (ckpt / WEIGHTS).unlink()
    with pytest.raises(CheckpointCorruptError, match=rf"{WEIGHTS} is missing"):
        verify_checkpoint(ckpt)


def test_real_rllib_checkpoint_is_verified_before_anything_is_unpickled(tmp_path):
    """A real RLlib ``Checkpointable`` layout (state.pkl, class_and_ctor_args.pkl,
    metadata.json): a flipped byte in the pickled weights restores *silently* wrong in
    RLlib; verification catches it first."""
    np = pytest.importorskip("numpy")
    from ray.rllib.utils.checkpoints import Checkpointable

    class Tiny(Checkpointable):
        def __init__(self, n: int = 1000) -> None:
            self.w = np.zeros(n, dtype=np.float32)

        def get_state(self, components=None, *, not_components=None, **kwargs):
            return {"w": self.w}

        def set_state(self, state) -> None:
            self.w = state["w"]

        def get_ctor_args_and_kwargs(self):
            return (), {"n": len(self.w)}

    manager = CheckpointManager(tmp_path, keep=3)
    saved = {}
    for iteration in (1, 2):
        module = Tiny()
        module.w += iteration
        saved[iteration] = module.w.copy()
        manager.save(module.save_to_path, iteration)
    newest = manager.latest()
    assert "state.pkl" in {e["path"] for e in verify_checkpoint(newest)["files"]}
    _flip_byte(newest / "state.pkl")  # inside the float32 data

    unchecked = Tiny()
    unchecked.restore_from_path(newest)  # RLlib itself does not notice
    assert not np.array_equal(unchecked.w, saved[2])
    with pytest.raises(CheckpointCorruptError, match=r"state\.pkl has sha256"):
        verify_checkpoint(newest)
    resumed_from = CheckpointManager(tmp_path, keep=3).latest()  # what --resume does
    assert resumed_from.name == "iter_000001"
    restored = Tiny()
    restored.restore_from_path(resumed_from)
    assert np.array_equal(restored.w, saved[1])


def test_resume_skips_a_corrupt_newest_checkpoint_with_a_warning(tmp_path, caplog):
    _checkpoints(tmp_path, 3, [1, 2, 3])
    newest = tmp_path / "checkpoints" / "iter_000003"
    assert os.readlink(tmp_path / "checkpoints" / "latest") == newest.name
    _flip_byte(newest / WEIGHTS)

    caplog.set_level(logging.WARNING, logger=RUNS_LOGGER)
    manager = CheckpointManager(tmp_path, keep=3)  # a resumed process
    chosen = manager.latest()
    assert chosen == tmp_path / "checkpoints" / "iter_000002" and _tag(chosen) == "it2"
    warned = _warnings(caplog)
    assert f"skipping checkpoint {newest}: {WEIGHTS} has sha256" in warned
    assert f"using checkpoint {chosen} (iteration 2)" in warned and "iter_000003" in warned
    caplog.clear()
    assert manager.latest() == chosen and not _warnings(caplog)  # warned once
    assert newest.is_dir()  # left in place for inspection, replaced when the iteration is
    manager.save(_writer("redone"), 3)  # redone and saved again
    assert _tag(manager.latest()) == "redone"
    assert _tag(CheckpointManager(tmp_path, keep=3).latest()) == "redone"


def test_a_missing_manifest_is_skipped_and_a_damaged_one_too(tmp_path, caplog):
    _checkpoints(tmp_path, 3, [1, 2, 3])
    (tmp_path / "checkpoints" / "iter_000003" / "MANIFEST.json").unlink()
    (tmp_path / "checkpoints" / "iter_000002" / "MANIFEST.json").write_text('{"format": ')
    caplog.set_level(logging.WARNING, logger=RUNS_LOGGER)
    assert CheckpointManager(tmp_path, keep=3).latest().name == "iter_000001"
    warned = _warnings(caplog)
    assert "iter_000003: MANIFEST.json is missing" in warned
    assert "iter_000002: MANIFEST.json is unreadable" in warned


def test_no_good_checkpoint_raises_instead_of_starting_over(tmp_path):
    _checkpoints(tmp_path, 2, [1, 2])
    for name in ("iter_000001", "iter_000002"):
        _flip_byte(tmp_path / "checkpoints" / name / WEIGHTS)
    with pytest.raises(CheckpointCorruptError, match=r"no checkpoint in .* verifies") as info:
        CheckpointManager(tmp_path, keep=2).latest()
    assert "iter_000001: " in str(info.value) and "iter_000002: " in str(info.value)


def test_checkpoint_from_before_manifests_is_accepted_with_a_warning(tmp_path, caplog):
    ckpt = _checkpoints(tmp_path, 2, [1]).latest()
    (ckpt / "MANIFEST.json").unlink()  # what an older rllib-k15 wrote:
    (ckpt / "k15_checkpoint.json").write_text(json.dumps({"iteration": 1, "saved_at": 0.0}))
    caplog.set_level(logging.WARNING, logger=RUNS_LOGGER)
    assert CheckpointManager(tmp_path, keep=2).latest() == ckpt
    assert f"checkpoint {ckpt} has no MANIFEST.json (saved before checkpoint manifests)" in (
        _warnings(caplog)
    )
    assert verify_checkpoint(ckpt) is None


def test_a_damaged_checkpoint_does_not_take_a_keep_slot(tmp_path):
    _checkpoints(tmp_path, 2, [1, 2, 3])  # keeps 2 and 3
    _flip_byte(tmp_path / "checkpoints" / "iter_000003" / WEIGHTS)
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.latest().name == "iter_000002"  # resume from 2 ...
    manager.save(_writer("it4"), 4)  # ... and later save 4 (e.g. --checkpoint-every 2)
    # 2 stays (one of the 2 good ones kept); damaged 3 is superseded and deleted
    assert [i for i, _ in manager.complete()] == [2, 4]


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "state.pkl")


@pytest.mark.parametrize("where", ["algorithm write", "manifest write"])
def test_disk_full_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    manager = _checkpoints(tmp_path, 2, [1, 2])
    previous = tmp_path / "checkpoints" / "iter_000002"

    if where == "algorithm write":

        def write(path: str) -> None:  # writes part of the checkpoint, then the disk is full
            (Path(path) / "learner_group").mkdir()
            (Path(path) / WEIGHTS).write_bytes(b"x" * 100_000)
            _enospc()

    else:
        write = _writer("it3")
        real = integrity.write_synced

        def write_synced(path: Path, text: str) -> None:
            if path.name == "MANIFEST.json":
                path.write_text(text[: len(text) // 2])  # half written, then ENOSPC
                _enospc()
            real(path, text)

        monkeypatch.setattr(integrity, "write_synced", write_synced)

    with pytest.raises(CheckpointSaveError) as info:
        manager.save(write, 3)
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.kept == previous
    message = str(err)
    assert "checkpoint of iteration 3 was NOT saved: the disk is full" in message
    assert "removed its partial directory" in message and ".tmp-iter_000003" in message
    assert f"`latest` still names {previous} (iteration 2)" in message
    assert f"k15 train --resume {tmp_path}" in message

    root = tmp_path / "checkpoints"
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temp dir
    assert os.readlink(root / "latest") == "iter_000002"
    assert not (root / "iter_000003").exists()
    monkeypatch.undo()
    resumed = CheckpointManager(tmp_path, keep=2)
    assert resumed.latest() == previous and _tag(previous) == "it2"
    assert [i for i, _ in resumed.complete()] == [1, 2]
