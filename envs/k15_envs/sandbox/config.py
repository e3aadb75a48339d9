"""Limits and isolation switches for sandboxed processes (one frozen dataclass).

Two presets are used by the verifiers: :data:`CODE_DEFAULTS` for running a model's program
once, and :data:`WORKER_DEFAULTS` for the long-lived grading workers (math-verify,
reasoning-gym scorers) that parse untrusted answer text. Pass either a
:class:`SandboxConfig` or a plain ``dict`` of overrides wherever an env takes ``sandbox=``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SandboxConfig", "CODE_DEFAULTS", "WORKER_DEFAULTS", "resolve_config"]


@dataclass(frozen=True)
class SandboxConfig:
    """How one sandboxed process is confined. ``None`` disables a limit.

    wall_time_s: wall-clock limit; the whole process group is SIGKILLed at this point.
        For grading workers it is ``None``: the pool enforces a per-task deadline instead.
    cpu_time_s: ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL one second later). Keep it at or
        below ``wall_time_s``; it catches busy loops that share a core with other work.
    memory_bytes: ``RLIMIT_AS`` (address space). Python itself needs ~30 MB; sympy-based
        workers ~300 MB. Allocations beyond it raise ``MemoryError`` instead of swapping.
    max_processes: processes (incl. threads) the code may add, via ``RLIMIT_NPROC``.
        The kernel counts per uid, so concurrent sandboxes share the allowance; it is only
        enforced when the code does not run as root (see ``drop_privileges``).
    max_file_bytes: ``RLIMIT_FSIZE``; also caps captured stdout/stderr (they are files):
        a flood of output ends the run with SIGXFSZ ("output_limit").
    max_open_files: ``RLIMIT_NOFILE``.
    max_output_chars: how much of the stdout/stderr tail is returned in reports.
    drop_privileges: when running as root, run the code as ``nobody`` (capabilities are
        dropped in every case).
    isolate_network: empty network namespace (root) and/or Landlock TCP rules; with
        neither available, a Python-level socket guard (best effort, bypassable).
    restrict_writes: Landlock: no writes outside the fresh temporary directory.
    restrict_reads: Landlock: reads and executes only beneath the interpreter (plus
        site-packages and the package root for workers), system library/binary dirs, a
        few /etc files, /dev/null and /dev/urandom, /proc/self and the temporary directory.
        Without Landlock, file permissions are the only read protection (as ``nobody``
        with no capabilities: world-readable files only).
    allow_site_packages: let the code import installed packages (``python -S`` when False).
    tmp_root: where temporary directories are created (default: the system temp dir).
    """

    wall_time_s: float | None = 10.0
    cpu_time_s: float | None = 10.0
    memory_bytes: int | None = 1 << 30
    max_processes: int | None = 16
    max_file_bytes: int | None = 1 << 20
    max_open_files: int | None = 64
    max_output_chars: int = 2000
    drop_privileges: bool = True
    isolate_network: bool = True
    restrict_writes: bool = True
    restrict_reads: bool = True
    allow_site_packages: bool = False
    tmp_root: str | None = None

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SandboxConfig.{name} ({value}) must be > 0 or None")
        for name in ("memory_bytes", "max_processes", "max_file_bytes", "max_open_files"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"SandboxConfig.{name} ({value}) must be >= 1 or None")

    def limits(self) -> dict[str, int | None]:
        """The rlimit part, in the supervisor's spec format."""
        return {
            "cpu_s": None if self.cpu_time_s is None else max(1, round(self.cpu_time_s)),
            "memory_bytes": self.memory_bytes,
            "max_processes": self.max_processes,
            "file_bytes": self.max_file_bytes,
            "open_files": self.max_open_files,
        }


CODE_DEFAULTS = SandboxConfig()
WORKER_DEFAULTS = SandboxConfig(
    wall_time_s=None,
    cpu_time_s=None,
    memory_bytes=2 << 30,
    max_processes=8,
    max_open_files=256,
    max_output_chars=0,
    allow_site_packages=True,
)


def resolve_config(
    value: SandboxConfig | Mapping[str, Any] | None, default: SandboxConfig
) -> SandboxConfig:
    """``None`` -> default; a mapping -> default with those fields replaced."""
    if value is None:
        return default
    if isinstance(value, SandboxConfig):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {f.name for f in dataclasses.fields(SandboxConfig)}
        if unknown:
            raise ValueError(f"unknown SandboxConfig fields: {sorted(unknown)}")
        return dataclasses.replace(default, **dict(value))
    raise TypeError(f"sandbox must be a SandboxConfig or a dict, got {type(value).__name__}")
