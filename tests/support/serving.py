"""Helpers of the serving tests: a real ``k15 serve`` in a child process, and checkpoints.

``ServerProcess`` starts ``python -m rllib_k15 serve ...`` on a free port (its own Ray
instance, as a user's would be), waits until ``GET /health`` answers 200 and stops it with
SIGTERM, reporting the exit code and which of its processes outlived it.
``write_policy_checkpoint`` writes what a training run's checkpoint holds of the policy
(the RLModule under ``learner_group/learner/rl_module/default_policy``, the marker and the
manifest, through the trainer's own ``CheckpointManager``), without training.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import torch

from support.paths import support_env

READY_TIMEOUT_S = 420.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``k15 serve *args`` in a child process; ``url`` is its ``/v1`` base URL."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        self.log = log
        env = support_env()
        env.pop("RAY_ADDRESS", None)
        env.update(HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0")
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rllib_k15", "serve", *args, "--port", str(self.port)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"k15 serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.kill()
        raise TimeoutError(f"k15 serve not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 120.0) -> tuple[int, list[str]]:
        """SIGTERM, wait; (exit code, command lines of its processes still alive 10 s later)."""
        family = self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait(30)
        _, alive = psutil.wait_procs(family, timeout=10)
        survivors = [" ".join(p.cmdline()[:3]) for p in alive if p.is_running()]
        for p in alive:
            p.kill()
        self._out.close()
        return rc, survivors

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


def write_policy_checkpoint(
    run_dir: Path, model_dir: Path, iteration: int, noise_seed: int | None = None
) -> Path:
    """A checkpoint of ``model_dir``'s weights (plus seeded noise of std 0.3, if given) at
    ``iteration`` in ``run_dir/checkpoints``, published as ``latest``."""
    from rllib_k15.algorithm.rl_module import CausalLMRLModule
    from rllib_k15.runs.checkpoints import CheckpointManager

    module = CausalLMRLModule(
        observation_space=None, action_space=None, inference_only=False, learner_only=False,
        model_config={"model_path": str(model_dir)},
    )  # fmt: skip
    if noise_seed is not None:
        generator = torch.Generator().manual_seed(noise_seed)
        with torch.no_grad():
            for param in module.lm.parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=generator))

    def write(path: str) -> None:
        module.save_to_path(
            Path(path) / "learner_group" / "learner" / "rl_module" / "default_policy"
        )

    return CheckpointManager(run_dir, keep=2).save(write, iteration)
