"""The ``k15 serve`` child process of :mod:`bench.serve_throughput`: start it in its own
process group, wait for ``/health``, stop it with SIGTERM and account for every process it
started (and the CPU they used)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import REPO_DIR


class ServeError(RuntimeError):
    """The server did not come up (or died); the message says how."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    """The last ``lines`` lines of a log from byte ``offset`` on ("" if there is none)."""
    try:
        with Path(path).open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _tree(pid: int) -> list[Any]:
    """The process and its descendants (psutil), [] once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    import psutil

    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:2])  # user + system
    return total


def _parent_death_signal() -> Any:
    """A pre-exec hook that has Linux SIGTERM the child when this process dies (a ``run_all``
    timeout kills our group with SIGKILL, and the server has a group of its own); None
    where there is no ``prctl``. libc is loaded here, in the parent, not after the fork."""
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_server(serve_args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``k15 serve *serve_args`` in its own process group (``env`` added to this one's),
    output appended to ``log``; it is sent SIGTERM (a clean shutdown, Ray included) if this
    process dies first."""
    cmd = [sys.executable, "-m", "rllib_k15", "serve", *serve_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.Popen(cmd, cwd=REPO_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=_parent_death_signal())  # fmt: skip


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float) -> float:
    """Poll ``url`` until it answers 200; seconds taken. Raises :class:`ServeError` if the
    server exits or ``timeout`` passes first."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise ServeError(f"k15 serve exited with code {proc.returncode} before /health")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while the engine starts
        time.sleep(1.0)
    raise ServeError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """SIGTERM, wait up to ``timeout`` s (then SIGKILL its process group), and kill (by
    pid) any process it had started that is still alive afterwards."""
    started_procs = _tree(proc.pid)[1:]
    t0, killed = time.perf_counter(), False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: only it and its children
        proc.wait()
    seconds = time.perf_counter() - t0
    time.sleep(1.0)  # let the children it told to stop finish exiting
    leftover = [_kill_if_alive(p) for p in started_procs]
    return {"exit_code": proc.returncode, "seconds": seconds, "killed": killed,
            "leftover": [what for what in leftover if what]}  # fmt: skip


def _kill_if_alive(proc: Any) -> str | None:
    """Kill one (psutil) process the server had started if it still runs; what it was."""
    import psutil

    try:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        what = f"{proc.pid} {' '.join(proc.cmdline()[:3])}"
        proc.kill()
        return what
    except psutil.NoSuchProcess:
        return None
