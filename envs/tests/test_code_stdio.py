"""``k15/Code-v0`` stdin/stdout rows: one sandboxed run per case, stdout compared outside the
sandbox, the sandbox's limits mapped to the usual reasons, mixed with HumanEval rows."""

from __future__ import annotations

import json
import os
import uuid

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from k15_envs import DatasetError, Problem
from k15_envs.sandbox import SandboxConfig
from k15_envs.sandbox.runner import run_stdio
from k15_envs.verifiers.code import CodeVerifier
from k15_envs.verifiers.code_stdio import StdioCase, first_difference, normalize_output

pytestmark = pytest.mark.usefixtures("linux_only")

SANDBOX = {"wall_time_s": 1.5, "cpu_time_s": 1.0, "max_output_chars": 500}
SECRET = f"SECRET-{uuid.uuid4().hex}"  # an expected output no program can derive
SUM_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "-5 5\n", "output": "0\n"},
    {"input": "100 23\n", "output": "123\n"},
]
ROWS = [
    {"id": "sum", "prompt": "Read two integers a and b; print a + b.", "tests": SUM_TESTS},
    {
        "task_id": "func/0",
        "prompt": 'def answer() -> int:\n    """Return 42."""\n',
        "test": "def check(candidate):\n    assert candidate() == 42\n",
        "entry_point": "answer",
    },
    # ``tests`` as a JSON string, as datasets often store it
    {"id": "secret", "prompt": "Print it.", "tests": json.dumps([{"input": "", "output": SECRET}])},
    {"id": "lines", "prompt": "Echo.", "tests": [{"input": "a\nb\n", "output": "a\nb\n"}]},
]
SUM_OK = "a, b = map(int, input().split())\nprint(a + b)"


@pytest.fixture(scope="module")
def env():
    env = gym.make("k15/Code-v0", dataset=ROWS, sandbox=SANDBOX, num_workers=2)
    yield env
    env.close()


def step(env, index: int, program: str, fence: bool = True) -> dict:
    """Answer problem ``index`` with ``program`` (in a ```` ```python ```` fence)."""
    env.reset(seed=0, options={"problem_index": index})
    response = f"Here it is.\n```python\n{program}\n```\n" if fence else program
    _, reward, terminated, truncated, info = env.step(response)
    assert (terminated, truncated) == (True, False)
    info["reward"] = reward
    return info


def test_prompt_asks_for_a_stdin_program_and_function_rows_keep_theirs(env):
    stdio, function = env.unwrapped.problem(0), env.unwrapped.problem(1)
    assert "reads the input from standard input" in stdio.prompt
    assert stdio.prompt.endswith("Read two integers a and b; print a + b.")
    assert "Python function" in function.prompt and "def answer()" in function.prompt
    assert stdio.metadata["tests"][0] == StdioCase("1 2\n", "3\n")


def test_a_correct_program_passes_every_case(env):
    info = step(env, 0, SUM_OK)
    assert (info["reward"], info["correct"], info["reason"]) == (1.0, True, "correct")
    assert info["extracted_answer"].strip() == SUM_OK


def test_a_response_without_a_fence_is_the_program(env):
    assert step(env, 0, SUM_OK, fence=False)["reason"] == "correct"


def test_a_wrong_program_fails_naming_the_first_failing_case(env):
    # right on case 1 (1 2 -> 3), wrong on case 2 (-5 5: prints 10, expected 0)
    info = step(env, 0, "a, b = map(int, input().split())\nprint(abs(a) + abs(b))")
    assert info["reward"] == 0.0 and info["correct"] is False
    assert info["reason"] == "wrong: case 2 of 3 (line 1: expected '0', got '10')"


def test_the_function_row_in_the_same_dataset_still_grades(env):
    assert step(env, 1, "def answer():\n    return 42")["reason"] == "correct"
    assert step(env, 1, "def answer():\n    return 41")["reason"] == "wrong"


@pytest.mark.parametrize(
    "program",
    [
        # everything readable in its directory, its parent's command line and environment
        "import os\n"
        "found = []\n"
        "for name in os.listdir('.'):\n"
        "    try:\n        found.append(open(name, errors='replace').read())\n"
        "    except OSError:\n        pass\n"
        "for what in ('cmdline', 'environ'):\n"
        "    try:\n        found.append(open(f'/proc/{os.getppid()}/{what}').read())\n"
        "    except OSError:\n        pass\n"
        "text = '\\n'.join(found)\n"
        "start = text.find('SECRET-')\n"
        "print(text[start:start + 39] if start >= 0 else 'not found')",
        # forging a pass on every inherited descriptor, then printing nothing
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'PASS 0\\n')\n"
        "    except OSError:\n        pass",
    ],
    ids=["search-files-and-parent", "forge-pass"],
)
def test_a_program_cannot_print_an_output_it_cannot_know(env, program):
    info = step(env, 2, program)
    assert info["reward"] == 0.0
    assert info["reason"].startswith("wrong: case 1 of 1"), info["reason"]


@pytest.mark.parametrize(
    "program,reason",
    [
        # sleeps forever: only the wall clock ends it
        ("import time\ntime.sleep(10_000)", "timeout"),
        # busy loop: RLIMIT_CPU (or the wall clock)
        ("while True:\n    pass", {"cpu_limit", "timeout"}),
        # 10 GB allocation: MemoryError under RLIMIT_AS
        ("x = bytearray(10 * 1024 ** 3)", "memory_limit"),
        # flood of stdout: the capped output file stops it
        ("while True:\n    print('x' * 65536)", "output_limit"),
        # a non-zero exit status
        ("import sys\nprint(3)\nsys.exit(2)", "early_exit"),
        # an exception, with the case it happened on
        ("raise ValueError('boom')", "error: case 1: ValueError: boom"),
        # killed by a signal
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed"),
    ],
    ids=["sleep", "busy-loop", "10GB", "stdout-flood", "exit-2", "exception", "self-kill"],
)
def test_limits_and_crashes_map_to_the_usual_reasons(env, harness_processes, program, reason):
    info = step(env, 0, program)
    assert info["reward"] == 0.0
    assert info["reason"] in (reason if isinstance(reason, set) else {reason})
    assert harness_processes() == []


def test_a_process_left_behind_is_killed(env, harness_processes):
    marker = str(uuid.uuid4().int % 10**9)
    program = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "a, b = map(int, input().split())\n"
        "print(a + b)"
    )
    info = step(env, 0, program)
    assert info["reason"] == "correct"  # the output was right; the orphan does not matter
    assert harness_processes() == []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    assert marker.encode() not in fh.read(), "an orphan survived"
            except OSError:
                pass


def test_killing_the_harness_does_not_pass(env):
    program = "import os, signal\nprint(3)\nos.kill(os.getppid(), signal.SIGKILL)"
    info = step(env, 0, program)
    assert info["reward"] == 0.0
    assert info["reason"] == "killed" or info["reason"].startswith("error: case 1: PermissionError")


def test_sys_exit_zero_and_reading_stdin_in_every_way_count_as_a_normal_run(env):
    program = "import sys\nfor line in open(0).read().split():\n    print(line + '  ')\nsys.exit(0)"
    assert step(env, 3, program)["reason"] == "correct"


@pytest.mark.parametrize(
    "expected,actual,same",
    [
        ("3\n", "3", True),  # a missing final newline
        ("1 2\n3\n", "1 2   \n3\t\n\n\n", True),  # trailing whitespace and blank lines
        ("a\nb\n", "a\r\nb\r\n", True),  # Windows line ends
        ("", "\n\n", True),  # an empty expected output
        ("1\n\n2\n", "1\n2\n", False),  # a blank line inside counts
        ("3\n", " 3\n", False),  # leading whitespace counts
        ("Yes\n", "YES\n", False),  # letter case counts
        ("1.0\n", "1\n", False),  # numbers are compared as text
    ],
)
def test_output_normalisation(expected, actual, same):
    assert (normalize_output(expected) == normalize_output(actual)) is same
    assert (first_difference(expected, actual) is None) is same


def test_first_difference_names_the_line_and_caps_the_excerpts():
    assert first_difference("1\n2\n", "1\n") == "line 2: expected '2', got '<end of output>'"
    long = first_difference("x\n", "y" * 1000)
    assert long.startswith("line 1: expected 'x', got 'yyy") and "chars cut]" in long
    assert len(long) < 120


def test_run_stdio_feeds_stdin_and_returns_all_of_stdout():
    config = SandboxConfig(wall_time_s=3.0, cpu_time_s=2.0, max_output_chars=100)
    program = "import sys\ndata = sys.stdin.read()\nprint(data[::-1] * 10000, end='')"
    report = run_stdio(program, "abc\n", config)
    assert report.status == "passed"
    assert report.stdout == "\ncba" * 10000  # 40 000 chars: more than max_output_chars


def test_verifier_grades_stdio_problems_in_a_batch():
    verifier = CodeVerifier(sandbox=SANDBOX, num_workers=2)
    cases = (StdioCase("2\n", "4\n"), StdioCase("5\n", "25\n"))
    problem = Problem("sq", "square", "", 0.0, {"prompt": "square", "tests": cases})
    responses = ["print(int(input()) ** 2)", "print(int(input()) * 2)", "no code at all"]
    try:
        verdicts = verifier.verify_many([problem] * 3, responses)
    finally:
        verifier.close()
    assert [v.reason for v in verdicts] == [
        "correct",
        "wrong: case 2 of 2 (line 1: expected '25', got '10')",
        "error: case 1: SyntaxError: invalid syntax (program.py, line 1)",
    ]


def test_check_env_on_a_mixed_dataset(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    env = gym.make("k15/Code-v0", dataset=str(path), sandbox=SANDBOX)
    try:
        check_env(env.unwrapped)
        assert len(env.unwrapped) == len(ROWS)
        assert env.unwrapped.problem(0).id == "code/mixed/sum"
    finally:
        env.close()


@pytest.mark.parametrize(
    "tests,message",
    [
        ('[{"input": "1"', "not a JSON list"),  # a broken JSON string
        ([], "non-empty list"),  # no cases
        ([{"input": "1\n", "output": 3}], "case 0: 'output' must be text, got int"),
        ([{"input": "1\n", "output": "1\n"}, "2 -> 2"], "case 1: expected an object"),
    ],
)
def test_bad_test_cases_name_the_file_row_and_field(tmp_path, tests, message):
    path = tmp_path / "bad.jsonl"
    rows = [ROWS[0], {"id": "bad", "prompt": "p", "tests": tests}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        gym.make("k15/Code-v0", dataset=str(path))
    error = caught.value
    assert (error.source, error.row, error.field) == (str(path), 1, "tests")
    assert message in str(error) and "row 1" in str(error)
