"""Landlock rulesets for the sandbox child (standard library only; see ``_confine.py``).

One ruleset per child, built right before ``execve`` (after the mount namespace is set
up: a Landlock-restricted process may not mount). Rules are attached to the inodes the
paths resolve to at that moment, so the bind mounts of ``_mounts.py`` are covered.

- reads (``landlock_read``): READ_FILE, READ_DIR and EXECUTE are allowed only beneath
  the listed read paths (interpreter, system dirs, a few /etc files, /dev nodes,
  /proc/self) and the sandbox's temporary directory;
- writes (``landlock_fs``): every write, create, delete, rename and truncate is allowed
  only beneath the temporary directory (and writing /dev/null);
- ``landlock_net`` (ABI >= 4): no TCP bind/connect; ``landlock_scope`` (ABI >= 6): no
  signals or abstract unix sockets to processes outside the sandbox.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

__all__ = ["abi", "restrict"]

_SYS_LANDLOCK_CREATE_RULESET = 444  # same number on every Linux architecture
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_TRUNCATE = 1 << 14
_READ_RIGHTS = _EXECUTE | _READ_FILE | _READ_DIR  # all ABI 1
# Landlock filesystem rights that modify the filesystem (bit, minimum ABI).
_FS_WRITE_RIGHTS = (
    (_WRITE_FILE, 1),
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
    (_TRUNCATE, 3),
)
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE  # valid on a non-directory
_DEVNULL_RIGHTS = _READ_FILE | _WRITE_FILE | _TRUNCATE
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


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def abi(libc: ctypes.CDLL) -> int:
    """The Landlock ABI version of the running kernel (0 when unavailable)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int, required: bool) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise
        return  # an optional path that does not exist here: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        if not rights:
            return
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


def restrict(
    libc: ctypes.CDLL,
    *,
    abi: int,
    reads: bool,
    writes: bool,
    net: bool,
    scope: bool,
    write_dir: str,
    read_paths: tuple[str, ...],
) -> None:
    """Build the ruleset and restrict the calling thread; raises OSError on any failure."""
    attr = _RulesetAttr(0, 0, 0)
    size = 8
    fs_rights = _READ_RIGHTS if reads else 0
    if writes:
        fs_rights |= sum(bit for bit, min_abi in _FS_WRITE_RIGHTS if abi >= min_abi)
    attr.handled_access_fs = fs_rights
    if net:
        attr.handled_access_net = _NET_TCP
        size = 16
    if scope:
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
        if fs_rights:
            _add_rule(libc, ruleset, write_dir, fs_rights, required=True)
            _add_rule(libc, ruleset, "/dev/null", fs_rights & _DEVNULL_RIGHTS, required=True)
        if reads:
            for path in read_paths:
                _add_rule(libc, ruleset, path, _READ_RIGHTS, required=False)
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
