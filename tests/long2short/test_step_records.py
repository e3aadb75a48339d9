"""The resumable-step bookkeeping the ``k15 long2short`` runs share: reuse when unchanged,
redo or refuse when the settings changed, torn records redone, ``after=`` dependencies, and
records written as the runs always wrote them (so existing ``--out`` folders still resume)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rllib_k15.long2short.step_records import (
    Refuse,
    StepCache,
    changed_keys,
    fingerprint,
    jsonable,
    load_record,
    read_json,
    read_result,
    write_json,
    write_result,
)


class _Changed(ValueError):
    pass


REFUSE = Refuse(_Changed, "{path} was made with other settings (differ: {diff})")
SETTINGS = {"lr": 0.1, "sizes": ((2, 2),), "model": Path("/m")}


def test_jsonable_is_what_json_reads_back() -> None:
    assert jsonable(SETTINGS) == {"lr": 0.1, "sizes": [[2, 2]], "model": "/m"}
    assert list(jsonable({"b": 1, "a": 2}, sort_keys=True)) == ["a", "b"]
    assert list(jsonable({"b": 1, "a": 2})) == ["b", "a"]


def test_fingerprint_is_the_hash_the_runs_stored() -> None:
    value = {"b": (1, 2), "a": Path("/x"), "c": {2: "x", 10: "y"}}
    sorted_json = json.dumps(json.loads(json.dumps(value, sort_keys=True, default=str)))
    assert fingerprint(value) == hashlib.sha256(sorted_json.encode()).hexdigest()[:16]
    parts = ("model", [1, 2], None)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    assert fingerprint(parts, length=20) == hashlib.sha256(blob).hexdigest()[:20]
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})


def test_write_json_writes_indented_json_in_a_new_folder(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "r.json"
    write_json(path, {"b": 1, "a": (1,), "p": Path("/p")}, sort_keys=True)
    assert path.read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1,\n  "p": "/p"\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left
    write_json(path, {"b": 1, "a": 2})
    assert list(read_json(path)) == ["b", "a"]


def test_read_json_of_a_missing_or_torn_file(tmp_path) -> None:
    path = tmp_path / "r.json"
    assert read_json(path) is None
    path.write_text('{"key": "ab')
    assert read_json(path, torn_ok=True) is None
    with pytest.raises(json.JSONDecodeError):
        read_json(path)


def test_changed_keys_counts_keys_only_one_side_has() -> None:
    assert changed_keys({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}) == ["b", "c", "d"]
    assert changed_keys(None, {"a": 1}) == ["a"]
    assert changed_keys({"a": 1}, {"a": 1}) == []


# ------------------------------------------------------------------- one file per record
def test_a_record_is_reused_when_unchanged_and_redone_when_changed(tmp_path) -> None:
    path = tmp_path / "round.json"
    assert load_record(path, SETTINGS) is None
    write_json(path, {"settings": SETTINGS, "row": {"loss": 1.0}})
    assert load_record(path, SETTINGS) == {"settings": jsonable(SETTINGS), "row": {"loss": 1.0}}
    assert load_record(path, {**SETTINGS, "lr": 0.2}) is None  # redo (the default)
    assert load_record(path, {**SETTINGS, "lr": 0.2}, field="other") is None


def test_a_record_of_other_settings_is_refused_when_asked_naming_the_file(tmp_path) -> None:
    path = tmp_path / "r0" / "round.json"
    write_json(path, {"settings": SETTINGS})
    assert load_record(path, SETTINGS, refuse=REFUSE) is not None
    with pytest.raises(_Changed, match=r"round\.json was made with other settings") as err:
        load_record(path, {**SETTINGS, "lr": 0.2, "new": 1}, refuse=REFUSE)
    assert str(err.value) == f"{path} was made with other settings (differ: ['lr', 'new'])"
    folder = Refuse(_Changed, "{path.parent} holds other settings: {diff}")
    with pytest.raises(_Changed) as err:
        load_record(path, {**SETTINGS, "lr": 0.2}, refuse=folder)
    assert str(err.value) == f"{path.parent} holds other settings: ['lr']"
    write_json(path, {"row": {}})  # no settings at all: every key differs
    with pytest.raises(_Changed, match=r"differ: \['lr', 'model', 'sizes'\]"):
        load_record(path, SETTINGS, refuse=REFUSE)


def test_a_torn_record_is_redone_only_where_asked(tmp_path) -> None:
    path = tmp_path / "round.json"
    path.write_text('{"settings": {"lr": 0')
    assert load_record(path, SETTINGS, torn_ok=True, refuse=REFUSE) is None
    with pytest.raises(json.JSONDecodeError):
        load_record(path, SETTINGS, refuse=REFUSE)


def test_a_result_is_stored_under_its_key(tmp_path) -> None:
    path = tmp_path / "r0.1" / "phi.json"
    assert read_result(path, "k1") is None
    assert write_result(path, "k1", {"steps": 2}) == {"steps": 2}
    assert path.read_text() == json.dumps({"key": "k1", "result": {"steps": 2}}, indent=2) + "\n"
    assert read_result(path, "k1") == {"steps": 2}
    assert read_result(path, "k2") is None  # other settings: redo
    path.write_text(path.read_text()[:20])  # torn by a kill: redo
    assert read_result(path, "k1") is None


# ------------------------------------------------------------------- one file for all steps
def test_the_step_cache_reuses_unchanged_steps_and_redoes_changed_ones(tmp_path) -> None:
    out, path = tmp_path / "o.txt", tmp_path / "k15_steps.json"
    steps = StepCache(path)
    assert not steps.reuse("a", SETTINGS, [out], refuse=REFUSE)  # no record: run it
    steps.start("a")
    out.write_text("done")
    steps.done("a", SETTINGS)
    stored = json.dumps({"a": jsonable(SETTINGS)}, indent=2, sort_keys=True)
    assert path.read_text() == stored + "\n"
    again = StepCache(path)
    assert again.reuse("a", SETTINGS, [out])
    assert again.reuse("a", jsonable(SETTINGS), [out])
    assert not again.reuse("a", {**SETTINGS, "lr": 0.2}, [out])
    assert not again.reuse("a", SETTINGS, [tmp_path / "missing"])
    again.start("a")  # a step that starts forgets its record
    assert not StepCache(path).reuse("a", SETTINGS, [out])


def test_the_step_cache_refuses_other_settings_when_asked(tmp_path) -> None:
    path = tmp_path / "k15_steps.json"
    StepCache(path).done("a", {"x": 1})
    steps = StepCache(path)
    with pytest.raises(_Changed, match=r"k15_steps\.json was made with .* \['x'\]"):
        steps.reuse("a", {"x": 2}, [], refuse=REFUSE)
    assert steps.reuse("a", {"x": 1}, [], refuse=REFUSE)


def test_a_step_whose_inputs_reran_is_redone(tmp_path) -> None:
    path = tmp_path / "k15_steps.json"
    first = StepCache(path)
    first.done("samples", {"n": 1})
    first.done("data", {"n": 1})
    steps = StepCache(path)
    assert steps.reuse("data", {"n": 1}, [], after=("samples",))
    steps.start("samples")
    steps.done("samples", {"n": 1})
    assert not steps.reuse("data", {"n": 1}, [], after=("samples",))
    assert steps.reuse("data", {"n": 1}, [], after=("model",))
