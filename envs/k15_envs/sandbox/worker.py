"""Grading worker process: answers framed requests on two pipes, in its main thread.

Started by :class:`k15_envs.sandbox.pool.WorkerPool` through the sandbox supervisor, so it
runs confined (memory limit, no network, no writes outside its temp dir, uid ``nobody``
when the pool runs as root). Grading libraries that rely on ``signal.alarm`` (math-verify)
work here because each task runs in this process's main thread; the pool adds a hard
wall-clock deadline on top and kills/replaces a worker that misses it.

Protocol (one request at a time): each frame is a 4-byte big-endian length + payload.
Requests (pool -> worker) are pickles of ``(task_name, args)``: the pool is trusted.
Replies (worker -> pool) are JSON objects ``{"ok": true, "value": ...}`` or
``{"ok": false, "error": "..."}``: the pool never unpickles what a worker sends, because
a worker that parsed hostile text is not trusted. The first reply is ``{"ready": true}``.

Tasks are a registry keyed by :class:`WorkerTask`, mapping to ``"module:function"`` so
the worker imports only what it is asked to run.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = ["WorkerTask", "TASKS", "read_frame", "write_frame", "main", "MAX_FRAME_BYTES"]

MAX_FRAME_BYTES = 16 << 20


class WorkerTask(str, Enum):  # noqa: UP042 - Python 3.10 has no StrEnum
    """Functions a grading worker can run."""

    MATH_VERIFY = "math_verify"
    REASONING_GYM_SCORE = "reasoning_gym_score"
    PING = "ping"  # health check: returns its argument
    SLEEP = "sleep"  # diagnostics (pool tests): sleeps, then returns the seconds slept


TASKS: dict[WorkerTask, str] = {
    WorkerTask.MATH_VERIFY: "k15_envs.verifiers.math_grading:grade",
    WorkerTask.REASONING_GYM_SCORE: "k15_envs.verifiers.rgym_scoring:score",
    WorkerTask.PING: "k15_envs.sandbox.worker:ping",
    WorkerTask.SLEEP: "k15_envs.sandbox.worker:sleep",
}


def ping(value: Any) -> Any:
    return value


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _resolve(task: WorkerTask) -> Callable[..., Any]:
    module, _, name = TASKS[task].partition(":")
    return getattr(importlib.import_module(module), name)


def _read_exact(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(fd: int) -> bytes | None:
    """Blocking read of one frame; None on EOF."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return _read_exact(fd, size)


def write_frame(fd: int, payload: bytes) -> None:
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _reply(fd: int, obj: dict) -> None:
    try:
        payload = json.dumps(obj).encode()
    except (TypeError, ValueError) as exc:
        payload = json.dumps({"ok": False, "error": f"unserialisable result: {exc}"}).encode()
    write_frame(fd, payload)


def main(req_fd: int, resp_fd: int, preload: list[str]) -> None:
    """Worker loop: preload modules, say ready, then serve until the pool closes the pipe."""
    os.dup2(2, 1)  # stray prints must never reach the protocol pipe
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    for module in preload:
        if module:
            importlib.import_module(module)
    _reply(resp_fd, {"ready": True})
    while True:
        frame = read_frame(req_fd)
        if frame is None:
            return
        try:
            task_name, args = pickle.loads(frame)
            value = _resolve(WorkerTask(task_name))(*args)
            _reply(resp_fd, {"ok": True, "value": value})
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            _reply(resp_fd, {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})


# The worker's ``python -c`` program. It registers a bare ``k15_envs`` package object first,
# so the package ``__init__`` (Gymnasium, env registration: ~1 s) never runs in a worker.
BOOT = (
    "import sys, types; root = sys.argv[1]; sys.path.insert(0, root); "
    "pkg = types.ModuleType('k15_envs'); pkg.__path__ = [root + '/k15_envs']; "
    "sys.modules['k15_envs'] = pkg; "
    "from k15_envs.sandbox.worker import main; "
    "main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(','))"
)
