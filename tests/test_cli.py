"""The ``k15`` CLI: subcommands are discovered from ``rllib_k15.commands``; model commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rllib_k15.commands.k15 import FRONT_ENDS, build_parser, discover_commands, main


def test_discovers_every_command_module() -> None:
    names = {m.__name__.rsplit(".", 1)[1] for m in discover_commands()}
    assert {"model", "eval", "plot"} <= names
    commands_dir = Path(discover_commands()[0].__file__).parent
    on_disk = {p.stem for p in commands_dir.glob("*.py") if not p.stem.startswith("_")}
    assert names == on_disk - FRONT_ENDS  # every module loads and defines add_parser
    assert FRONT_ENDS <= on_disk  # the `k15` and `rllib` front ends live beside them


def test_a_dropped_in_module_becomes_a_command(tmp_path: Path, monkeypatch, capsys) -> None:
    pkg = tmp_path / "fake_cmds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "hello.py").write_text(
        "def add_parser(sub):\n"
        "    p = sub.add_parser('hello')\n"
        "    p.add_argument('--name', default='world')\n"
        "    p.set_defaults(func=lambda a: print('hello', a.name) or 3)\n"
    )
    (pkg / "_private.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = build_parser("fake_cmds").parse_args(["hello", "--name", "k15"])
    assert args.func(args) == 3 and capsys.readouterr().out == "hello k15\n"
    sys.modules.pop("fake_cmds", None)


def test_model_list_and_prepare(tiny_model_dir: Path, k15_cache_dir: Path, capsys) -> None:
    assert main(["model", "list", "--cache-dir", str(k15_cache_dir)]) == 0
    listing = capsys.readouterr().out
    assert "smollm2-135m-instruct" in listing and f"prepared  {tiny_model_dir}" in listing
    assert main(["model", "prepare", "tiny-random-llama", "--cache-dir", str(k15_cache_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir)


def test_unknown_model_is_a_clean_error(capsys) -> None:
    assert main(["model", "prepare", "gpt-17"]) == 2
    assert "unknown model name 'gpt-17'" in capsys.readouterr().err


def test_subcommand_is_required() -> None:
    with pytest.raises(SystemExit) as err:
        main(["model"])
    assert err.value.code == 2


def test_train_help_documents_reruns_overrides_and_logs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs/k15-YYYYMMDD-HHMMSS" in text and "k15 train --resume runs/k15" in text
    assert "runs/latest" in text and "--set SECTION.FIELD=VALUE" in text
    assert "engine.log" in text and "-v" in text


def test_eval_prints_and_records_its_precision(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import json

    out = tmp_path / "eval.jsonl"
    argv = ["eval", "--engine", "hf", "--dtype", "float32", "--model", str(tiny_model_dir),
            "--problems", "1", "--samples", "1", "--max-tokens", "1", "--out", str(out),
            "--label", "tiny", "--no-plot"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "precision: float32 (set: --dtype float32)"
    (row,) = [
        json.loads(line) for line in (tmp_path / "eval.precision.jsonl").read_text().splitlines()
    ]
    assert row["label"] == "tiny" and row["engine"] == "hf"
    assert (
        row["precision"]["dtype"] == "float32"
        and row["precision"]["engine"]["setting"] == "float32"
    )
