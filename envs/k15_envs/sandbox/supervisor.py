"""Sandbox supervisor: runs ONE confined child and cleans up every process it leaves behind.

Standard library only; started by ``runner.py`` as ``python -I -S -B supervisor.py`` in a
new session, reading a JSON spec on stdin and writing JSON-line events on stdout:

    {"event": "started", "pid": ..., "protections": [...]}
    {"event": "exit", "returncode": ..., "signal": ..., "timed_out": ..., "passed": ..., ...}
    {"event": "error", "message": ...}              # the child could not be confined/started

What it does, in order:
1. marks itself a *child subreaper* (Linux), so descendants that ``setsid()`` and
   double-fork are re-parented to it instead of escaping to init, and non-dumpable
   (``PR_SET_DUMPABLE`` 0), so a same-uid child cannot ptrace it or read its memory
   (it holds the nonce);
2. makes a fresh temporary directory (owned by the sandbox uid), writes the spec's files;
3. forks; the child joins a new process group, redirects stdio (stdout/stderr to files
   capped by ``RLIMIT_FSIZE``), applies the confinement plan (``_confine.apply_plan``:
   rlimits, empty network namespace, private mount namespace, Landlock, uid ``nobody``,
   no capabilities) and ``execve``\\ s. A planned protection that fails aborts the run
   (fail closed);
4. waits for the child, a wall-clock timeout (``setitimer``), or SIGTERM from the parent;
5. SIGKILLs the child's process group and then every remaining descendant, repeatedly,
   until none is left (fork bombs race the first sweep), and reaps them;
6. reads the result pipe: a run counts as passed only if it holds exactly
   ``PASS <nonce>``, where the nonce was handed to the harness through a pipe that it
   read and closed before starting untrusted code; then deletes the temporary directory.

Trust boundary (``harness.py``): in test runs the harness (non-dumpable, holding the
nonce) runs the trusted tests, and the untrusted solution runs in a child of the harness
that inherits the confinement but neither the nonce nor the result pipe, and exchanges
only plain data with it; the wall-clock timeout and step 5 cover that child like any
descendant. ``RLIMIT_CPU`` applies to each process on its own (a solution that hits it
dies by SIGXCPU, and the harness then leaves by the same signal: "cpu_limit"); the exit
event's ``cpu_s`` is the harness's CPU time plus that of the children it reaped (it
reaps the solution process before it reports). More processes cannot buy more wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _confine  # noqa: E402  (sibling module; -I keeps the script dir off sys.path)

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_RESULT_CAP = 4096


class _WallTimeout(Exception):
    pass


class _Stop(Exception):
    pass


class _SetupError(Exception):
    pass


def _raise(exc: type[Exception]):
    def handler(signum, frame):  # noqa: ARG001
        raise exc()

    return handler


def _emit(event: dict) -> None:
    os.write(1, (json.dumps(event) + "\n").encode())


def _become_subreaper() -> None:
    """Child subreaper and non-dumpable (Linux; the latter is reset by ``execve``, so the
    confined child is dumpable again unless it changes that itself)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) from /proc (empty where /proc does not exist)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
            fields = raw[raw.rindex(b")") + 2 :].split()
            table[int(entry)] = (int(fields[1]), fields[0].decode())
        except (OSError, ValueError, IndexError):
            continue
    return table


def _descendants(root: int) -> list[int]:
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if table[pid][1] != "Z":
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_tree(pgid: int) -> None:
    me = os.getpid()
    for _ in range(400):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
        live = _descendants(me)
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
        if not live:
            return
        time.sleep(0.005)


def _tail(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_capped(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while len(data) < _RESULT_CAP:
        try:
            chunk = os.read(fd, _RESULT_CAP - len(data))
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _fork_child(argv, env, cwd, plan, stdio, pass_fds) -> int:
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: confine, then exec; never returns
        try:
            os.setpgid(0, 0)
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            for fd in pass_fds:
                os.set_inheritable(fd, True)
            os.chdir(cwd)
            _confine.apply_plan(plan)
            os.umask(0o077)
            os.execve(argv[0], argv, env)
        except BaseException as exc:  # noqa: BLE001 - report anything, then die
            try:
                os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:1000])
            finally:
                os._exit(127)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    os.close(err_w)
    message = b""
    while chunk := os.read(err_r, 1000):
        message += chunk
    os.close(err_r)
    if message:
        _kill_tree(pid)
        raise _SetupError(message.decode(errors="replace"))
    return pid


def _wait(pid: int, wall: float | None):
    """Wait for the child; returns (status, rusage, timed_out, stopped)."""
    if wall:
        signal.setitimer(signal.ITIMER_REAL, wall)
    try:
        while True:
            wpid, status, rusage = os.wait4(-1, 0)
            if wpid == pid:
                return status, rusage, False, False
    except _WallTimeout:
        return None, None, True, False
    except _Stop:
        return None, None, False, True
    except ChildProcessError:
        return None, None, False, False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _ignore_stops() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(spec: dict, tmp: str, started: list[int]) -> dict:
    limits = spec.get("limits", {})
    plan = _confine.make_plan(
        limits=limits,
        write_dir=tmp,
        drop_privileges=spec.get("drop_privileges", True),
        isolate_network=spec.get("isolate_network", True),
        restrict_writes=spec.get("restrict_writes", True),
        restrict_reads=spec.get("restrict_reads", True),
        interpreter_paths=spec.get("interpreter_paths", [spec["argv"][0]]),
        read_paths=spec.get("read_paths", []),
    )
    for name, content in spec.get("files", {}).items():
        path = os.path.join(tmp, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(path, 0o644)
    if plan.uid is not None:
        os.chown(tmp, plan.uid, plan.gid)
    os.chmod(tmp, 0o700)

    fds = {}
    pass_fds = list(spec.get("pass_fds", []))
    nonce = None
    if spec.get("nonce"):
        nonce = os.urandom(16).hex()
        nonce_r, nonce_w = os.pipe()
        os.write(nonce_w, nonce.encode())
        os.close(nonce_w)
        result_r, result_w = os.pipe()
        fds = {"nonce_fd": nonce_r, "result_fd": result_w}
        pass_fds += [nonce_r, result_w]
    devnull = os.open(os.devnull, os.O_RDWR)
    out_path, err_path = os.path.join(tmp, ".stdout"), os.path.join(tmp, ".stderr")
    if spec.get("capture_output", True):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        stdout, stderr = os.open(out_path, flags, 0o600), os.open(err_path, flags, 0o600)
    else:
        stdout = stderr = devnull
    placeholders = {"{tmp}": tmp, **{"{" + k + "}": str(v) for k, v in fds.items()}}
    argv = []
    for arg in spec["argv"]:  # plain replacement: other braces in arguments stay untouched
        for key, value in placeholders.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    env = {str(k): str(v) for k, v in spec.get("env", {}).items()}
    env.update(HOME=tmp, TMPDIR=tmp)
    protections = plan.protections
    if spec.get("isolate_network", True) and not (plan.net_namespace or plan.landlock_net):
        env["K15_SOCKET_GUARD"] = "1"  # read by harness.py; best effort only
        protections = protections + ["python_socket_guard"]

    pid = _fork_child(argv, env, tmp, plan, (devnull, stdout, stderr), pass_fds)
    started.append(pid)
    for fd in pass_fds:  # only the child keeps these (EOF/EPIPE must reach the parent)
        os.close(fd)
    _emit({"event": "started", "pid": pid, "protections": protections})
    status, rusage, timed_out, stopped = _wait(pid, spec.get("wall_time_s"))
    _ignore_stops()
    _kill_tree(pid)

    result, passed = None, False
    if nonce is not None:
        data = _read_capped(result_r)
        passed = data == f"PASS {nonce}\n".encode()
        if not passed and data.startswith(b"FAIL "):
            result = data[5:].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    cap = int(spec.get("output_chars", 2000))
    return {
        "event": "exit",
        "returncode": os.waitstatus_to_exitcode(status) if status is not None else None,
        "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "stopped": stopped,
        "passed": passed,
        "result": result,
        "cpu_s": (rusage.ru_utime + rusage.ru_stime) if rusage is not None else None,
        "stdout": _tail(out_path, cap) if cap else "",
        "stderr": _tail(err_path, cap) if cap else "",
        "protections": protections,
    }


def main() -> None:
    signal.signal(signal.SIGTERM, _raise(_Stop))
    signal.signal(signal.SIGINT, _raise(_Stop))
    signal.signal(signal.SIGALRM, _raise(_WallTimeout))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    spec = json.loads(sys.stdin.buffer.read())
    _become_subreaper()
    tmp = tempfile.mkdtemp(prefix="k15-sandbox-", dir=spec.get("tmp_root"))
    started: list[int] = []
    try:
        _emit(_run(spec, tmp, started))
    except _SetupError as exc:
        _emit({"event": "error", "message": f"sandbox setup failed: {exc}"})
    except _Stop:
        _emit({"event": "error", "message": "stopped"})
    finally:
        _ignore_stops()
        for pid in started:
            _kill_tree(pid)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
