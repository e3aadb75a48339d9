"""The resumable-step bookkeeping of the ``k15 long2short`` runs: a step's record holds the
settings its outputs were made with, and a rerun skips the step when they are unchanged.

What a record of *other* settings means is the caller's choice: the step is redone (the
default), or the run stops with an error naming the record file (``refuse=Refuse(...)``),
for outputs that later steps build on and that must not be overwritten silently.

- :func:`load_record`: a JSON object in its own file with a ``settings`` (or ``key``) field
  (``skip-steps``' ``round.json``, ``internalize``'s checkpoint state and report);
- :func:`read_result` / :func:`write_result`: ``{"key": <fingerprint>, "result": ...}``
  per step (``ccot``), a torn file counting as absent;
- :class:`StepCache`: one ``k15_steps.json`` for all steps, step name -> settings
  (``system1``, ``c3ot``), with ``start``/``done`` around each step and ``after=`` for steps
  whose inputs reran.

Records are written with :func:`write_json` (temp file + fsync + rename: a reader sees the old
or the new file, never half of one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Refuse",
    "StepCache",
    "changed_keys",
    "fingerprint",
    "jsonable",
    "load_record",
    "read_json",
    "read_result",
    "same_settings",
    "write_json",
    "write_result",
]


def jsonable(value: Any, *, sort_keys: bool = False) -> Any:
    """``value`` as JSON reads it back: tuples become lists, dict keys strings, anything JSON
    does not know (a ``Path``, a dataclass) its ``str``; ``sort_keys`` orders every dict."""
    return json.loads(json.dumps(value, sort_keys=sort_keys, default=str))


def fingerprint(value: Any, *, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``value``'s JSON (keys sorted)."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def write_json(path: Path, value: Any, *, sort_keys: bool = False) -> None:
    """``value`` as indented JSON (and a newline) in ``path``, its folder made, written
    durably; anything JSON does not know is written as its ``str``."""
    from rllib_k15.runs.integrity import write_durably

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, json.dumps(value, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: Path, *, torn_ok: bool = False) -> Any:
    """The JSON in ``path``; None if there is no such file, or, with ``torn_ok``, if it does
    not parse (a record torn by a kill: its step is redone). Otherwise a bad file raises."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        if torn_ok:
            return None
        raise


def changed_keys(old: Any, new: Any) -> list[str]:
    """The sorted keys whose values differ between two settings dicts (a key that only one
    of them has counts; a value that is not a dict counts as ``{}``)."""
    old, new = (d if isinstance(d, dict) else {} for d in (old, new))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass(frozen=True)
class Refuse:
    """Stop, rather than redo a step, when its record holds other settings: raise
    ``error(message)``, ``message`` formatted with ``path`` (the record file, a ``Path``:
    ``{path.parent}`` names its folder) and ``diff`` (the :func:`changed_keys`)."""

    error: type[Exception]
    message: str = "{path} was made with other settings (differ: {diff}); use another --out"

    def raise_for(self, path: Path, stored: Any, current: Any) -> None:
        raise self.error(self.message.format(path=Path(path), diff=changed_keys(stored, current)))


def same_settings(path: Path, stored: Any, current: Any, refuse: Refuse | None = None) -> bool:
    """Whether the settings ``stored`` in the record at ``path`` are ``current`` (both as JSON
    reads them back); if not, False (redo the step) or, with ``refuse``, its error."""
    if stored == current:
        return True
    if refuse is not None:
        refuse.raise_for(path, stored, current)
    return False


def load_record(
    path: Path,
    settings: Any,
    *,
    field: str = "settings",
    refuse: Refuse | None = None,
    torn_ok: bool = False,
) -> dict[str, Any] | None:
    """The record (a JSON object) in ``path`` if its ``field`` holds ``settings``, else None:
    no record, a torn one (with ``torn_ok``) or one of other settings (redo the step; with
    ``refuse`` other settings raise its error instead)."""
    record = read_json(path, torn_ok=torn_ok)
    if record is None:
        return None
    if not same_settings(path, record.get(field), jsonable(settings), refuse):
        return None
    return record


def read_result(path: Path, key: str) -> Any:
    """The result :func:`write_result` stored in ``path`` under ``key``; None (redo the step)
    if there is none, the file is torn or it holds another key."""
    record = load_record(path, key, field="key", torn_ok=True)
    return None if record is None else record["result"]


def write_result(path: Path, key: str, result: Any) -> Any:
    """Store ``result`` in ``path`` under ``key`` (``{"key": ..., "result": ...}``); returns it."""
    write_json(path, {"key": key, "result": result})
    return result


class StepCache:
    """``<out>/k15_steps.json``: step name -> the settings its outputs were made with.

    A step is reused when its outputs exist, its settings are unchanged and no step listed
    in ``after`` ran in this call; a step about to run forgets its record first, so a crash
    in the middle leaves it to be redone."""

    def __init__(self, path: Path) -> None:
        self.path, self.ran = Path(path), set()
        self.stored: dict[str, Any] = read_json(self.path) or {}

    def reuse(
        self,
        name: str,
        settings: Any,
        outputs: Sequence[Path],
        after: Sequence[str] = (),
        refuse: Refuse | None = None,
    ) -> bool:
        """Whether step ``name`` can be skipped. A record of other settings means a redo
        (False), or with ``refuse`` its error; a step with no record is run."""
        if name not in self.stored:
            return False
        same = same_settings(self.path, self.stored[name], jsonable(settings), refuse)
        return same and not self.ran & set(after) and all(Path(p).exists() for p in outputs)

    def start(self, name: str) -> None:
        """Forget step ``name``'s record before it runs (a crash then leaves it to redo)."""
        self.stored.pop(name, None)
        self._write()

    def done(self, name: str, settings: Any) -> None:
        """Record that step ``name`` ran with ``settings`` (in this call: see ``after``)."""
        self.stored[name] = jsonable(settings)
        self.ran.add(name)
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.stored, sort_keys=True)
