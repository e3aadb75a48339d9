"""Process separation in the code sandbox: the solution runs in a child of the harness and
exchanges only plain data with the trusted tests (``harness.py``, ``_wire.py``).

Reward hacks that work when solution and tests share an interpreter - objects equal to
everything, digging the pass report out of frames or ``gc``, patching builtins, leaving
early, attacking the harness - must all end with reward 0, while correct solutions (the
canonical ones of the sample dataset included) stay correct.
"""

from __future__ import annotations

import math
import time

import gymnasium as gym
import pytest
from k15_envs.sandbox import SplitProgram, _wire
from k15_envs.verifiers.code import build_program

pytestmark = pytest.mark.usefixtures("linux_only")

SANDBOX = {"wall_time_s": 1.5, "cpu_time_s": 1.0, "max_output_chars": 500}
PERMISSION = "error: PermissionError: [Errno 1] Operation not permitted"
ANSWER = 'def answer() -> int:\n    """Return 42."""\n'
ROWS = [
    {"prompt": ANSWER, "test": "def check(candidate):\n    assert candidate() == 42\n"},
    {
        "prompt": ANSWER,
        "test": (
            "def check(candidate):\n    value = candidate()\n"
            "    assert isinstance(value, int) and not isinstance(value, bool)\n"
            "    assert abs(value - 42) < 1e-9\n"
        ),
    },
    {
        "prompt": 'def echo(*args, **kwargs):\n    """Return (args, kwargs)."""\n',
        "test": (
            "import math\n\n\ndef check(candidate):\n"
            "    values = [None, True, 0, -7, 2 ** 70, 1.5, -0.0, float('inf'), 'é\\n\\udc80',\n"
            "              b'\\x00\\xff', bytearray(b'ab'), 1 + 2j, [1, [2]], (1, (2, 3)),\n"
            "              {1, 2}, frozenset({3}), {'a': 1, (1, 2): [3]}, [], (), {}]\n"
            "    args, kwargs = candidate(*values, key=(1,))\n"
            "    assert args == tuple(values) and kwargs == {'key': (1,)}\n"
            "    assert [type(v) for v in args] == [type(v) for v in values]\n"
            "    assert math.copysign(1, args[6]) == -1\n"
            "    nan = candidate(float('nan'))[0][0]\n"
            "    assert nan != nan\n"
        ),
    },
    {
        "prompt": 'def parse(text: str) -> int:\n    """int(text), else ValueError."""\n',
        "test": (
            "def check(candidate):\n    assert candidate('7') == 7\n    try:\n"
            "        candidate('x')\n    except ValueError as exc:\n"
            "        assert \"'x'\" in str(exc), str(exc)\n    else:\n"
            "        raise AssertionError('no ValueError')\n"
        ),
    },
    {  # the tests use a helper that only the prompt defines
        "prompt": (
            "def square(x):\n    return x * x\n\n\n"
            'def root(y: float) -> float:\n    """x >= 0 with square(x) == y."""\n'
        ),
        "test": "def check(candidate):\n    assert abs(square(candidate(2.0)) - 2.0) < 1e-9\n",
    },
    {  # not supported by value passing: in-place mutation of an argument
        "prompt": 'def clear(items: list) -> None:\n    """Empty items in place."""\n',
        "test": "def check(candidate):\n    items = [1, 2]\n    candidate(items)\n"
        "    assert items == []\n",
    },
    {  # not supported by value passing: a function as an argument
        "prompt": 'def apply(f, x):\n    """f(x)."""\n',
        "test": "def check(candidate):\n    assert candidate(lambda v: v + 1, 1) == 2\n",
    },
]
ENTRY_POINTS = ["answer", "answer", "echo", "parse", "root", "clear", "apply"]
for _index, (_row, _entry) in enumerate(zip(ROWS, ENTRY_POINTS, strict=True)):
    _row.update(task_id=f"value-passing/{_index}", entry_point=_entry)


@pytest.fixture(scope="module")
def env():
    env = gym.make("k15/Code-v0", dataset=ROWS, sandbox=SANDBOX, num_workers=2)
    yield env.unwrapped
    env.close()


def verify(env, index: int, body: str):
    """The verdict for problem ``index`` and a response whose code is ``body``."""
    return env.verify(env.problem(index), f"```python\n{body}\n```")


def test_build_program_splits_solution_and_tests():
    prompt, test = ROWS[0]["prompt"], ROWS[0]["test"]
    completion = build_program(prompt, "    return 42\n", test, "answer")
    assert completion == SplitProgram(
        solution=prompt + "    return 42\n\n",
        tests=test + "\n\ncheck(answer)\n",
        entry_point="answer",
        context=prompt,
    )
    defining = build_program(prompt, "def answer():\n    return 42", test, "answer")
    assert defining.solution == prompt + "\ndef answer():\n    return 42\n"
    assert defining.tests == completion.tests and defining.context == prompt
    with pytest.raises(ValueError, match="identifier"):
        SplitProgram("x = 1\n", "pass\n", "not a name")


def test_sample_dataset_canonical_solutions_stay_correct():
    env = gym.make("k15/Code-v0", num_workers=2).unwrapped
    try:
        problems = [env.problem(i) for i in range(len(env))]
        responses = [f"```python\n{p.answer}\n```" for p in problems]
        assert len(problems) == 3
        assert [v.reason for v in env.verify_batch(problems, responses)] == ["correct"] * 3
    finally:
        env.close()


@pytest.mark.parametrize(
    "index,body,reason",
    [
        (1, "def answer():\n    return 42", "correct"),
        (2, "def echo(*args, **kwargs):\n    return args, kwargs", "correct"),
        (3, "def parse(text):\n    return int(text)", "correct"),
        (4, "def root(y):\n    return y ** 0.5", "correct"),
        (0, "def answer():\n    class Boom(Exception):\n        pass\n    raise Boom('bad')",
         "error: Boom: bad"),
        (5, "def clear(items):\n    items.clear()", "wrong"),  # the harness's list is a copy
        (6, "def apply(f, x):\n    return f(x)", "error: unsupported argument type function"),
        (0, "def answer():\n    return iter([42])", "error: unsupported return type list_iterator"),
    ],
    ids=["int", "values", "exception-expected", "prompt-helper", "exception-name", "mutation",
         "function-argument", "iterator-return"],
)  # fmt: skip
def test_value_passing(env, index, body, reason):
    assert verify(env, index, body).reason == reason


ALWAYS_EQUAL = (
    "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\n"
)
FORGE_FROM_FRAMES = """
import gc, os, sys
def _forge():
    frame = sys._getframe()
    while frame is not None:  # in one interpreter: the harness's frame holds passed()
        found = frame.f_locals.get("passed")
        if callable(found):
            found()
            os._exit(0)
        frame = frame.f_back
    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") == "passed":
            obj()
            os._exit(0)
    for fd in range(3, 64):  # nothing found: write PASS lines on every descriptor
        try:
            os.write(fd, b"PASS " + b"0" * 32 + b"\\n")
        except OSError:
            pass
"""
PATCH_BUILTINS = (
    "import builtins\nclass _Never(Exception):\n    pass\n"
    "builtins.AssertionError = _Never\n"
    "builtins.isinstance = lambda obj, cls: cls is not bool\nbuiltins.abs = lambda x: 0\n"
)


@pytest.mark.parametrize(
    "index,body,reasons",
    [
        # 1. objects that compare equal to everything cannot cross the boundary
        (0, ALWAYS_EQUAL + "def answer():\n    return AlwaysEqual()",
         {"error: unsupported return type AlwaysEqual"}),
        (0, "class Sneaky(int):\n    def __eq__(self, other):\n        return True\n"
         "def answer():\n    return Sneaky(0)", {"error: unsupported return type Sneaky"}),
        (0, ALWAYS_EQUAL + "def answer():\n    return [AlwaysEqual()]",
         {"error: unsupported return type AlwaysEqual"}),
        # 2. the pass report is not in the solution's process: gc/frames find nothing to
        # call, and writing PASS lines only garbles the solution's own reply pipe (the
        # answers are wrong: only a forged pass could make them "correct")
        (0, "import gc, os\ndef answer():\n    for o in gc.get_objects():\n"
         "        if callable(o) and getattr(o, '__name__', '') == 'passed':\n"
         "            o()\n            os._exit(0)\n    return 41", {"wrong"}),
        (0, FORGE_FROM_FRAMES + "def answer():\n    _forge()\n    return 41", {"early_exit"}),
        (0, FORGE_FROM_FRAMES + "_forge()\ndef answer():\n    return 41", {"early_exit"}),
        # 3. patched builtins stay in the solution's process (in one interpreter, the
        # patched abs/isinstance would make these pass)
        (1, PATCH_BUILTINS + "def answer():\n    return 41", {"wrong"}),
        (1, PATCH_BUILTINS + "def answer():\n    return 42.0", {"wrong"}),
        (1, "def answer():\n    import builtins\n    builtins.abs = lambda x: 0\n    return 41",
         {"wrong"}),
        # 4. leaving early, on import or inside the call
        (0, "import sys\nsys.exit(0)", {"early_exit"}),
        (0, "import os\nos._exit(0)", {"early_exit"}),
        (0, "import sys\ndef answer():\n    sys.exit(0)", {"early_exit"}),
        (0, "import os\ndef answer():\n    os._exit(0)", {"early_exit"}),
        # 5. attacking the harness (the solution's parent)
        (0, "import os, signal\ndef answer():\n    os.kill(os.getppid(), signal.SIGKILL)\n"
         "    return 42", {"killed", PERMISSION}),
        (0, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n"
         "def answer():\n    return 42", {"timeout", PERMISSION}),
        (0, "import os\ndef answer():\n"
         "    open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n    return 42",
         {"error: PermissionError: [Errno 13] Permission denied: '/proc/"}),
        (0, "import os\ndef answer():\n    os.listdir(f'/proc/{os.getppid()}/fd')\n    return 42",
         {"error: PermissionError: [Errno 13] Permission denied: '/proc/"}),
        (0, "import ctypes, os\ndef answer():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
         "    if libc.ptrace(16, os.getppid(), 0, 0) != 0:\n"
         "        raise PermissionError(ctypes.get_errno(), 'ptrace refused')\n    return 42",
         {"error: PermissionError: [Errno 1] ptrace refused"}),
    ],
    ids=["always-equal", "int-subclass", "always-equal-in-list", "gc-passed", "forge-in-call",
         "forge-on-import", "patch-abs", "patch-isinstance", "patch-in-call",
         "sys.exit-on-import", "os._exit-on-import", "sys.exit-in-call", "os._exit-in-call",
         "kill-harness", "stop-harness", "read-harness-mem", "list-harness-fds",
         "ptrace-harness"],
)  # fmt: skip
def test_reward_hack_is_not_correct(env, harness_processes, index, body, reasons):
    """``reasons``: what the verdict's reason may be (or start with, for '/proc/<pid>')."""
    start = time.monotonic()
    verdict = verify(env, index, body)
    assert (verdict.reward, verdict.correct) == (0.0, False), verdict.reason
    assert any(verdict.reason.startswith(r) for r in reasons), verdict.reason
    assert time.monotonic() - start < SANDBOX["wall_time_s"] + 10
    assert harness_processes() == []


def test_sleeping_forever_in_the_call_is_a_timeout(env, harness_processes):
    start = time.monotonic()
    verdict = verify(env, 0, "import time\ndef answer():\n    time.sleep(10_000)")
    assert verdict.reason == "timeout"
    assert time.monotonic() - start < SANDBOX["wall_time_s"] + 10
    assert harness_processes() == []


def test_the_solution_process_cpu_time_is_limited(harness_processes):
    """RLIMIT_CPU holds in the solution's process; the harness leaves by its SIGXCPU."""
    env = gym.make(
        "k15/Code-v0", dataset=ROWS[:1], sandbox={"wall_time_s": 8.0, "cpu_time_s": 1.0}
    ).unwrapped
    try:
        verdict = verify(env, 0, "def answer():\n    while True:\n        pass")
    finally:
        env.close()
    assert verdict.reason == "cpu_limit"
    assert harness_processes() == []


def test_wire_round_trips_plain_data_with_exact_types():
    values = [None, True, 0, -(2**80), 10**5000, 1.5, -0.0, math.inf, -math.inf, "é\udc80\n",
              [1, [2, (3,)]], (), {1, 2}, frozenset({"a"}), {1: "a", (1, 2): [3], "k": {}},
              1 + 2j, complex(math.inf, -0.0), b"\x00\xff", bytearray(b"ab")]  # fmt: skip
    for value in values:
        kind, back = _wire.parse(_wire.frame("return", _wire.encode(value)))
        assert kind == "return" and back == value and type(back) is type(value), value
    nested = _wire.parse(_wire.frame("return", _wire.encode([(1,), [{2}]])))[1]
    assert type(nested[0]) is tuple and type(nested[1][0]) is set
    assert math.isnan(_wire.parse(_wire.frame("return", _wire.encode(math.nan)))[1])


def test_wire_refuses_objects_and_malformed_messages():
    class Sneaky(str):
        def __eq__(self, other):
            return True

    cyclic: list = []
    cyclic.append(cyclic)
    for value in (object(), Sneaky("x"), [1, print], {"k": iter([])}, cyclic, "x" * (9 << 20)):
        with pytest.raises(_wire.Unsupported):
            _wire.frame("return", _wire.encode(value))
    deep = b"[" * 300 + b"]" * 300
    for line in (b'{"a":1,"b":2}\n', b"[1]\n", b'{"x":{"set":[[1]]}}\n', b'{"x":NaN}\n',
                 b'{"x":{"int":5}}\n', b'{"x":{"eval":"1"}}\n', b'{"x":1} \n', b'{"x":1}',
                 b"\xff\n", b'{"x":{"dict":[[1]]}}\n', b'{"x":' + deep + b"}\n",
                 b'{"x":1' + b"1" * 5000 + b"}\n"):  # fmt: skip
        with pytest.raises((ValueError, TypeError)):
            _wire.parse(line)
