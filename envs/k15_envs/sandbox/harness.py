"""Runs one untrusted Python program inside the sandbox (standard library only).

The supervisor copies this file into the sandbox's temporary directory next to
``program.py`` and runs ``python -I [-S] -B _harness.py NONCE_FD RESULT_FD``.

The harness reads the one-time nonce from ``NONCE_FD`` and closes it *before* any
untrusted code runs, executes ``program.py`` (solution + tests) as ``__main__``, and then
writes ``PASS <nonce>`` to ``RESULT_FD`` and leaves with ``os._exit(0)`` (no atexit hooks
of the program run). Anything else - ``sys.exit(0)``/``os._exit(0)`` before the tests
finish, an exception, a signal - is not a pass: exceptions are reported as
``FAIL <Type>: <message>``; silent exits leave the pipe empty ("early_exit").

Limit (documented): the program runs in this interpreter, so code written to dig the nonce
out of the harness (frame or gc introspection) could forge a pass. The defence targets the
exit/exception tricks that reward hacking finds, not a deliberate attack on the harness.
"""

import os
import sys


def _guard_sockets() -> None:
    """Best-effort fallback when the OS offers no network isolation."""
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    socket.socket = refuse  # type: ignore[assignment,misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]


def _reporter(result_fd: int, nonce: bytes):
    def report(message: bytes) -> None:
        try:
            os.write(result_fd, message)
        except OSError:
            pass

    def passed() -> None:
        report(b"PASS " + nonce + b"\n")

    return report, passed


def _main() -> None:
    nonce_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)
    report, passed = _reporter(result_fd, nonce)
    del nonce
    if os.environ.pop("K15_SOCKET_GUARD", None) == "1":
        _guard_sockets()
    with open("program.py", encoding="utf-8") as fh:
        source = fh.read()
    sys.argv = ["program.py"]
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), namespace)  # noqa: S102 - sandboxed
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are failures too
        try:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException:  # noqa: BLE001 - a hostile __str__
            text = type(exc).__name__
        report(b"FAIL " + text.replace("\n", " ")[:300].encode("utf-8", "replace") + b"\n")
        os._exit(1)
    passed()
    os._exit(0)


if __name__ == "__main__":
    _main()
