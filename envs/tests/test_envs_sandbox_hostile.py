"""The code verifier's trust boundary: hostile programs must end with reward 0, a clear
reason in ``info``, and no process left behind."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import gymnasium as gym
import pytest
from k15_envs.sandbox import SandboxConfig, sandbox_protections

pytestmark = pytest.mark.usefixtures("linux_only")

SANDBOX = {"wall_time_s": 1.5, "cpu_time_s": 1.0, "max_output_chars": 500}
ROWS = [
    {
        "task_id": "hostile/0",
        "prompt": 'def answer() -> int:\n    """Return 42."""\n',
        "test": "def check(candidate):\n    assert candidate() == 42\n",
        "entry_point": "answer",
    }
]


@pytest.fixture(scope="module")
def env():
    env = gym.make("k15/Code-v0", dataset=ROWS, sandbox=SANDBOX, num_workers=2)
    yield env
    env.close()


def run(env, body: str) -> dict:
    """Step the env with a response whose module body is ``body``."""
    env.reset(seed=0, options={"problem_index": 0})
    response = f"```python\n{body}\n```"
    _, reward, terminated, truncated, info = env.step(response)
    assert (terminated, truncated) == (True, False)
    info["reward"] = reward
    return info


@pytest.fixture
def leftovers(harness_processes):
    """Sandbox processes still alive, plus any whose command line contains ``marker``."""
    return lambda marker=b"": harness_processes() + _processes_with(marker)


def _processes_with(marker: bytes) -> list[int]:
    found = []
    if marker:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        if marker in fh.read():
                            found.append(int(entry))
                except OSError:
                    pass
    return found


def test_correct_solution_passes(env):
    info = run(env, "def answer():\n    return 42")
    assert (info["reward"], info["reason"]) == (1.0, "correct")


def test_wrong_solution_is_wrong(env):
    info = run(env, "def answer():\n    return 41")
    assert (info["reward"], info["reason"]) == (0.0, "wrong")


@pytest.mark.parametrize(
    "body,reasons",
    [
        # infinite busy loop: CPU or wall-clock limit
        ("while True:\n    pass", {"cpu_limit", "timeout"}),
        # infinite sleep: only the wall clock can end it
        ("import time\ntime.sleep(10_000)", {"timeout"}),
        # fork bomb: RLIMIT_NPROC caps it, the wall clock ends it, every fork is killed
        (
            "import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass",
            {"timeout", "cpu_limit", "killed"},
        ),
        # 10 GB allocation: MemoryError under RLIMIT_AS
        ("x = bytearray(10 * 1024 ** 3)", {"memory_limit"}),
        # flood of stdout: the capped output file stops it
        ("while True:\n    print('x' * 65536)", {"output_limit"}),
        # sys.exit(0) before the tests run looks like success to naive runners
        ("import sys\nsys.exit(0)", {"early_exit"}),
        # os._exit(0) skips everything, exit code 0
        ("import os\nos._exit(0)", {"early_exit"}),
        # SystemExit raised inside the tested function
        ("def answer():\n    raise SystemExit(0)", {"early_exit"}),
        # exit from an atexit hook after an exception
        (
            "import atexit, os\natexit.register(lambda: os._exit(0))\n"
            "def answer():\n    raise ValueError('boom')",
            {"error: ValueError: boom"},
        ),
        # forging the pass message on every inherited descriptor, then leaving quietly
        (
            "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'PASS 0\\n')\n"
            "    except OSError:\n        pass\nos._exit(0)",
            {"early_exit"},
        ),
        # killing itself with SIGKILL
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", {"killed"}),
        # killing the supervisor (the harness's parent; the solution's parent is the
        # harness) is not allowed
        (
            "import os, signal\nwith open(f'/proc/{os.getppid()}/stat') as fh:\n"
            "    supervisor = int(fh.read().rsplit(')', 1)[1].split()[1])\n"
            "os.kill(supervisor, signal.SIGKILL)\n"
            "def answer():\n    return 42",
            {"error: PermissionError: [Errno 1] Operation not permitted"},
        ),
    ],
    ids=[
        "busy-loop",
        "sleep",
        "fork-bomb",
        "10GB",
        "stdout-flood",
        "sys.exit",
        "os._exit",
        "SystemExit-in-function",
        "atexit",
        "forged-pass",
        "self-kill",
        "kill-supervisor",
    ],
)
def test_hostile_program(env, leftovers, body, reasons):
    start = time.monotonic()
    info = run(env, body)
    assert info["reward"] == 0.0 and info["correct"] is False
    assert info["reason"] in reasons
    assert time.monotonic() - start < SANDBOX["wall_time_s"] + 10
    assert leftovers() == []


def test_child_ignoring_sigterm_is_killed(env, leftovers):
    marker = str(uuid.uuid4().int % 10**9)
    body = (
        "import os, signal\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    os.setsid()\n"
        f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "os.waitpid(pid, 0)\n"
    )
    info = run(env, body)
    assert (info["reward"], info["reason"]) == (0.0, "timeout")
    assert leftovers(f"sleep\0{marker}".encode()) == []


def test_writes_outside_the_temp_dir_are_blocked(env, record_property):
    """Tests the write protection this machine has (Landlock, else file permissions)."""
    protections = sandbox_protections(SandboxConfig(**SANDBOX))
    record_property("protections", ",".join(protections))
    print(f"sandbox protections here: {protections}")
    # Below /tmp, not pytest's tmp_path: /tmp/pytest-of-root is 0700, which alone would
    # stop ``nobody`` and hide whether the protection under test works.
    outside = Path(tempfile.mkdtemp(prefix="k15-outside-", dir="/tmp"))
    try:
        if "landlock_fs" in protections:
            outside.chmod(0o777)  # file permissions alone would allow these writes
            targets = [str(outside / "pwned"), f"/tmp/k15-escape-{uuid.uuid4().hex}"]
        else:  # no Landlock: only file permissions protect (a 0777 directory is open)
            assert os.geteuid() != 0 or "uid_nobody" in protections, protections
            outside.chmod(0o755)
            parent = str(outside) if os.geteuid() == 0 else "/etc"  # not the code's own
            targets = [os.path.join(parent, f"k15-escape-{uuid.uuid4().hex}")]
        body = "def answer():\n"
        body += "".join(f"    open({t!r}, 'w').write('x')\n" for t in targets)
        body += "    return 42\n"
        info = run(env, body)
        assert info["reward"] == 0.0, protections
        assert info["reason"].startswith("error: PermissionError"), (info["reason"], protections)
        assert not any(os.path.exists(t) for t in targets), protections
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_huge_output_and_exception_text_are_capped(env):
    """1 MB of output, a 1 MB exception message and a forged 4 kB FAIL line: the reason
    stays short and says it was cut."""
    body = (
        "import os, sys\n"
        "print('x' * 1_000_000, flush=True)\n"
        "print('y' * 1_000_000, file=sys.stderr, flush=True)\n"
        "def answer():\n"
        "    raise ValueError('z' * 1_000_000)\n"
    )
    info = run(env, body)
    assert info["reward"] == 0.0
    assert info["reason"].startswith("error: ValueError: zzz")
    assert len(info["reason"]) <= 220 and "chars cut]" in info["reason"], len(info["reason"])
    assert all(len(str(v)) <= 220 for v in info.values()), {k: len(str(v)) for k, v in info.items()}


def test_network_is_unreachable(env):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
                return
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    body = (
        "import socket\n"
        "def answer():\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'pwned')\n"
        "    return 42\n"
    )
    info = run(env, body)
    stop.set()
    thread.join()
    server.close()
    assert info["reward"] == 0.0 and info["reason"].startswith("error: ")
    assert accepted == []


def test_environment_is_scrubbed(env, monkeypatch):
    monkeypatch.setenv("K15_SECRET_TOKEN", "hunter2")
    body = "import os\ndef answer():\n    return 42 if 'K15_SECRET_TOKEN' in os.environ else 0"
    info = run(env, body)
    assert (info["reward"], info["reason"]) == (0.0, "wrong")


def test_batch_runs_in_parallel_but_bounded(env, monkeypatch):
    import k15_envs.verifiers.code as code_module

    active, peak, lock = [0], [0], threading.Lock()
    real_run = code_module.run_python

    def counting_run(program, config):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real_run(program, config)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(code_module, "run_python", counting_run)
    unwrapped = env.unwrapped
    problem = unwrapped.problem(0)
    body = "```python\nimport time\ntime.sleep(0.3)\ndef answer():\n    return 42\n```"
    verdicts = unwrapped.verify_batch([problem] * 6, [body] * 6)
    assert [v.reason for v in verdicts] == ["correct"] * 6
    assert peak[0] == 2  # parallel, and never more than num_workers
