"""Run two (or more) benchmark processes in lockstep: one timed step each, in turn.

On a shared machine the load moves by minutes; measuring side A for five minutes and then
side B for five compares two different machines. In lockstep both processes stay alive
and the parent lets them take turns — A's step 1, B's step 1, A's step 2, … — so every
pair of steps is measured under (nearly) the same load, and the ratio is taken per pair.

Protocol (two pipes per child, their fd numbers passed as ``--lockstep-fds GO,REPORT``):
the child blocks in :meth:`Lockstep.wait` until the parent writes a line to GO, runs one
step, and :meth:`Lockstep.report` writes one JSON line to REPORT. A child whose pipe
closes (it crashed or finished) drops out; the others go on. Without ``--lockstep-fds``
both calls are no-ops, so the same child runs standalone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Lockstep", "run_lockstep"]


class Lockstep:
    """The child's end: ``wait()`` before a step, ``report(...)`` after it."""

    def __init__(self, fds: str | None) -> None:
        self._go = self._report = None
        if fds:
            go, report = (int(x) for x in fds.split(","))
            self._go = os.fdopen(go, "r")
            self._report = os.fdopen(report, "w")

    def wait(self) -> None:
        if self._go is not None:
            self._go.readline()

    def report(self, payload: Mapping[str, Any]) -> None:
        if self._report is not None:
            self._report.write(json.dumps(dict(payload)) + "\n")
            self._report.flush()


def run_lockstep(
    commands: Mapping[str, Sequence[str]],
    rounds: int,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Start every ``python -m ...`` argument list in ``commands``, then give each one
    ``rounds`` turns in order. Returns the reports per child and the exit codes."""
    children, go_pipes, report_pipes = {}, {}, {}
    out = log.open("a") if log else None
    try:
        for name, args in commands.items():
            go_r, go_w = os.pipe()
            rep_r, rep_w = os.pipe()
            cmd = [sys.executable, *args, "--lockstep-fds", f"{go_r},{rep_w}"]
            if out:
                out.write(f"\n$ {' '.join(cmd)}\n")
                out.flush()
            children[name] = subprocess.Popen(
                cmd, cwd=cwd, env=dict(env), pass_fds=(go_r, rep_w), stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )  # fmt: skip
            os.close(go_r)
            os.close(rep_w)
            go_pipes[name] = os.fdopen(go_w, "w")
            report_pipes[name] = os.fdopen(rep_r, "r")
        reports: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
        alive = set(commands)
        for _ in range(rounds):
            for name in commands:
                if name not in alive:
                    continue
                try:
                    go_pipes[name].write("go\n")
                    go_pipes[name].flush()
                except BrokenPipeError:
                    alive.discard(name)
                    continue
                line = report_pipes[name].readline()
                if not line:  # the child exited
                    alive.discard(name)
                    continue
                reports[name].append(json.loads(line))
        for pipe in go_pipes.values():
            try:
                pipe.close()
            except BrokenPipeError:
                pass
        codes = {name: child.wait() for name, child in children.items()}
        return reports, codes
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
        for pipe in report_pipes.values():
            pipe.close()
        if out:
            out.close()
