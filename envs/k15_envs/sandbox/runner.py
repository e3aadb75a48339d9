"""Parent side of the sandbox: run untrusted Python once, or start a confined worker.

``run_python(program, config)`` is the code verifier's primitive. It starts the supervisor
(``supervisor.py``) in a new session, which confines and runs ``program`` through the
harness (``harness.py``), and maps what happened to a :class:`RunReport` status:

    passed         the tests passed (harness reported PASS with the nonce); for a plain
                   program: it ran to the end
    failed         an AssertionError (the tests rejected the solution)
    error          any other exception ("detail" holds "Type: message", at most
                   ``DETAIL_CHARS`` characters plus a "[N chars cut]" marker; "unsupported
                   return type <name>" for a value that value passing cannot carry), or
                   sandbox trouble
    timeout        the wall-clock limit was hit; the whole process tree was SIGKILLed
    cpu_limit      RLIMIT_CPU was hit (SIGXCPU/SIGKILL) by the harness or the solution
    memory_limit   MemoryError under RLIMIT_AS
    output_limit   a file (stdout/stderr included) grew past RLIMIT_FSIZE (SIGXFSZ)
    early_exit     the solution left before its tests finished (sys.exit/os._exit/SystemExit)
    killed         ended by another signal (e.g. SIGKILL from itself, SIGSEGV)

``program`` is either a :class:`SplitProgram` - untrusted solution and trusted tests, run
in two processes (the trust boundary is described in ``harness.py``; this is what the
code verifier uses) - or a plain string run as one program in the harness's own
interpreter, for trusted programs only (the sandbox's self-checks): code in it can forge
its own pass.

``run_stdio(program, stdin, config)`` runs an untrusted stdin/stdout program once (the
harness's stdio run): "passed" means it exited with status 0 (``sys.exit(0)`` included;
any other exit status is "early_exit"), and ``stdout`` holds all it printed (at most
``max_file_bytes``; more is "output_limit"), for the caller to compare with the expected
output outside the sandbox. ``stderr`` keeps its last ``max_output_chars`` characters.

Thread-safe: no ``preexec_fn`` runs in this process (all confinement happens in the
single-threaded supervisor), so it can be called from worker threads and Ray actors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from k15_envs.sandbox.config import SandboxConfig

__all__ = [
    "RunReport",
    "SplitProgram",
    "run_python",
    "run_stdio",
    "classify",
    "start_supervisor",
    "base_env",
    "cap_text",
]

SUPERVISOR = Path(__file__).with_name("supervisor.py")
HARNESS = Path(__file__).with_name("harness.py")
SCRIPTS = ("_solution.py", "_wire.py")  # copied next to the harness (test runs use both)
SUPERVISOR_GRACE_S = 15.0  # supervisor start-up + teardown allowance beyond the wall limit
DETAIL_CHARS = 300  # at most this much of the program's exception text reaches ``detail``
STDIO_STDOUT_CAP = 16 << 20  # stdout a stdio run returns when ``max_file_bytes`` is None


@dataclass(frozen=True)
class RunReport:
    """Outcome of one sandboxed run (see the module docstring for ``status`` values)."""

    status: str
    detail: str = ""
    returncode: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    protections: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitProgram:
    """A solution and the tests that grade it, run in separate processes.

    solution: untrusted module source (prompt + the model's code) defining ``entry_point``.
    tests: trusted source run with ``entry_point`` bound to a proxy that calls the
        solution's function by value (HumanEval: ``test + "check(entry_point)"``).
    context: trusted source run before ``tests`` in the same namespace, for helpers the
        tests use (HumanEval: the prompt); skipped when it is not valid Python alone.
    """

    solution: str
    tests: str
    entry_point: str
    context: str = ""

    def __post_init__(self) -> None:
        if not self.entry_point.isidentifier():
            raise ValueError(f"entry_point ({self.entry_point!r}) must be an identifier")


def base_env() -> dict[str, str]:
    """The scrubbed environment every sandboxed process starts from (no secrets)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _python() -> str:
    if not sys.executable:
        raise RuntimeError("the sandbox needs sys.executable to start Python processes")
    return sys.executable


def _link_chain(path: str) -> list[str]:
    """``path`` and every symlink hop the kernel follows to reach the real file."""
    hops = [path]
    while os.path.islink(hops[-1]) and len(hops) < 40:
        target = os.readlink(hops[-1])
        hops.append(os.path.normpath(os.path.join(os.path.dirname(hops[-1]), target)))
    return hops + [os.path.realpath(path)]


def _pth_dirs(site_dir: str) -> list[str]:
    """Directories that ``.pth`` files in ``site_dir`` add to ``sys.path`` (as ``site`` does)."""
    found = []
    try:
        names = sorted(n for n in os.listdir(site_dir) if n.endswith(".pth"))
    except OSError:
        return found
    for name in names:
        try:
            with open(os.path.join(site_dir, name), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if line and not line.startswith(("#", "import ", "import\t")):
                path = os.path.join(site_dir, line)
                if os.path.isdir(path):
                    found.append(os.path.realpath(path))
    return found


def _interpreter_paths(site_packages: bool = False) -> list[str]:
    """What the sandboxed interpreter needs to start (and, with ``site_packages``, import
    installed packages): the executable and its symlink hops, libpython, the stdlib, the
    venv's ``pyvenv.cfg``; site-packages and ``.pth`` directories when asked."""
    exe = _python()
    paths = _link_chain(exe)
    stdlib = sysconfig.get_paths()  # in a venv, "platstdlib" is the venv's own lib dir
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    paths += [sysconfig.get_path(k, vars=base) for k in ("stdlib", "platstdlib")]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        paths.append(sysconfig.get_config_var("LIBDIR") or "")
    for folder in (os.path.dirname(exe), os.path.dirname(os.path.dirname(exe))):
        cfg = os.path.join(folder, "pyvenv.cfg")
        if os.path.isfile(cfg):
            paths.append(cfg)
    if site_packages:
        import site

        dirs = [*site.getsitepackages(), stdlib["purelib"], stdlib["platlib"]]
        paths += dirs
        for folder in dict.fromkeys(dirs):
            paths += _pth_dirs(folder)
    return list(dict.fromkeys(p for p in paths if p and os.path.exists(p)))


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} chars cut]"


def make_spec(
    config: SandboxConfig,
    argv: Sequence[str],
    *,
    files: dict[str, str] | None = None,
    nonce: bool = False,
    capture_output: bool = True,
    pass_fds: Sequence[int] = (),
    extra_env: dict[str, str] | None = None,
    read_paths: Sequence[str] = (),
) -> dict:
    """The supervisor's JSON spec for one confined child (``read_paths``: directories the
    child may read besides the interpreter, e.g. the package root of grading workers)."""
    return {
        "argv": list(argv),
        "files": dict(files or {}),
        "env": {**base_env(), **(extra_env or {})},
        "limits": config.limits(),
        "wall_time_s": config.wall_time_s,
        "drop_privileges": config.drop_privileges,
        "isolate_network": config.isolate_network,
        "restrict_writes": config.restrict_writes,
        "restrict_reads": config.restrict_reads,
        "tmp_root": config.tmp_root,
        "interpreter_paths": _interpreter_paths(config.allow_site_packages),
        "read_paths": [os.path.realpath(p) for p in read_paths],
        "nonce": nonce,
        "capture_output": capture_output,
        "output_chars": config.max_output_chars,
        "pass_fds": list(pass_fds),
    }


def start_supervisor(spec: dict, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """Start the supervisor in its own session and hand it ``spec`` on stdin."""
    proc = subprocess.Popen(
        [_python(), "-I", "-S", "-B", str(SUPERVISOR)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
    except OSError:
        pass  # the supervisor died at start; its (missing) events say so
    proc.stdin = None  # closed: communicate() must not touch it
    return proc


def parse_events(raw: bytes) -> list[dict]:
    events = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def kill_group(pgid: int | None) -> None:
    if pgid is None or pgid <= 1:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def classify(exit_event: dict, cpu_limit_s: float | None) -> tuple[str, str]:
    """Map the supervisor's exit event to ``(status, detail)``."""
    sig = exit_event.get("signal")
    cpu = exit_event.get("cpu_s") or 0.0
    result = exit_event.get("result")
    exc_type = result.split(":", 1)[0].strip() if result else ""
    if exit_event.get("passed"):
        return "passed", ""
    if exit_event.get("timed_out"):
        return "timeout", "wall-clock limit"
    if sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and cpu_limit_s is not None and cpu >= cpu_limit_s - 0.05
    ):
        return "cpu_limit", f"{cpu:.1f}s CPU"
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE raises OSError EFBIG (errno 27).
    if sig == signal.SIGXFSZ or (exc_type == "OSError" and "[Errno 27]" in (result or "")):
        return "output_limit", "file size limit (stdout/stderr flood?)"
    if exc_type == "MemoryError":
        return "memory_limit", result or ""
    if exc_type == "SystemExit":
        return "early_exit", result or ""
    if exc_type == "AssertionError":
        return "failed", result or ""
    if result:
        return "error", result
    if sig is not None:
        return "killed", _signal_name(sig)
    return "early_exit", f"exit code {exit_event.get('returncode')} before the tests finished"


def _harness_files(program: str | SplitProgram) -> tuple[dict[str, str], list[str]]:
    """The files the sandbox gets for ``program`` and the harness's extra arguments."""
    files = {"_harness.py": HARNESS.read_text(encoding="utf-8")}
    for name in SCRIPTS:
        files[name] = Path(__file__).with_name(name).read_text(encoding="utf-8")
    if isinstance(program, SplitProgram):
        files["solution.py"], files["context.py"] = program.solution, program.context
        files["test.py"] = program.tests
        return files, [program.entry_point]
    files["program.py"] = program
    return files, []


def run_python(
    program: str | SplitProgram, config: SandboxConfig, *, tag: str | None = None
) -> RunReport:
    """Run ``program`` (a :class:`SplitProgram`, or one trusted program) in the sandbox once."""
    files, extra = _harness_files(program)
    return _run_harness(files, extra, config, tag, config.max_output_chars)


def run_stdio(
    program: str, stdin: str, config: SandboxConfig, *, tag: str | None = None
) -> RunReport:
    """Run the untrusted stdin/stdout ``program`` once with ``stdin`` as its standard input
    (see the module docstring); the caller compares ``stdout`` with the expected output."""
    files, _ = _harness_files(program)
    files["stdin.txt"] = stdin
    cap = config.max_file_bytes or STDIO_STDOUT_CAP
    report = _run_harness(files, ["--stdio"], config, tag, cap)
    tail = report.stderr[-config.max_output_chars :] if config.max_output_chars else ""
    report = dataclasses.replace(report, stderr=tail)
    if config.max_file_bytes is None and len(report.stdout.encode()) >= cap:
        report = dataclasses.replace(report, status="output_limit", detail=f"stdout >= {cap} bytes")
    return report


def _run_harness(
    files: dict[str, str], extra: list[str], config: SandboxConfig, tag: str | None, chars: int
) -> RunReport:
    """One harness run under the supervisor; ``chars``: stdout/stderr tail returned."""
    flags = ["-I", "-B"] + ([] if config.allow_site_packages else ["-S"])
    argv = [_python(), *flags, "{tmp}/_harness.py", "{nonce_fd}", "{result_fd}", *extra]
    spec = make_spec(
        config, argv, files=files, nonce=True, extra_env={"K15_SANDBOX_TAG": tag} if tag else None
    )
    spec["output_chars"] = chars
    proc = start_supervisor(spec)
    limit = (config.wall_time_s or 3600.0) + SUPERVISOR_GRACE_S
    try:
        raw, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        raw, _ = proc.communicate()
        for event in parse_events(raw):
            kill_group(event.get("pid"))
        return RunReport("timeout", "supervisor did not finish; process groups killed")
    events = parse_events(raw)
    final = next((e for e in reversed(events) if e.get("event") in ("exit", "error")), None)
    if final is None:
        return RunReport("error", f"sandbox supervisor failed (exit code {proc.returncode})")
    if final["event"] == "error":
        return RunReport("error", cap_text(final.get("message", "sandbox error"), DETAIL_CHARS))
    status, detail = classify(final, config.cpu_time_s)
    return RunReport(
        status=status,
        detail=cap_text(detail, DETAIL_CHARS),
        returncode=final.get("returncode"),
        signal=final.get("signal"),
        stdout=str(final.get("stdout", "")),
        stderr=str(final.get("stderr", "")),
        protections=tuple(final.get("protections", ())),
    )
