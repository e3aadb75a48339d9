"""The CPython 3.11 < 3.11.8 AST race that crashed the session (tests/ast_guard.py).

A finalizer that formats a traceback (as pytest's unraisable-exception hook does for a
``__del__`` that raised) runs inside a garbage collection inside ``ast.parse``: on the
affected releases the outer parse raises ``SystemError: AST constructor recursion depth
mismatch``. With the guard (installed by tests/conftest.py) it cannot happen.

The session that crashed: the failed DeepSpeed tests left RLlib ``LearnerGroup`` objects in
their failures' frames; ``LearnerGroup.__del__`` raises once the test's Ray cluster is gone
("Can't find actor ... It might be dead"); a later failure's report (pytest parses the source
files of its traceback) started the collection that ran it.
"""

from __future__ import annotations

import ast
import gc
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import ast_guard
import pytest

SOURCE = Path(traceback.__file__).read_text()  # any large module: many allocations


class _RaisesInDel:
    """Cyclic garbage whose finalizer formats a traceback, like pytest's unraisable hook."""

    def __init__(self):
        self.me = self  # only the cyclic collector frees it

    def __del__(self):
        try:
            raise RuntimeError("finalizer failed")
        except RuntimeError as err:
            "".join(traceback.format_exception(err))  # 3.11: ast.parse for the carets


def _mismatches(parse, rounds: int = 30) -> int:
    count = 0
    gc.collect()
    threshold = gc.get_threshold()
    gc.set_threshold(100)  # collect often: the race window is every allocation in parse
    try:
        for _ in range(rounds):
            for _ in range(300):
                _RaisesInDel()
            try:
                parse(SOURCE)
            except SystemError as err:
                assert "recursion depth mismatch" in str(err)
                count += 1
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    return count


def test_the_guard_is_installed_where_the_interpreter_needs_it():
    assert (ast.parse is ast_guard.guarded_parse) == ast_guard.AFFECTED


@pytest.mark.skipif(not ast_guard.AFFECTED, reason="CPython >= 3.11.8 or not 3.11: no race")
def test_unguarded_parse_hits_the_race():
    """Documents the bug the guard exists for (it fails here on 3.11.7 most rounds)."""
    assert _mismatches(ast_guard._original_parse) > 0


def test_guarded_parse_never_mismatches():
    assert _mismatches(ast_guard.guarded_parse) == 0
    assert gc.isenabled()  # and the collector is back on


def test_guarded_parse_raises_syntax_errors_as_usual():
    with pytest.raises(SyntaxError):
        ast_guard.guarded_parse("def (:")
    assert gc.isenabled()


# ------------------------------------------------------------------- the whole session
_SESSION = textwrap.dedent(
    """
    import gc

    class Group:
        \"\"\"Like RLlib's LearnerGroup: __del__ raises once its Ray actors are gone.\"\"\"
        def __init__(self):
            self.me = self  # a reference cycle: only the collector frees it
        def __del__(self):
            raise RuntimeError("Can't find actor: it might be dead")

    def test_first_failure_leaves_garbage():
        gc.set_threshold(100)  # collect often, as a busy session does
        groups = [Group() for _ in range(200)]
        assert len(groups) == 0

    def test_second_failure_is_reported_while_it_is_collected():
        assert [1, 2, 3] == [1, 2, 4]

    def test_after():
        pass
    """
)
# a long test file: pytest parses it (many allocations) to show the failing statement
_PADDING = "\n".join(f"def _pad{i}(a):\n    return [a + {i}, {{a: a}}]\n" for i in range(1500))


def _run_session(tmp_path: Path, guard: bool) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_session.py").write_text(_SESSION + _PADDING)
    conftest = f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    conftest += "import ast_guard\nast_guard.install()\n" if guard else ""
    (tmp_path / "conftest.py").write_text(conftest)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_failure_report_never_aborts_the_session(tmp_path):
    done = _run_session(tmp_path, guard=True)
    assert "INTERNALERROR" not in done.stdout + done.stderr, done.stdout[-3000:]
    assert done.returncode == 1 and "2 failed, 1 passed" in done.stdout, done.stdout[-3000:]


@pytest.mark.skipif(not ast_guard.AFFECTED, reason="CPython >= 3.11.8 or not 3.11: no race")
def test_without_the_guard_the_session_aborts(tmp_path):
    """What the guard prevents: exit 3 (internal error) and no test after the crash."""
    done = _run_session(tmp_path, guard=False)
    assert done.returncode == 3, done.stdout[-3000:]
    assert "SystemError: AST constructor recursion depth mismatch" in done.stdout
