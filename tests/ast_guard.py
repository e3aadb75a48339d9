"""Keep pytest's failure reports from crashing on CPython 3.11.0-3.11.7 (gh-106905).

Those releases keep the AST constructor's recursion depth in one counter the whole
interpreter shares (fixed in 3.11.8 by CPython PR 113035). ``ast.parse`` runs no Python code
while it builds the tree, except when an allocation starts a garbage collection: then the
finalizers (``__del__``, weakref callbacks) of the collected objects run inside it. If one of
them raises, pytest's unraisable-exception hook formats the traceback right there, and on
3.11 ``traceback.format_exception`` calls ``ast.parse`` for its ``^^^^`` caret lines. That
nested parse resets the shared counter, and the outer parse — pytest parsing a test file to
show the failing statement — raises ``SystemError: AST constructor recursion depth mismatch``
for a tree it built correctly: ``INTERNALERROR``, and the session aborts. (Another thread
printing a traceback during a collection in the same window does the same.) Failed training
tests leave exactly that kind of garbage in their tracebacks' frames: seen here, RLlib's
``LearnerGroup.__del__`` raising "Can't find actor ... It might be dead" once a failed
DeepSpeed test's Ray cluster was shut down, collected during a later test.

``install()`` wraps ``ast.parse`` so that garbage collection is held off while it runs: then
no Python code runs inside the constructor, no other thread can take the GIL, and nothing
can re-enter it. Nothing is caught or retried; every error is raised as the interpreter
raises it. A no-op on interpreters without the bug.
"""

from __future__ import annotations

import ast
import functools
import gc
import sys
import threading

#: interpreters with the shared counter: 3.11 before 3.11.8
AFFECTED = sys.version_info[:2] == (3, 11) and sys.version_info < (3, 11, 8)

_original_parse = ast.parse
_lock = threading.RLock()  # re-entrant: a finalizer may parse before gc is off


@functools.wraps(_original_parse)
def guarded_parse(*args, **kwargs):
    with _lock:  # gc.isenabled/disable/enable as one step between threads
        enabled = gc.isenabled()
        gc.disable()
        try:
            return _original_parse(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()


def install() -> bool:
    """Wrap ``ast.parse`` (everyone calls it through the module: pytest's reports and
    assertion rewriting, ``traceback``); returns whether it was needed."""
    if AFFECTED and ast.parse is not guarded_parse:
        ast.parse = guarded_parse
    return AFFECTED
