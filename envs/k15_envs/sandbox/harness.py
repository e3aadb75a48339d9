"""Runs untrusted Python inside the sandbox (standard library only).

The supervisor copies this file, ``_solution.py`` and ``_wire.py`` into the sandbox's
temporary directory and runs ``python -I [-S] -B _harness.py NONCE_FD RESULT_FD
[ENTRY_POINT]``. The harness first makes itself non-dumpable (``prctl(PR_SET_DUMPABLE,
0)``, skipped where unavailable: processes of the same uid can then neither ptrace it nor
read its ``/proc/<pid>/mem``, ``environ`` or ``fd/``), then reads the one-time nonce from
``NONCE_FD`` and closes it. Only this process writes ``RESULT_FD``: ``PASS <nonce>`` and
``os._exit(0)`` when the run passed, ``FAIL <Type>: <message>`` for an exception
(``FAIL unsupported ...`` for a value that value passing cannot carry), nothing when it
leaves silently ("early_exit").

Test runs (``ENTRY_POINT`` given; the code verifier's) - the trust boundary:

- files: ``solution.py`` (untrusted: prompt + the model's code), ``context.py`` (the
  prompt) and ``test.py`` (the tests + ``check(ENTRY_POINT)``). The harness reads and
  deletes the last two before any untrusted code runs.
- the solution runs in a child, ``python -I [-S] -B _solution.py ENTRY_POINT REQUEST_FD
  REPLY_FD`` (started with ``posix_spawn``): it inherits the confinement (rlimits,
  namespaces, Landlock, uid, no capabilities) and only stdio and its two pipe ends, never
  the nonce or result pipe. Where Landlock exists it starts in a nested domain (defence
  in depth: it cannot ptrace the harness, and with ABI >= 6 not signal it). The Python
  socket guard, where used, applies there.
- the harness runs the trusted code: the prompt (helpers the tests use, e.g. ``poly``;
  skipped when it is not valid Python alone), then the tests with the entry point bound
  to a proxy. A call sends its arguments to the child, which calls its entry point and
  sends back the return value, both in the restricted encoding of ``_wire.py`` (JSON,
  never pickle). The child never sees the expected values, and the tests compare plain
  data the harness decoded itself: ``__eq__`` overrides, patched builtins, or frame and
  ``gc`` digging in the solution process reach nothing of the harness.
- an exception in the call is raised again in the harness with the same class name (a
  subclass of the builtin exception of that name, else of ``Exception``) and message, so
  tests that expect exceptions work and failures read as before. A value the encoding
  cannot carry raises :class:`ValuePassingError` (not an ``Exception``: tests cannot
  swallow it): ``FAIL unsupported return type <name>`` (or ``argument``).
- if the child dies, exits or breaks the protocol, the harness waits for it and leaves
  the same way (killed by the same signal, else exiting with its code without writing:
  "early_exit"); a hung child is ended by the supervisor's wall clock. Before reporting,
  the harness kills and reaps the child, so the child's CPU time is in the harness's
  ``cpu_s`` (``RLIMIT_CPU`` itself applies to each process separately).

Not supported by value passing (graded by what the tests then see, so not ``correct``
even for a right solution): tests that check that the solution mutated an argument in
place (the child works on a copy), object identity (``candidate(x) is x``), or values
outside the encoding (functions, iterators, other classes' instances, subclasses).

Stdio runs (``ENTRY_POINT`` is ``--stdio``; ``run_stdio``): ``program.py`` (untrusted) runs
in a child started like a test run's solution process (same confinement, nested Landlock
domain, no nonce or result pipe) as ``_harness.py --program ERROR_FD``, with ``stdin.txt``
on its stdin and the captured stdout/stderr. An exception in it goes to ``ERROR_FD`` as
``Type: message``; ``SystemExit`` ends it with its code as in a plain run. The harness waits
for it and reports ``PASS`` for exit status 0, ``FAIL <Type>: <message>`` for an exception,
else leaves the way it did. The expected output never enters the sandbox: the parent
compares stdout.

Program runs (no ``ENTRY_POINT``; ``run_python(str)``, for trusted programs such as the
sandbox's self-checks) execute ``program.py`` in this interpreter: a pass means only that
it ran to the end; they are no trust boundary for untrusted code.
"""

import builtins
import os
import sys

try:  # the C module: ``signal`` imports ``enum``, a cost both processes pay on every run
    import _signal as signal
except ImportError:  # pragma: no cover - not CPython
    import signal

_HERE = os.path.dirname(os.path.abspath(__file__))
_PR_SET_DUMPABLE = 4
_LANDLOCK_CREATE_RULESET, _LANDLOCK_RESTRICT_SELF = 444, 446  # syscall numbers (all arches)
_MAKE_BLOCK = 1 << 11  # LANDLOCK_ACCESS_FS_MAKE_BLOCK
_SCOPE_ALL = 3  # LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL
_FAIL_CHARS = 300  # of a FAIL line's text
_EXCEPTIONS = {
    name: value
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


class ValuePassingError(BaseException):
    """An argument or return value that the encoding of ``_wire.py`` cannot carry."""


def _libc():
    """The C library through ctypes (Linux), or None where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc
    except (ImportError, OSError, AttributeError):
        return None


def _undumpable(libc) -> None:
    """``prctl(PR_SET_DUMPABLE, 0)`` (skipped where unavailable)."""
    if libc is not None:
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _nest_landlock(libc) -> None:
    """Put the calling thread in a nested Landlock domain (best effort, where the kernel
    has Landlock): a ruleset that handles only MAKE_BLOCK (a right no solution needs) and,
    with ABI >= 6, scopes signals and abstract unix sockets to the domain."""
    import ctypes

    create = ctypes.c_long(_LANDLOCK_CREATE_RULESET)
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return
    attr = (ctypes.c_uint64 * 3)(_MAKE_BLOCK, 0, _SCOPE_ALL if abi >= 6 else 0)
    size = ctypes.c_size_t(24 if abi >= 6 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), size, ctypes.c_uint32(0))
    if ruleset >= 0:
        restrict = ctypes.c_long(_LANDLOCK_RESTRICT_SELF)
        libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        os.close(ruleset)


def _spawn(argv: list[str], env: dict, libc) -> int:
    """``posix_spawn`` the solution process from a helper thread that first enters a
    nested Landlock domain: Landlock domains are per thread, so the child is confined
    further (it cannot ptrace the harness, nor with ABI >= 6 signal it) while this
    process's main thread, which runs the tests, stays outside."""
    import _thread

    outcome: list = []
    done = _thread.allocate_lock()
    done.acquire()

    def spawn() -> None:
        try:
            if libc is not None:
                try:
                    _nest_landlock(libc)
                except (OSError, AttributeError, ValueError):
                    pass  # best effort: the confinement proper is the supervisor's
            outcome.append(os.posix_spawn(argv[0], argv, env))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            outcome.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(spawn, ())
    done.acquire()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _reporter(result_fd: int, nonce: bytes):
    def report(message: bytes) -> None:
        try:
            os.write(result_fd, message)
        except OSError:
            pass

    def passed() -> None:
        report(b"PASS " + nonce + b"\n")

    return report, passed


def _fail_line(exc: BaseException) -> bytes:
    try:
        text = str(exc) if isinstance(exc, ValuePassingError) else f"{type(exc).__name__}: {exc}"
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    return b"FAIL " + text.replace("\n", " ")[:_FAIL_CHARS].encode("utf-8", "replace") + b"\n"


def _die_like(returncode: int) -> None:
    """Leave the way the solution process did: killed by its signal, else its exit code."""
    if returncode < 0:
        try:
            signal.signal(-returncode, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), -returncode)
        os._exit(128 - returncode)
    os._exit(returncode)


def _load_wire():
    """``_wire.py`` from this file's directory, as a module (not via ``sys.path``, which
    stays free of the writable temporary directory); loaded before untrusted code runs."""
    path = os.path.join(_HERE, "_wire.py")
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    module = type(sys)("_k15_wire")
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - our own module
    return module


def _inherit_only(keep: tuple[int, ...]) -> None:
    """Make every descriptor but stdio and ``keep`` close on exec."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, fd in keep)
            except OSError:
                pass


def _rebuild(body) -> BaseException | None:
    """The solution's exception as a harness-side one: same class name, same message."""
    if not (type(body) is list and len(body) == 2 and all(type(s) is str for s in body)):
        return None
    name, message = body
    name = name if name.isidentifier() and len(name) <= 100 else "Exception"
    attrs = {"__str__": lambda self: message, "__module__": "solution"}
    for base in (_EXCEPTIONS.get(name, Exception), Exception):
        try:
            return type(name, (base,), attrs)(message)
        except Exception:  # noqa: BLE001 - e.g. ExceptionGroup wants more arguments
            continue
    return Exception(message)


class _Solution:
    """The child process that runs the untrusted solution, seen from the harness."""

    def __init__(self, wire, entry_point: str, env: dict, libc) -> None:
        self.wire = wire
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        flags = ["-I", "-B"] + (["-S"] if sys.flags.no_site else [])
        script = os.path.join(_HERE, "_solution.py")
        argv = [sys.executable, *flags, script, entry_point, str(request_r), str(reply_w)]
        _inherit_only((request_r, reply_w))
        self.pid = _spawn(argv, env, libc)
        self.returncode: int | None = None
        os.close(request_r)
        os.close(reply_w)
        self.requests, self.replies = os.fdopen(request_w, "wb"), os.fdopen(reply_r, "rb")

    def _reply(self, expected: str):
        """The body of the next reply, of kind ``expected``; raises what the call raised."""
        try:
            kind, body = self.wire.parse(self.replies.readline(self.wire.MAX_FRAME_BYTES + 1))
        except MemoryError:
            raise ValuePassingError("unsupported return value: too large") from None
        except Exception:  # noqa: BLE001 - EOF or malformed: the child is gone or hostile
            self.gone()
        if kind == expected:
            return body
        if kind == "unsupported" and type(body) is str:
            raise ValuePassingError(f"unsupported return {body[:200]}")
        exc = _rebuild(body) if kind == "raise" else None
        if exc is None:
            self.gone()
        raise exc

    def wait_ready(self) -> None:
        """Wait until the solution is imported; raise what its import raised."""
        self._reply("ready")

    def call(self, args: tuple, kwargs: dict):
        """Call the entry point in the child with (copies of) ``args`` and ``kwargs``."""
        wire = self.wire
        try:
            request = wire.frame("call", wire.encode([list(args), kwargs]))
        except wire.Unsupported as exc:
            raise ValuePassingError(f"unsupported argument {exc}") from None
        try:
            self.requests.write(request)
            self.requests.flush()
        except OSError:
            self.gone()
        return self._reply("return")

    def proxy(self, name: str):
        """The function the tests get as ``candidate``."""

        def candidate(*args, **kwargs):
            return self.call(args, kwargs)

        candidate.__name__ = candidate.__qualname__ = name
        return candidate

    def _close(self) -> None:
        for stream in (self.requests, self.replies):
            try:
                stream.close()
            except OSError:
                pass

    def _wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def stop(self) -> None:
        """Kill and reap the child (its CPU time then counts in the harness's rusage)."""
        self._close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        self._wait()

    def gone(self) -> None:
        """The child died, left or broke the protocol: end the run the way it ended."""
        self._close()
        _die_like(self._wait())


def _take(name: str) -> str:
    """A trusted file's text; the file is deleted, so the solution cannot read it."""
    with open(name, encoding="utf-8") as fh:
        text = fh.read()
    os.unlink(name)
    return text


def _exec_context(source: str, namespace: dict) -> None:
    try:
        code = compile(source, "context.py", "exec")
    except SyntaxError:  # a prompt that is valid only with the solution appended
        return
    exec(code, namespace)  # noqa: S102 - the problem's own (trusted) prompt


def _run_tests(entry_point: str, report, passed, guard: bool, libc) -> None:
    """Test run: solution in a child process, tests here (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no KeyboardInterrupt into trusted code
    solution, failure = None, None
    try:
        wire = _load_wire()
        context, tests = _take("context.py"), _take("test.py")
        env = {**os.environ, **({"K15_SOCKET_GUARD": "1"} if guard else {})}
        solution = _Solution(wire, entry_point, env, libc)
        namespace = {"__name__": "__main__", "__file__": "test.py", "__builtins__": __builtins__}
        sys.argv = ["test.py"]
        _exec_context(context, namespace)
        solution.wait_ready()
        namespace[entry_point] = solution.proxy(entry_point)
        exec(compile(tests, "test.py", "exec"), namespace)  # noqa: S102 - trusted tests
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt too
        failure = _fail_line(exc)
    if solution is not None:
        solution.stop()
    if failure is not None:
        report(failure)
        os._exit(1)
    passed()
    os._exit(0)


def _run_program(report, passed, guard: bool) -> None:
    """Program run: ``program.py`` in this interpreter (trusted programs only)."""
    if guard:
        _load_wire().guard_sockets()
    with open("program.py", encoding="utf-8") as fh:
        source = fh.read()
    sys.argv = ["program.py"]
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), namespace)  # noqa: S102 - sandboxed
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are failures too
        report(_fail_line(exc))
        os._exit(1)
    passed()
    os._exit(0)


def _run_stdio(report, passed, guard: bool, libc) -> None:
    """Stdio run: ``program.py`` in a child process with ``stdin.txt`` as its stdin."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stdin = os.open("stdin.txt", os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    error_r, error_w = os.pipe()
    flags = ["-I", "-B"] + (["-S"] if sys.flags.no_site else [])
    argv = [sys.executable, *flags, os.path.abspath(__file__), "--program", str(error_w)]
    env = {**os.environ, **({"K15_SOCKET_GUARD": "1"} if guard else {})}
    _inherit_only((error_w,))
    pid = _spawn(argv, env, libc)
    os.close(error_w)
    returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os.set_blocking(error_r, False)
    try:
        error = os.read(error_r, _FAIL_CHARS).split(b"\n", 1)[0]
    except OSError:
        error = b""
    if returncode == 0:
        passed()
        os._exit(0)
    if returncode > 0 and error:
        report(b"FAIL " + error + b"\n")
        os._exit(1)
    _die_like(returncode)


def _program_child(error_fd: int) -> None:
    """The untrusted side of a stdio run: ``program.py`` as ``__main__``; an exception is
    written to ``error_fd`` as ``Type: message`` (exit status 1)."""
    os.set_inheritable(error_fd, False)
    if os.environ.pop("K15_SOCKET_GUARD", None) == "1":
        _load_wire().guard_sockets()
    with open("program.py", encoding="utf-8") as fh:
        source = fh.read()
    sys.argv = ["program.py"]
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), namespace)  # noqa: S102 - confined child
        if not getattr(sys.stdout, "closed", True):
            sys.stdout.flush()  # a write past RLIMIT_FSIZE raises here, not at shutdown
    except SystemExit:
        raise  # the interpreter exits with its code, as a plain run would
    except BaseException as exc:  # noqa: BLE001 - reported to the harness
        os.write(error_fd, _fail_line(exc)[5:])
        os._exit(1)


def _main() -> None:
    if sys.argv[1] == "--program":
        _program_child(int(sys.argv[2]))
        return
    libc = _libc()
    _undumpable(libc)
    nonce_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)
    os.set_inheritable(result_fd, False)
    report, passed = _reporter(result_fd, nonce)
    del nonce
    guard = os.environ.pop("K15_SOCKET_GUARD", None) == "1"  # for the untrusted code
    if len(sys.argv) > 3 and sys.argv[3] == "--stdio":
        _run_stdio(report, passed, guard, libc)
    if len(sys.argv) > 3:
        _run_tests(sys.argv[3], report, passed, guard, libc)
    _run_program(report, passed, guard)


if __name__ == "__main__":
    _main()
