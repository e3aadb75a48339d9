"""Bad input fails before any work starts, with one message naming the file/field/line.

The table runs ``k15 train`` with each bad experiment; training itself is replaced by a
function that fails the test if reached (no Ray, no engine, no model load). Each row
says what the user did wrong and which words the message must contain.
(Moved here and extended from tests/algorithm/test_config.py and test_k15_train.py;
``K15Config.validate`` unit cases stay in test_config.py.)
"""

from __future__ import annotations

import json

import pytest

import rllib_k15.runs.trainer
from rllib_k15.commands.k15 import main

ENV = "environment: {env: k15/Arithmetic-v0}\n"
TINY = "training: {hf_model: tiny-random-llama}\n"


def _math(dataset: str) -> str:
    return f"environment: {{env: k15/Math-v0, env_config: {{dataset: {dataset}}}}}\n" + TINY


# (id, experiment text, words the error must contain); "{d}" is the test's tmp dir
CASES = [
    # malformed YAML/JSON: the line is named
    ("yaml-syntax", ENV + "training:\n  tau: 0.1\n   lr: 1\n",
     ["bad.yaml: line 4, column 6: not valid YAML"]),
    ("yaml-unclosed", ENV + "training: {tau: 0.1\n", ["bad.yaml: line 3", "not valid YAML"]),
    ("json-syntax", '{\n  "training": {"tau": 0.1,, "lr": 1}\n}\n',
     ["bad.yaml: line 2, column 27: not valid YAML/JSON"]),
    ("not-a-mapping", "- 1\n- 2\n", ["bad.yaml: expected a mapping"]),
    # unknown keys and fields
    ("unknown-section", "trainig: {tau: 0.1}\n",
     ["bad.yaml: unknown top-level key(s) ['trainig']"]),
    ("unknown-field", ENV + "training: {tua: 0.1}\n",
     ["bad.yaml: unknown field(s) ['tua'] in section `training`"]),
    ("unknown-run-field", ENV + TINY + "run: {keep: 2}\n",
     ["bad.yaml: unknown field 'keep' in `run`"]),
    ("unknown-sampling-field", ENV + "training: {hf_model: tiny-random-llama, "
     "sampling: {strategi: uniform}}\n", ["`sampling`", "strategi"]),
    # wrong types and values
    ("section-type", "training: [1, 2]\n", ["bad.yaml: section `training` must be a mapping"]),
    ("stop-type", ENV + TINY + "stop: 5\n", ["bad.yaml: `stop` must be a mapping"]),
    ("stop-iterations-type", ENV + TINY + "stop: {training_iteration: ten}\n",
     ["`stop.training_iteration` ('ten')"]),
    ("tau-type", ENV + "training: {hf_model: tiny-random-llama, tau: abc}\n",
     ["`tau` ('abc') must be a number > 0"]),
    ("temperature-type", ENV + "training: {hf_model: tiny-random-llama, temperature: hot}\n",
     ["`temperature` ('hot') must be a number >= 0"]),
    ("samples-type", ENV + "training: {hf_model: tiny-random-llama, samples_per_problem: '8'}\n",
     ["`samples_per_problem` ('8') must be an integer >= 1"]),
    ("runners-type", ENV + TINY + "env_runners: {num_env_runners: two}\n",
     ["`num_env_runners` ('two') must be an integer >= 0"]),
    ("strategy-value", ENV + "training: {hf_model: tiny-random-llama, "
     "sampling: {strategy: random}}\n", ["`sampling`", "`strategy` ('random')"]),
    ("checkpoint-every", ENV + TINY + "run: {checkpoint_every: 0}\n",
     ["bad.yaml: `run.checkpoint_every` (0) must be an integer >= 1"]),
    # model directories
    ("model-missing", ENV + "training: {hf_model: /no/such/model}\n",
     ["`hf_model` ('/no/such/model')", "neither a registered name"]),
    ("model-not-hf", ENV + "training: {hf_model: '{d}'}\n", ["holds no config.json"]),
    # environments and datasets
    ("env-unknown", "environment: {env: k15/NoSuchTask-v0}\n" + TINY,
     ["environment `env` ('k15/NoSuchTask-v0') cannot be made", "k15/Arithmetic-v0"]),
    ("env-config-field", "environment: {env: k15/Arithmetic-v0, env_config: {levle: 3}}\n"
     + TINY, ["`env_config` ({'levle': 3}) does not fit", "'levle'"]),
    ("dataset-missing", _math("'{d}/gone.jsonl'"), ["gone.jsonl: file not found"]),
    ("dataset-empty", _math("'{d}/empty.jsonl'"), ["empty.jsonl: no rows (empty dataset)"]),
    ("dataset-bad-json", _math("'{d}/corrupt.jsonl'"),
     ["corrupt.jsonl: row 1 (line 2): invalid JSON"]),
    ("dataset-bad-parquet", _math("'{d}/corrupt.parquet'"),
     ["corrupt.parquet: unreadable parquet file"]),
    ("dataset-no-answer", _math("'{d}/no_answer.jsonl'"), ["no_answer.jsonl", "'answer'"]),
]  # fmt: skip


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(rllib_k15.runs.trainer, "run_training", started)


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "corrupt.jsonl").write_text(
        '{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": \n'
    )
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "no_answer.jsonl").write_text(json.dumps({"problem": "1+1"}) + "\n")
    return tmp_path


@pytest.mark.parametrize("text,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_experiment_fails_before_work(
    text, words, data_dir, tmp_path, no_work, capsys, tiny_model_dir
):
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("{d}", str(data_dir)))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("k15 train: ") == 1, err
    message = err[err.index("k15 train: ") :]  # (a library's log noise may come first)
    assert len(message.strip().splitlines()) <= 4, message  # one short message
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "run").exists()  # nothing written


def test_missing_experiment_file(no_work, capsys):
    assert main(["train", "--config", "/no/such/file.yaml"]) == 2
    assert "config file '/no/such/file.yaml' does not exist" in capsys.readouterr().err


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, no_work, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a `k15 train` run directory" in capsys.readouterr().err


def test_a_new_run_never_overwrites_an_earlier_one(tmp_path, no_work, capsys, tiny_model_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"iteration": 1}\n')
    path = tmp_path / "exp.yaml"
    path.write_text(ENV + TINY)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run (metrics.jsonl)" in err and "--resume" in err
