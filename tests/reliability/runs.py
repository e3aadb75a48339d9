"""Helpers of the crash tests: start `k15 train` in a child process, SIGKILL it at a hold point."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

HARNESS = Path(__file__).with_name("train_harness.py")


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child; pass ``RAY_ADDRESS`` (conftest ``ray_address``)
    so the child joins the session's Ray instance."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0", **extra)
    return env


def run_k15(argv: list[str], log: Path, timeout: float = 600, **env: str) -> None:
    """Run ``k15 <argv>`` to completion; fail with the log tail if it does not exit 0."""
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, str(HARNESS), *argv],
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
        [sys.executable, str(HARNESS), *argv],
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


def toy_config(model_dir, env_id: str | None = None, env_config: dict | None = None, **training):
    """K15Config on the toy env, HF engine and learner in fp32 (fast, deterministic; the
    reliability tests compare runs number for number)."""
    import toy_env

    from rllib_k15 import K15Config

    fields = dict(
        hf_model=str(model_dir),
        engine="hf",
        engine_options={"dtype": "float32"},
        autocast_bf16=False,
        samples_per_problem=4,
        problems_per_iteration=4,
        max_response_tokens=1,
        minibatch_size=16,
        micro_batch_size=16,
        lr=3e-5,
        tau=0.1,
    )
    fields.update(training)
    return (
        K15Config()
        .environment(env_id or toy_env.ENV_ID, env_config=env_config or {"size": 16})
        .training(**fields)
        .debugging(seed=0)
    )
