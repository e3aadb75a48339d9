"""Helpers of the crash tests: start `k15 train` in a child process, SIGKILL it at a hold point."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import psutil

from support.paths import support_command, support_env


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child (``tests/`` on ``PYTHONPATH``: it runs
    ``support.train_harness``); pass ``RAY_ADDRESS`` (conftest ``ray_address``) so the
    child joins the session's Ray instance."""
    env = support_env()
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0", **extra)
    return env


def run_k15(argv: list[str], log: Path, timeout: float = 600, **env: str) -> None:
    """Run ``k15 <argv>`` to completion; fail with the log tail if it does not exit 0."""
    with open(log, "w") as out:
        done = subprocess.run(
            support_command("train_harness", *argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(**env),
            timeout=timeout,
            start_new_session=True,
        )
    assert done.returncode == 0, log.read_text()[-4000:]


def start_k15(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(
        support_command("train_harness", *argv),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=child_env(**env),
        start_new_session=True,  # its own process group: Ray's helpers included
    )


def kill_at_hold(argv: list[str], hold: str, tmp: Path, timeout: float = 600) -> str:
    """Run ``k15 <argv>`` until it reaches ``hold`` (see train_harness.py), then SIGKILL its
    whole process group, like a preempted machine. Returns what the hold file said."""
    hold_file = tmp / f"held-{hold.replace(':', '-')}"
    log = tmp / f"log-{hold.replace(':', '-')}.txt"
    proc = start_k15(argv, log, K15_TEST_HOLD=hold, K15_TEST_HOLD_FILE=str(hold_file))
    deadline = time.monotonic() + timeout
    try:
        while not hold_file.exists():
            if proc.poll() is not None:
                raise AssertionError(
                    f"exited ({proc.returncode}) before {hold}:\n" + log.read_text()[-4000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"did not reach {hold}:\n" + log.read_text()[-4000:])
            time.sleep(0.2)
    finally:
        kill_group(proc)
    return hold_file.read_text()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it is ours: started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    for _ in range(50):  # let the kernel finish tearing the group down
        if not group_members(proc.pid):
            return
        time.sleep(0.1)


def group_members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def algorithm_state(checkpoint: Path) -> dict:
    """The algorithm's own saved state (problem buffer, partial-rollout store, ...)."""
    with open(checkpoint / "algorithm_state.pkl", "rb") as fh:
        return pickle.load(fh)


def buffer_state(checkpoint: Path) -> dict:
    """The problem buffer's saved state (statistics, sampler RNG)."""
    return algorithm_state(checkpoint)["problem_buffer"]
