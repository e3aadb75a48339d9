"""What a sandboxed program can see and hold: no capabilities, no reads of other files.

Each test checks the protection this machine actually gives (the run's ``protections``
say which) instead of skipping where one is missing: as root the code runs as ``nobody``
with no capabilities, so file permissions stop root-only reads everywhere; Landlock
(``landlock_read``) also stops reads of world-readable files outside the allowed paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid

import pytest
from k15_envs.sandbox import SandboxConfig, _confine, run_python, runner

pytestmark = pytest.mark.usefixtures("linux_only")

CONFIG = SandboxConfig(wall_time_s=20.0, cpu_time_s=10.0, max_output_chars=50_000)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

ATTEMPT = """
import json, os, sys

def attempt(path):
    try:
        if os.path.isdir(path):
            return "listed:" + ",".join(sorted(os.listdir(path)))
        with open(path, "rb") as fh:
            return "read:" + fh.read(200).decode("latin-1")
    except OSError as exc:
        return f"refused:{type(exc).__name__}"

def done(result):
    sys.stdout.write("\\n" + json.dumps(result))
    sys.stdout.flush()
"""


def run_json(body: str, config: SandboxConfig = CONFIG) -> tuple[dict, tuple[str, ...]]:
    """Run ``body`` (which calls ``done(dict)``) in the sandbox; its dict and protections."""
    report = run_python(ATTEMPT + body, config)
    assert report.status == "passed", report
    return json.loads(report.stdout.rsplit("\n", 1)[-1]), report.protections


@pytest.fixture
def outside_dir():
    """A fresh directory (owned by the test's uid) below /tmp, traversable by everyone."""
    path = tempfile.mkdtemp(prefix="k15-confine-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _status_fields(lines: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_no_capabilities_and_no_new_privs():
    result, protections = run_json(
        "done({'status': open('/proc/self/status').read().splitlines()})"
    )
    fields = _status_fields(result["status"])
    assert "no_capabilities" in protections, protections
    assert fields["NoNewPrivs"] == "1"
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[name], 16) == 0, (name, fields[name], protections)
    if IS_ROOT:  # only root can empty the bounding set (and needs to)
        assert int(fields["CapBnd"], 16) == 0, (fields["CapBnd"], protections)
        assert "uid_nobody" in protections, protections
        assert fields["Uid"].split()[0] != "0"


@pytest.mark.parametrize("restrict_reads", [True, False], ids=["landlock-on", "landlock-off"])
def test_reads_outside_the_allowed_paths_are_refused(outside_dir, restrict_reads):
    secret = f"k15-secret-{uuid.uuid4().hex}"
    private = os.path.join(outside_dir, "private")  # mode 0600, owned by the test's uid
    public = os.path.join(outside_dir, "public")  # mode 0644
    for path, mode in ((private, 0o600), (public, 0o644)):
        with open(path, "w") as fh:
            fh.write(secret)
        os.chmod(path, mode)
    shadow = "/etc/shadow" if os.path.exists("/etc/shadow") else None
    config = dataclasses.replace(CONFIG, restrict_reads=restrict_reads)
    result, protections = run_json(
        f"done({{p: attempt(p) for p in {[private, public, shadow]!r} if p}})", config
    )
    print(f"protections: {protections}")
    landlock = "landlock_read" in protections
    assert landlock == (restrict_reads and _confine.landlock_abi() >= 1), protections
    if shadow is not None:  # root-only (0640 root:shadow): never readable
        assert result[shadow].startswith("refused:"), (result[shadow][:60], protections)
    if IS_ROOT or landlock:  # nobody + no capabilities, or Landlock
        assert result[private].startswith("refused:"), protections
    else:  # documented limit: without Landlock the code reads what its own user can
        assert "uid_nobody" not in protections and result[private] == "read:" + secret
    if landlock:
        assert result[public].startswith("refused:"), protections
    else:  # documented limit: without Landlock, world-readable files are readable
        assert result[public] == "read:" + secret, protections


def _hidden_tops() -> dict[str, set[str]]:
    """Topmost ancestor that others cannot traverse -> needed interpreter dirs below it."""
    tops: dict[str, set[str]] = {}
    for path in runner._interpreter_paths():
        real = os.path.realpath(path)
        directory = real if os.path.isdir(real) else os.path.dirname(real)
        parts = directory.strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & 0o001:
                tops.setdefault(ancestor, set()).add(directory)
                break
    return tops


def _expected_listings(top: str, needed: set[str]) -> dict[str, set[str]]:
    """Each directory on the way from ``top`` to a needed one -> the names it must show."""
    listings: dict[str, set[str]] = {}
    for directory in needed:
        parts = os.path.relpath(directory, top).split("/")
        current = top
        for part in parts:
            if any(current == d or current.startswith(d + "/") for d in needed):
                break  # inside a needed directory: its real contents are visible
            listings.setdefault(current, set()).add(part)
            current = os.path.join(current, part)
    return listings


def test_hidden_interpreter_directory_shows_only_the_interpreter_chain():
    tops = _hidden_tops()
    if not tops:  # the interpreter is reachable by everyone: nothing to hide or expose
        _, protections = run_json("done({})")
        assert "mount_namespace" not in protections, protections
        return
    marker = None
    expected: dict[str, set[str]] = {}
    for top, needed in tops.items():
        expected.update(_expected_listings(top, needed))
    if IS_ROOT:  # make sure something else is there to hide
        marker = os.path.join(next(iter(tops)), f".k15-hidden-{uuid.uuid4().hex}")
        os.mkdir(marker, 0o755)
    try:
        result, protections = run_json(f"done({{p: attempt(p) for p in {sorted(expected)!r}}})")
    finally:
        if marker:
            os.rmdir(marker)
    print(f"protections: {protections}; hidden: {sorted(tops)}")
    if IS_ROOT:
        assert "mount_namespace" in protections and "uid_nobody" in protections, protections
        for directory, names in expected.items():
            assert result[directory] == "listed:" + ",".join(sorted(names)), (directory, result)
    else:  # our own user's directories: Landlock, if present, keeps them unlisted
        assert "mount_namespace" not in protections, protections
        if "landlock_read" in protections:
            assert all(v.startswith("refused:") for v in result.values()), result


def test_exception_text_in_the_report_is_capped():
    """A forged 4 kB FAIL line on every descriptor still gives a short ``detail``."""
    body = (
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'FAIL ValueError: ' + b'A' * 4000 + b'\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(1)\n"
    )
    report = run_python(ATTEMPT + body, CONFIG)
    assert report.status == "error", report.status
    assert report.detail.startswith("ValueError: AAA") and "chars cut]" in report.detail
    assert len(report.detail) <= runner.DETAIL_CHARS + 40, len(report.detail)
