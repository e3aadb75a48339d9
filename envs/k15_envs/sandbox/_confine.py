"""OS confinement primitives for the sandbox supervisor (standard library only).

The supervisor (``supervisor.py``) forks, calls :func:`apply_plan` in the child and then
``execve``\\ s the untrusted program. Every step either applies its protection or raises
``OSError``: the supervisor plans only what this machine supports (:func:`make_plan`) and
then *fails closed* if a planned step does not take effect.

Protections, by name (they are what ``protections`` lists in sandbox reports):

- ``rlimits``: CPU seconds, address space, file size, open files, processes, no core dumps.
- ``net_namespace``: a fresh, empty network namespace (``unshare(CLONE_NEWNET)``; root only).
- ``landlock_fs``: Landlock denies every write, create, delete, rename and truncate outside
  the sandbox's temporary directory (reads are not restricted).
- ``landlock_net``: Landlock denies TCP bind/connect (ABI >= 4).
- ``landlock_scope``: Landlock denies signals and abstract-unix-socket connections to
  processes outside the sandbox (ABI >= 6), so the code cannot kill its supervisor.
- ``uid_nobody``: when run as root, the code runs as ``nobody`` so ``RLIMIT_NPROC`` applies
  (the kernel never enforces it for uid 0).
- ``cap_dac_read_search``: not a protection but a documented weakening: when the Python
  interpreter lives where ``nobody`` cannot read it (e.g. ``/root/.pyenv``), ``nobody`` keeps
  this one capability (read/search any file, never write) so it can start Python.

Linux is the platform with the full set; elsewhere only ``rlimits`` apply.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from dataclasses import dataclass

__all__ = ["Plan", "make_plan", "apply_plan", "landlock_abi", "count_user_processes"]

_SYS_LANDLOCK_CREATE_RULESET = 444  # same number on every Linux architecture
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CLONE_NEWNET = 0x40000000
_CAP_DAC_READ_SEARCH = 2
_CAP_VERSION_3 = 0x20080522

# Landlock filesystem rights that modify the filesystem (bit, minimum ABI).
_FS_WRITE_RIGHTS = (
    (1 << 1, 1),  # WRITE_FILE
    (1 << 4, 1),  # REMOVE_DIR
    (1 << 5, 1),  # REMOVE_FILE
    (1 << 6, 1),  # MAKE_CHAR
    (1 << 7, 1),  # MAKE_DIR
    (1 << 8, 1),  # MAKE_REG
    (1 << 9, 1),  # MAKE_SOCK
    (1 << 10, 1),  # MAKE_FIFO
    (1 << 11, 1),  # MAKE_BLOCK
    (1 << 12, 1),  # MAKE_SYM
    (1 << 13, 2),  # REFER (rename/link across directories)
    (1 << 14, 3),  # TRUNCATE
)
_FS_FILE_WRITE = (1 << 1) | (1 << 14)  # rights allowed on a single file (/dev/null)
_NET_TCP = (1 << 0) | (1 << 1)  # BIND_TCP | CONNECT_TCP
_SCOPE_ALL = (1 << 0) | (1 << 1)  # ABSTRACT_UNIX_SOCKET | SIGNAL


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Plan:
    """What the child applies before ``execve`` (computed once by the supervisor)."""

    cpu_s: int | None
    memory_bytes: int | None
    file_bytes: int | None
    open_files: int | None
    nproc: int | None  # absolute RLIMIT_NPROC value (per-uid count + allowance), or None
    net_namespace: bool
    landlock_abi: int  # 0 = no Landlock
    landlock_fs: bool
    landlock_net: bool
    landlock_scope: bool
    write_dir: str
    uid: int | None  # drop to this uid/gid (root only)
    gid: int | None
    read_cap: bool  # keep CAP_DAC_READ_SEARCH after dropping to `uid`

    @property
    def protections(self) -> list[str]:
        names = ["rlimits"]
        flags = (
            ("net_namespace", self.net_namespace),
            ("landlock_fs", self.landlock_fs),
            ("landlock_net", self.landlock_net),
            ("landlock_scope", self.landlock_scope),
            ("uid_nobody", self.uid is not None),
            ("cap_dac_read_search", self.read_cap),
        )
        return names + [name for name, on in flags if on]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel (0 when unavailable)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = _libc()
        version = libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def count_user_processes(uid: int) -> int:
    """Processes whose real uid is ``uid`` (what ``RLIMIT_NPROC`` counts); 0 without /proc."""
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        count += int(line.split()[1]) == uid
                        break
        except (OSError, ValueError, IndexError):
            continue
    return count


def _other_can_reach(path: str) -> bool:
    """True if a uid with no special rights can traverse every parent directory of path."""
    path = os.path.realpath(path)
    parent = os.path.dirname(path)
    while True:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
        if parent == os.path.dirname(parent):
            return True
        parent = os.path.dirname(parent)


def make_plan(
    *,
    limits: dict,
    write_dir: str,
    drop_privileges: bool,
    isolate_network: bool,
    restrict_writes: bool,
    interpreter_paths: list[str],
) -> Plan:
    """Decide which protections this machine supports for one sandboxed child."""
    linux = sys.platform.startswith("linux")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    abi = landlock_abi() if linux else 0
    uid = gid = None
    read_cap = False
    if drop_privileges and is_root and linux:
        try:
            import pwd

            entry = pwd.getpwnam("nobody")
            uid, gid = entry.pw_uid, entry.pw_gid
        except (ImportError, KeyError):
            uid = gid = 65534
        read_cap = not all(_other_can_reach(p) for p in interpreter_paths)
    allowance = limits.get("max_processes")
    nproc = None
    if allowance is not None and (uid is not None or not is_root):
        owner = uid if uid is not None else os.getuid()
        nproc = count_user_processes(owner) + int(allowance)
    net_ns = bool(isolate_network and is_root and linux)
    return Plan(
        cpu_s=limits.get("cpu_s"),
        memory_bytes=limits.get("memory_bytes"),
        file_bytes=limits.get("file_bytes"),
        open_files=limits.get("open_files"),
        nproc=nproc,
        net_namespace=net_ns,
        landlock_abi=abi,
        landlock_fs=bool(restrict_writes and abi >= 1),
        landlock_net=bool(isolate_network and abi >= 4),
        landlock_scope=bool(abi >= 6),
        write_dir=write_dir,
        uid=uid,
        gid=gid,
        read_cap=read_cap,
    )


def _set_rlimits(plan: Plan) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if plan.cpu_s is not None:
        cpu = max(1, int(plan.cpu_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    pairs = (
        (resource.RLIMIT_AS, plan.memory_bytes),
        (resource.RLIMIT_FSIZE, plan.file_bytes),
        (resource.RLIMIT_NOFILE, plan.open_files),
        (getattr(resource, "RLIMIT_NPROC", None), plan.nproc),
    )
    for which, value in pairs:
        if which is not None and value is not None:
            resource.setrlimit(which, (int(value), int(value)))


def _landlock(libc: ctypes.CDLL, plan: Plan) -> None:
    abi = plan.landlock_abi
    attr = _RulesetAttr(0, 0, 0)
    size = 8
    fs_rights = 0
    if plan.landlock_fs:
        fs_rights = sum(bit for bit, min_abi in _FS_WRITE_RIGHTS if abi >= min_abi)
        attr.handled_access_fs = fs_rights
    if plan.landlock_net:
        attr.handled_access_net = _NET_TCP
        size = 16
    if plan.landlock_scope:
        attr.scoped = _SCOPE_ALL
        size = 24
    ruleset = _check(
        libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
            ctypes.byref(attr),
            ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )
    try:
        if plan.landlock_fs:
            file_rights = fs_rights & _FS_FILE_WRITE
            for path, rights in ((plan.write_dir, fs_rights), ("/dev/null", file_rights)):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    rule = _PathBeneathAttr(rights, fd)
                    _check(
                        libc.syscall(
                            ctypes.c_long(_SYS_LANDLOCK_ADD_RULE),
                            ctypes.c_int(ruleset),
                            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                            ctypes.byref(rule),
                            ctypes.c_uint32(0),
                        ),
                        f"landlock_add_rule({path})",
                    )
                finally:
                    os.close(fd)
        _check(
            libc.syscall(
                ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF),
                ctypes.c_int(ruleset),
                ctypes.c_uint32(0),
            ),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)


def _drop_privileges(libc: ctypes.CDLL, plan: Plan) -> None:
    assert plan.uid is not None and plan.gid is not None
    os.setgroups([])
    os.setresgid(plan.gid, plan.gid, plan.gid)
    if plan.read_cap:
        _check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(KEEPCAPS)")
    os.setresuid(plan.uid, plan.uid, plan.uid)
    if plan.read_cap:
        bit = 1 << _CAP_DAC_READ_SEARCH
        header = _CapHeader(_CAP_VERSION_3, 0)
        data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
        _check(libc.capset(ctypes.byref(header), data), "capset")
        _check(
            libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH, 0, 0),
            "prctl(CAP_AMBIENT_RAISE)",
        )


def apply_plan(plan: Plan) -> None:
    """Apply ``plan`` to the calling (freshly forked, single-threaded) process."""
    _set_rlimits(plan)
    if not sys.platform.startswith("linux"):
        return
    libc = _libc()
    if plan.net_namespace:
        _check(libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if plan.landlock_fs or plan.landlock_net or plan.landlock_scope:
        _landlock(libc, plan)
    if plan.uid is not None:
        _drop_privileges(libc, plan)
    # Die with the supervisor (set after the uid change, which clears it).
    parent = os.getppid()
    _check(libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(137)
