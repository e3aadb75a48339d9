"""CheckpointManager: atomic publish, `latest` pointer, keep-N rotation, kill during a save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rllib_k15.runs.checkpoints import CheckpointManager
from rllib_k15.runs.run_files import read_metrics, truncate_metrics


def _writer(tag: str):
    """A stand-in for ``algo.save_to_path``: a few files and a sub-directory."""

    def write(path: str) -> None:
        root = Path(path)
        (root / "learner_group").mkdir()
        (root / "learner_group" / "weights.bin").write_bytes(os.urandom(4096))
        (root / "algorithm_state.json").write_text(json.dumps({"tag": tag}))

    return write


def _tag(path: Path) -> str:
    return json.loads((path / "algorithm_state.json").read_text())["tag"]


def test_save_points_latest_and_rotates_keep_n(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.latest() is None
    for iteration in (1, 2, 3, 4):
        manager.save(_writer(f"it{iteration}"), iteration)
    assert [i for i, _ in manager.complete()] == [3, 4]
    assert manager.latest() == tmp_path / "checkpoints" / "iter_000004"
    assert os.readlink(tmp_path / "checkpoints" / "latest") == "iter_000004"  # relative
    assert _tag(tmp_path / "checkpoint") == "it4"  # stable path follows `latest`
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_saving_an_iteration_again_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(_writer("first"), 5)
    manager.save(_writer("redone"), 5)
    assert [i for i, _ in manager.complete()] == [5] and _tag(manager.latest()) == "redone"


def test_broken_pointer_falls_back_to_newest_complete(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(_writer("a"), 1)
    manager.save(_writer("b"), 2)
    os.unlink(tmp_path / "checkpoints" / "iter_000002" / "k15_checkpoint.json")  # incomplete
    assert _tag(manager.latest()) == "a"
    (tmp_path / "checkpoints" / "latest").unlink()
    assert _tag(manager.latest()) == "a"
    # a new manager removes the directory that never completed
    assert [i for i, _ in CheckpointManager(tmp_path, keep=3).complete()] == [1]
    assert not (tmp_path / "checkpoints" / "iter_000002").exists()


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"`keep_checkpoints` \(0\) must be an integer >= 1"):
        CheckpointManager(tmp_path, keep=0)


# The child saves checkpoints 1 and 2, then checkpoint 3 with a writer that stops midway
# ("write") or lets the write finish and stops just before the rename ("publish").
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from rllib_k15.runs.checkpoints import CheckpointManager
    run, hold, flag = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    manager = CheckpointManager(run, keep=2)

    def writer(tag, stop=False):
        def write(path):
            (Path(path) / "algorithm_state.json").write_text('{"tag": "%s"}' % tag)
            (Path(path) / "part1.bin").write_bytes(b"x" * 100_000)
            if stop and hold == "write":
                flag.write_text("held"); time.sleep(600)
            (Path(path) / "part2.bin").write_bytes(b"y" * 100_000)
        return write

    manager.save(writer("it1"), 1)
    manager.save(writer("it2"), 2)
    publish = CheckpointManager._publish
    def held_publish(self, tmp, final):
        flag.write_text("held"); time.sleep(600)
    if hold == "publish":
        CheckpointManager._publish = held_publish
    manager.save(writer("it3", stop=True), 3)
""")


@pytest.mark.parametrize("hold", ["write", "publish"])
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path, hold):
    run, flag = tmp_path / "run", tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run), hold, str(flag)])
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, "child exited before the hold point"
        assert time.monotonic() < deadline, "child never reached the hold point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the interrupted save should have left its temp directory"
    manager = CheckpointManager(run, keep=2)  # what `k15 train --resume` does first
    assert _tag(manager.latest()) == "it2"
    assert (manager.latest() / "part2.bin").stat().st_size == 100_000  # complete
    assert [i for i, _ in manager.complete()] == [1, 2]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_truncate_metrics_drops_redone_rows_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"iteration": i, "accuracy": i / 10} for i in range(0, 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 5, "acc')
    assert len(read_metrics(path)) == 5  # the torn line is skipped
    kept = truncate_metrics(path, 2)
    assert [r["iteration"] for r in kept] == [0, 1, 2]
    assert [r["iteration"] for r in read_metrics(path)] == [0, 1, 2]
    assert path.read_text().endswith("\n")
