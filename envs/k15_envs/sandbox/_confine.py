"""OS confinement primitives for the sandbox supervisor (standard library only).

The supervisor (``supervisor.py``) forks, calls :func:`apply_plan` in the child and then
``execve``\\ s the untrusted program. Every step either applies its protection or raises
``OSError``: the supervisor plans only what this machine supports (:func:`make_plan`) and
then *fails closed* if a planned step does not take effect.

Protections, by name (they are what ``protections`` lists in sandbox reports), in the
order the child applies them:

- ``rlimits``: CPU seconds, address space, file size, open files, processes, no core dumps.
- ``net_namespace``: a fresh, empty network namespace (``unshare(CLONE_NEWNET)``; root only).
- ``mount_namespace``: root only, and only when the interpreter lives below a directory
  ``nobody`` cannot traverse (e.g. ``/root/.pyenv``): a private mount namespace where a
  read-only tmpfs covers that directory and holds only read-only bind mounts of the
  interpreter's directories (``_mounts.py``), so ``nobody`` can start Python while the
  rest of ``/root`` is invisible. It needs ``CAP_SYS_ADMIN`` (like ``net_namespace``): in a
  container without it such runs fail with a setup error, never with a weaker sandbox.
- ``landlock_read``: Landlock allows reading, listing and executing only beneath the
  interpreter's directories (and, for grading workers, site-packages and the package
  root), ``/usr`` and the ``/lib*``, ``/bin``, ``/sbin`` dirs, a few ``/etc`` files libc and
  Python read, ``/dev/null``, ``/dev/zero``, ``/dev/{u,}random``, ``/proc/self``,
  ``/sys/devices/system/cpu`` and the sandbox's temporary directory (``_landlock.py``).
  ``/proc/self`` is resolved once, so processes the code forks cannot read their own.
- ``landlock_fs``: Landlock denies every write, create, delete, rename and truncate outside
  the sandbox's temporary directory.
- ``landlock_net``: Landlock denies TCP bind/connect (ABI >= 4).
- ``landlock_scope``: Landlock denies signals and abstract-unix-socket connections to
  processes outside the sandbox (ABI >= 6), so the code cannot kill its supervisor.
- ``uid_nobody``: when run as root, the code runs as ``nobody`` so ``RLIMIT_NPROC`` applies
  (the kernel never enforces it for uid 0) and file permissions apply.
- ``no_capabilities``: ``PR_SET_NO_NEW_PRIVS``; as root the bounding set is emptied
  (``PR_CAPBSET_DROP`` up to ``cap_last_cap``) before the uid change; then the ambient set
  is cleared and the effective, permitted and inheritable sets are set to zero
  (``capset``), and all of this is read back (``capget``/``PR_CAPBSET_READ``) before
  ``execve``. The child never holds a capability, so setuid binaries and file
  capabilities give nothing either.

Limits: without Landlock (kernels before 5.13, or ``restrict_reads=False``) reads are
restricted only by file permissions: as ``nobody`` with no capabilities the code can read
what any local user can read (world-readable files), never root-only files. As non-root,
the code runs as the supervisor's own user and can read that user's files unless
Landlock is there. Linux is the platform with the full set; elsewhere only ``rlimits``
apply.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass

try:  # imported as k15_envs.sandbox._confine (tests) or as a top-level sibling (supervisor)
    from . import _landlock, _mounts
except ImportError:
    import _landlock  # type: ignore[no-redef]
    import _mounts  # type: ignore[no-redef]

__all__ = ["Plan", "make_plan", "apply_plan", "landlock_abi", "count_user_processes"]

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_IS_SET = 1
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CLONE_NEWNET = 0x40000000
_CAP_VERSION_3 = 0x20080522

# Read-only paths every confined child may use (libc, Python start-up, common stdlib).
SYSTEM_READ_PATHS = (
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/locale.alias",  # /usr/share/locale/locale.alias links here (Debian)
    "/etc/ssl/openssl.cnf",  # read by OpenSSL (hashlib) at start-up
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",  # resolved in the child: its own /proc/<pid> only
    "/sys/devices/system/cpu",  # os.cpu_count()
)


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
    overlays: _mounts.Overlays  # mount namespace overlays (empty: no mount namespace)
    landlock_abi: int  # 0 = no Landlock
    landlock_read: bool
    landlock_fs: bool
    landlock_net: bool
    landlock_scope: bool
    write_dir: str
    read_paths: tuple[str, ...]  # what landlock_read allows (besides write_dir)
    uid: int | None  # drop to this uid/gid (root only)
    gid: int | None
    linux: bool  # capabilities are dropped (Linux)
    drop_bounding: bool  # empty the bounding set (needs CAP_SETPCAP: root)
    cap_last: int  # highest capability number of this kernel

    @property
    def protections(self) -> list[str]:
        names = ["rlimits"]
        flags = (
            ("net_namespace", self.net_namespace),
            ("mount_namespace", bool(self.overlays)),
            ("landlock_read", self.landlock_read),
            ("landlock_fs", self.landlock_fs),
            ("landlock_net", self.landlock_net),
            ("landlock_scope", self.landlock_scope),
            ("uid_nobody", self.uid is not None),
            ("no_capabilities", self.linux),
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
        return _landlock.abi(_libc())
    except OSError:
        return 0


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        pass
    libc, last = _libc(), -1  # probe: PR_CAPBSET_READ fails (EINVAL) past the last cap
    while last < 63 and libc.prctl(_PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0:
        last += 1
    return last if last >= 0 else 40


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


def make_plan(
    *,
    limits: dict,
    write_dir: str,
    drop_privileges: bool,
    isolate_network: bool,
    restrict_writes: bool,
    restrict_reads: bool = True,
    interpreter_paths: Sequence[str],
    read_paths: Sequence[str] = (),
) -> Plan:
    """Decide which protections this machine supports for one sandboxed child.

    ``interpreter_paths``: files and directories the interpreter needs (exposed through
    the mount namespace when hidden, and readable under Landlock); ``read_paths``: further
    directories the program may read (e.g. the package root of grading workers).
    """
    linux = sys.platform.startswith("linux")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    abi = landlock_abi() if linux else 0
    uid = gid = None
    overlays: _mounts.Overlays = ()
    needed = [*interpreter_paths, *read_paths]
    if drop_privileges and is_root and linux:
        try:
            import pwd

            entry = pwd.getpwnam("nobody")
            uid, gid = entry.pw_uid, entry.pw_gid
        except (ImportError, KeyError):
            uid = gid = 65534
        overlays = _mounts.plan_overlays(needed, write_dir)
    allowance = limits.get("max_processes")
    nproc = None
    if allowance is not None and (uid is not None or not is_root):
        owner = uid if uid is not None else os.getuid()
        nproc = count_user_processes(owner) + int(allowance)
    net_ns = bool(isolate_network and is_root and linux)
    landlock_read = bool(restrict_reads and abi >= 1)
    allowed = [*needed, *(top for top, _entries in overlays), *SYSTEM_READ_PATHS]
    return Plan(
        cpu_s=limits.get("cpu_s"),
        memory_bytes=limits.get("memory_bytes"),
        file_bytes=limits.get("file_bytes"),
        open_files=limits.get("open_files"),
        nproc=nproc,
        net_namespace=net_ns,
        overlays=overlays,
        landlock_abi=abi,
        landlock_read=landlock_read,
        landlock_fs=bool(restrict_writes and abi >= 1),
        landlock_net=bool(isolate_network and abi >= 4),
        landlock_scope=bool(abi >= 6),
        write_dir=write_dir,
        read_paths=tuple(dict.fromkeys(allowed)) if landlock_read else (),
        uid=uid,
        gid=gid,
        linux=linux,
        drop_bounding=bool(linux and is_root),
        cap_last=_cap_last() if linux else 0,
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


def _drop_capabilities(libc: ctypes.CDLL, plan: Plan) -> None:
    """Empty the bounding set (root), change uid/gid, clear every other set; verify."""
    if plan.drop_bounding:
        for cap in range(plan.cap_last + 1):
            _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(CAPBSET_DROP, {cap})")
    if plan.uid is not None and plan.gid is not None:
        os.setgroups([])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(AMBIENT)")
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(0, 0, 0), _CapData(0, 0, 0))
    _check(libc.capset(ctypes.byref(header), data), "capset")
    # Read everything back: a step that silently did nothing must abort the run.
    check = (_CapData * 2)(_CapData(1, 1, 1), _CapData(1, 1, 1))
    _check(libc.capget(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), check), "capget")
    if any(d.effective or d.permitted or d.inheritable for d in check):
        raise OSError(1, "capabilities are still held after capset")
    for cap in range(plan.cap_last + 1):
        if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_IS_SET, cap, 0, 0) != 0:
            raise OSError(1, f"ambient capability {cap} is still set")
        if plan.drop_bounding and libc.prctl(_PR_CAPBSET_READ, cap, 0, 0, 0) != 0:
            raise OSError(1, f"capability {cap} is still in the bounding set")
    if libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise OSError(1, "no_new_privs is not set")


def apply_plan(plan: Plan) -> None:
    """Apply ``plan`` to the calling (freshly forked, single-threaded) process."""
    _set_rlimits(plan)
    if not sys.platform.startswith("linux"):
        return
    libc = _libc()
    if plan.net_namespace:
        _check(libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    if plan.overlays:  # before Landlock: a Landlock-restricted process may not mount
        _mounts.apply_overlays(libc, plan.overlays)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if plan.landlock_read or plan.landlock_fs or plan.landlock_net or plan.landlock_scope:
        _landlock.restrict(
            libc,
            abi=plan.landlock_abi,
            reads=plan.landlock_read,
            writes=plan.landlock_fs,
            net=plan.landlock_net,
            scope=plan.landlock_scope,
            write_dir=plan.write_dir,
            read_paths=plan.read_paths,
        )
    _drop_capabilities(libc, plan)
    # Die with the supervisor (set after the uid change, which clears it).
    parent = os.getppid()
    _check(libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(137)
