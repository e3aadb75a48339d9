"""Mount-namespace overlays that let ``nobody`` start an interpreter it cannot reach.

When the supervisor runs as root and the Python interpreter lives below a directory that
others cannot traverse (``/root`` is mode 0700, the interpreter ``/root/.pyenv/...``), the
child, still root, builds a private view of the filesystem before it drops to ``nobody``:

1. ``unshare(CLONE_NEWNS)`` and ``mount --make-rprivate /`` (nothing propagates back);
2. for each needed directory, an ``O_PATH`` descriptor is opened while it is still visible
   (this descriptor is the staging point: no staging directory is created anywhere);
3. a small tmpfs (mode 0755, nosuid, nodev, noexec) is mounted over the *topmost*
   untraversable ancestor (e.g. ``/root``), the directory chain down to each needed
   directory is recreated in it (mode 0755), and the needed directory is bind-mounted
   there from ``/proc/self/fd/N`` and remounted read-only (the sandbox's temp dir, if it
   is ever below such a directory, stays writable);
4. the tmpfs itself is remounted read-only.

Everything else below ``/root`` is then invisible to the program; the supervisor's own
view is untouched. Needed directories are those of ``interpreter_paths`` (a file stands for
its directory). A path whose *directory part* goes through a symlink inside the hidden
tree is not recreated: the interpreter then fails to start (an error, never a leak).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["hidden_top", "plan_overlays", "apply_overlays"]

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RELATIME = 1 << 21
# statvfs f_flag bit -> mount flag (to keep the source's per-mount flags on the bind)
_ST_TO_MS = (
    (getattr(os, "ST_NOEXEC", 8), _MS_NOEXEC),
    (getattr(os, "ST_NOATIME", 1024), _MS_NOATIME),
    (getattr(os, "ST_NODIRATIME", 2048), _MS_NODIRATIME),
    (getattr(os, "ST_RELATIME", 4096), _MS_RELATIME),
)

# ((top, ((directory, writable), ...)), ...)
Overlays = tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]


def hidden_top(directory: str) -> str | None:
    """The topmost strict ancestor of ``directory`` that others cannot traverse, or None."""
    ancestors, current = [], os.path.dirname(os.path.realpath(directory))
    while True:
        ancestors.append(current)
        if current == os.path.dirname(current):
            break
        current = os.path.dirname(current)
    for ancestor in reversed(ancestors):  # from "/" down
        try:
            if not os.stat(ancestor).st_mode & 0o001:
                return None if ancestor == "/" else ancestor
        except OSError:
            return None
    return None


def plan_overlays(paths: list[str], write_dir: str) -> Overlays:
    """Group the needed directories that others cannot reach by their hidden top."""
    needed: dict[str, bool] = {}
    for path in paths:
        real = os.path.realpath(path)
        if not os.path.exists(real):
            continue
        directory = real if os.path.isdir(real) else os.path.dirname(real)
        needed.setdefault(directory, False)
    needed[os.path.realpath(write_dir)] = True
    groups: dict[str, list[tuple[str, bool]]] = {}
    for directory in sorted(needed):
        top = hidden_top(directory)
        if top is None:
            continue
        entries = groups.setdefault(top, [])
        # a read-only directory inside one already exposed read-only adds nothing
        if any(
            directory.startswith(d.rstrip("/") + "/") and w == needed[directory] for d, w in entries
        ):
            continue
        entries.append((directory, needed[directory]))
    return tuple((top, tuple(entries)) for top, entries in sorted(groups.items()))


def _libc_mount(libc: ctypes.CDLL):
    mount = libc.mount
    mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    mount.restype = ctypes.c_int

    def call(source, target, fstype, flags, data=None) -> None:
        enc = [None if v is None else os.fsencode(v) for v in (source, target, fstype, data)]
        if mount(enc[0], enc[1], enc[2], flags, enc[3]) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount({source!r}, {target!r}): {os.strerror(err)}")

    return call


def _kept_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def _make_chain(top: str, directory: str) -> None:
    """Create ``directory`` below ``top`` (a fresh tmpfs), every level mode 0755."""
    current = top
    for part in os.path.relpath(directory, top).split("/"):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        if not os.path.lexists(current):
            os.mkdir(current, 0o755)
            os.chmod(current, 0o755)


def apply_overlays(libc: ctypes.CDLL, overlays: Overlays) -> None:
    """Build the private view described in the module docstring; raises OSError."""
    mount = _libc_mount(libc)
    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for top, entries in overlays:
        staged = []
        try:
            for directory, writable in entries:
                fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                staged.append((directory, writable, fd, _kept_flags(directory)))
            mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755,size=1m")
            for directory, writable, fd, kept in staged:
                _make_chain(top, directory)
                mount(f"/proc/self/fd/{fd}", directory, None, _MS_BIND)
                flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV | kept
                mount(None, directory, None, flags | (0 if writable else _MS_RDONLY))
            readonly = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            mount(None, top, None, readonly)
        finally:
            for _directory, _writable, fd, _kept in staged:
                os.close(fd)
