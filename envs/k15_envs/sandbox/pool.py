"""A bounded pool of confined grading workers with a hard wall-clock deadline per task.

Why processes: math-verify's own timeout uses ``signal.alarm``, which only works in a
main thread, and some sympy operations (``10**10**10``) sit in C code that no signal
interrupts. Each worker runs tasks in *its* main thread (so math-verify's alarm works as a
first line), and the pool enforces the real deadline from outside: a worker that misses
it is SIGKILLed with its whole process group and replaced lazily on the next call.

Properties:
- ``call`` / ``map`` are safe from any thread (Ray actor threads included); callers only
  wait on pipes, never on signals.
- At most ``size`` workers exist (default ``min(2, cpu_count)``), so grading never
  oversubscribes the machine; ``map`` fans a batch out over them.
- Workers start lazily (start-up time never counts against a task's deadline) and are
  confined by the sandbox supervisor (``WORKER_DEFAULTS``): memory limit, no network,
  no writes outside a temp dir, reads only of the interpreter, site-packages and this
  package (Landlock), ``nobody`` when run as root, no capabilities.
- ``close()`` (also run at garbage collection / interpreter exit) kills them all.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k15_envs.sandbox.config import WORKER_DEFAULTS, SandboxConfig
from k15_envs.sandbox.runner import kill_group, make_spec, parse_events, start_supervisor
from k15_envs.sandbox.worker import BOOT, MAX_FRAME_BYTES, WorkerTask, write_frame

__all__ = ["WorkerPool", "TaskOutcome", "default_pool_size"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def default_pool_size() -> int:
    """Grading parallelism: at most 2, never more than the machine's cores."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class TaskOutcome:
    """``status`` is "ok" (``value`` holds the result), "timeout" or "error" (``error``)."""

    status: str
    value: Any = None
    error: str = ""


class _Timeout(Exception):
    pass


class _Dead(Exception):
    pass


def _wait_readable(fd: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        if poller.poll(max(1, int(remaining * 1000))):
            return


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        _wait_readable(fd, deadline)
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise _Dead("worker closed its pipe")
        data += chunk
    return data


def _read_json_frame(fd: int, deadline: float) -> dict:
    size = int.from_bytes(_read_exact(fd, 4, deadline), "big")
    if size > MAX_FRAME_BYTES:
        raise _Dead(f"oversized reply ({size} bytes)")
    reply = json.loads(_read_exact(fd, size, deadline))
    if not isinstance(reply, dict):
        raise _Dead("malformed reply")
    return reply


def _read_event(proc: subprocess.Popen, deadline: float) -> dict:
    """The supervisor's first event ("started" or "error")."""
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    while b"\n" not in buf:
        _wait_readable(fd, deadline)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    events = parse_events(buf)
    return events[0] if events else {"event": "error", "message": "supervisor died at start"}


def _reap_later(proc: subprocess.Popen) -> None:
    def reap() -> None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()

    threading.Thread(target=reap, daemon=True, name="k15-reaper").start()


@dataclass
class _Worker:
    proc: subprocess.Popen
    req_fd: int
    resp_fd: int
    pid: int

    def request(self, payload: bytes, deadline: float) -> dict:
        try:
            write_frame(self.req_fd, payload)
        except OSError as exc:
            raise _Dead(f"cannot send request: {exc}") from exc
        return _read_json_frame(self.resp_fd, deadline)

    def kill(self) -> None:
        kill_group(self.pid)
        try:
            self.proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        for fd in (self.req_fd, self.resp_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        _reap_later(self.proc)


@dataclass
class _State:
    """Everything the finaliser needs (it must not reference the pool itself)."""

    size: int
    cond: threading.Condition = field(default_factory=threading.Condition)
    idle: list[_Worker] = field(default_factory=list)
    live: int = 0
    closed: bool = False
    executor: ThreadPoolExecutor | None = None

    def shutdown(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            self.live -= len(idle)
            executor, self.executor = self.executor, None
            self.cond.notify_all()
        for worker in idle:
            worker.kill()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool:
    """Bounded pool of sandboxed grading workers. See the module docstring."""

    def __init__(
        self,
        *,
        preload: Sequence[str] = (),
        size: int | None = None,
        task_timeout_s: float = 5.0,
        sandbox: SandboxConfig = WORKER_DEFAULTS,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if task_timeout_s <= 0:
            raise ValueError(f"task_timeout_s ({task_timeout_s}) must be > 0")
        size = default_pool_size() if size is None else int(size)
        if size < 1:
            raise ValueError(f"size ({size}) must be >= 1")
        self.preload = tuple(preload)
        self.task_timeout_s = float(task_timeout_s)
        self.sandbox = sandbox
        self.startup_timeout_s = float(startup_timeout_s)
        self._state = _State(size=size)
        self._finalizer = weakref.finalize(self, self._state.shutdown)

    @property
    def size(self) -> int:
        return self._state.size

    def __getstate__(self):
        raise TypeError("WorkerPool holds processes and cannot be pickled; create one per process")

    # -- worker lifecycle -------------------------------------------------------------
    def _spawn(self) -> _Worker:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        flags = ["-I", "-B"] + ([] if self.sandbox.allow_site_packages else ["-S"])
        argv = [sys.executable, *flags, "-c", BOOT, _PACKAGE_ROOT, str(req_r), str(resp_w)]
        argv.append(",".join(self.preload))
        spec = make_spec(
            self.sandbox,
            argv,
            capture_output=False,
            pass_fds=(req_r, resp_w),
            read_paths=(_PACKAGE_ROOT,),
        )
        try:
            proc = start_supervisor(spec, pass_fds=(req_r, resp_w))
        finally:
            os.close(req_r)
            os.close(resp_w)
        deadline = time.monotonic() + self.startup_timeout_s
        worker = _Worker(proc, req_w, resp_r, pid=-1)
        try:
            event = _read_event(proc, deadline)
            if event.get("event") != "started":
                raise _Dead(str(event.get("message", "worker failed to start")))
            worker.pid = int(event["pid"])
            if not _read_json_frame(resp_r, deadline).get("ready"):
                raise _Dead("worker did not report ready")
        except (_Timeout, _Dead, OSError, ValueError) as exc:
            worker.kill()
            raise _Dead(f"grading worker failed to start: {exc or 'timeout'}") from exc
        return worker

    def _checkout(self) -> _Worker:
        state = self._state
        with state.cond:
            while True:
                if state.closed:
                    raise _Dead("pool is closed")
                if state.idle:
                    return state.idle.pop()
                if state.live < state.size:
                    state.live += 1
                    break
                state.cond.wait()
        try:
            return self._spawn()
        except BaseException:
            with state.cond:
                state.live -= 1
                state.cond.notify()
            raise

    def _checkin(self, worker: _Worker) -> None:
        state = self._state
        with state.cond:
            if not state.closed:
                state.idle.append(worker)
                state.cond.notify()
                return
            state.live -= 1
        worker.kill()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._state.cond:
            self._state.live -= 1
            self._state.cond.notify()

    # -- public API ---------------------------------------------------------------------
    def call(self, task: WorkerTask, *args: Any, timeout_s: float | None = None) -> TaskOutcome:
        """Run ``task(*args)`` in a worker; never blocks longer than the deadline (plus
        worker start-up when a fresh worker is needed)."""
        timeout = self.task_timeout_s if timeout_s is None else float(timeout_s)
        payload = pickle.dumps((WorkerTask(task).value, args))
        try:
            worker = self._checkout()
        except _Dead as exc:
            return TaskOutcome("error", error=str(exc))
        try:
            reply = worker.request(payload, time.monotonic() + timeout)
        except _Timeout:
            self._discard(worker)
            return TaskOutcome("timeout", error=f"no reply within {timeout:g}s; worker killed")
        except (_Dead, OSError, ValueError) as exc:
            self._discard(worker)
            return TaskOutcome("error", error=f"worker died: {exc}")
        self._checkin(worker)
        if reply.get("ok") is True:
            return TaskOutcome("ok", value=reply.get("value"))
        return TaskOutcome("error", error=str(reply.get("error", "unknown error"))[:500])

    def map(
        self, task: WorkerTask, arg_tuples: Iterable[Sequence[Any]], timeout_s: float | None = None
    ) -> list[TaskOutcome]:
        """``call`` over many argument tuples, at most ``size`` at a time, in order."""
        jobs = [tuple(args) for args in arg_tuples]
        if len(jobs) <= 1:
            return [self.call(task, *args, timeout_s=timeout_s) for args in jobs]
        state = self._state
        with state.cond:
            if state.closed:
                return [TaskOutcome("error", error="pool is closed") for _ in jobs]
            if state.executor is None:
                state.executor = ThreadPoolExecutor(state.size, thread_name_prefix="k15-grade")
            executor = state.executor
        futures = [executor.submit(self.call, task, *args, timeout_s=timeout_s) for args in jobs]
        return [future.result() for future in futures]

    def warm_up(self) -> None:
        """Start every worker now (in parallel) instead of on first use."""
        self.map(
            WorkerTask.PING, [(i,) for i in range(self.size)], timeout_s=self.startup_timeout_s
        )

    def close(self) -> None:
        """Kill all workers; later calls return an "error" outcome. Idempotent."""
        self._finalizer()
