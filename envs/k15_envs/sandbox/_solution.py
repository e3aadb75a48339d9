"""The solution process of a code-sandbox test run (standard library only; untrusted side).

Started by the harness (``harness.py``) as ``python -I [-S] -B _solution.py ENTRY_POINT
REQUEST_FD REPLY_FD`` in the sandbox's temporary directory, with the harness's
confinement (plus, where the kernel has Landlock, a nested Landlock domain), stdio and
only those two pipe ends. It imports ``solution.py`` as ``__main__``, replies ``ready``
(or ``raise`` with what the import raised), then answers each ``call`` line with
``return``, ``raise`` or ``unsupported`` (``_wire.py``) until the harness closes the
request pipe.

Nothing here is trusted: the solution can rewrite all of it. The harness believes only
well-formed messages of the encoding, and treats anything else as the process being gone.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wire  # noqa: E402  (sibling module, loaded before the solution runs)

del sys.path[0]  # the solution sees the path that ``-I`` gives

_MESSAGE_CHARS = 2000  # of an exception message sent to the harness


def _describe(exc: BaseException) -> str:
    """``[class name, message]`` of an exception, encoded."""
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = ""
    return _wire.encode([type(exc).__name__[:100], message[:_MESSAGE_CHARS]])


def _answer(function, line: bytes) -> bytes:
    """One call: decode the arguments, call, encode the result (or the exception)."""
    kind, (args, kwargs) = _wire.parse(line)
    if kind != "call":
        raise ValueError(f"unexpected request {kind!r}")
    try:
        value = function(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the harness
        return _wire.frame("raise", _describe(exc))
    try:
        return _wire.frame("return", _wire.encode(value))
    except _wire.Unsupported as exc:
        return _wire.frame("unsupported", _wire.encode(str(exc)))


def _import_solution(entry_point: str):
    with open("solution.py", encoding="utf-8") as fh:
        source = fh.read()
    sys.argv = ["solution.py"]
    namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), namespace)  # noqa: S102 - confined
    if entry_point not in namespace:
        raise NameError(f"name {entry_point!r} is not defined")
    return namespace[entry_point]


def serve(entry_point: str, request_fd: int, reply_fd: int) -> None:
    """Import ``solution.py``, then answer calls until EOF; never returns."""
    if os.environ.pop("K15_SOCKET_GUARD", None) == "1":
        _wire.guard_sockets()
    requests, replies = os.fdopen(request_fd, "rb"), os.fdopen(reply_fd, "wb")
    try:
        function, message = _import_solution(entry_point), _wire.frame("ready")
    except BaseException as exc:  # noqa: BLE001 - reported to the harness
        function, message = None, _wire.frame("raise", _describe(exc))
    try:
        replies.write(message)
        replies.flush()
        while function is not None and (line := requests.readline()):
            replies.write(_answer(function, line))
            replies.flush()
    except BaseException:  # noqa: BLE001 - the harness sees EOF
        pass
    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
