"""Every ```python block of envs/README.md runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_an_example_per_env():
    text = "\n".join(BLOCKS)
    for env_id in (
        "Math",
        "Arithmetic",
        "GSMSymbolic",
        "Countdown",
        "ReasoningGym",
        "Code",
        "HumanEval",
        "MultipleChoice",
        "RenderedArithmetic",
        "ImageQA",
    ):
        assert f'"k15/{env_id}-v0"' in text, env_id


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[block {index}]", "exec"), {"__name__": "__main__"})  # noqa: S102
    assert capsys.readouterr().out  # every example prints what it shows
