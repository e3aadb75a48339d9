"""`k15 train` (what `make train` runs): progress log, learning-curve PNG, checkpoint; a
second `make train`, `--set` overrides, the budget and precision lines; and (slow) the
quickstart experiment as users run it, through the CLI and the real vLLM engine."""

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from support import toy_env

import rllib_k15.runs.trainer
from rllib_k15.commands.k15 import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "tuned_examples" / "quickstart_smollm2.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _iterations(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines]


def test_k15_train_writes_metrics_plot_and_checkpoint(peaked_tiny_model_dir, tmp_path, capsys):
    experiment = toy_env.write_toy_experiment(
        tmp_path / "quick.yaml",
        peaked_tiny_model_dir,
        iterations=2,
        eval_interval=1,
        eval_problems=4,
        eval_samples=2,
    )
    out = tmp_path / "run"
    assert main(["train", "--config", experiment, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # 0: held-out eval before training
    assert rows[0]["eval_pass@1"] is not None
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["eval_pass@1"] is not None for r in rows[1:])
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    assert (out / "checkpoint" / "learner_group").is_dir()
    printed = capsys.readouterr().out.splitlines()
    budget = [line for line in printed if line.startswith("budget: ")]
    assert budget == [
        "budget: 4 problems × 4 samples × ≤1 tokens = ≤16 generated tokens per iteration, "
        "2 iterations (≤32 in all); held-out eval every 1: 4 × 2 × ≤1"
    ]
    # the toy experiment sets the engine dtype; the learner's autocast is "auto"
    (precision,) = [line for line in printed if line.startswith("precision: ")]
    assert precision.startswith("precision: engine float32 (set: dtype=float32), learner ")
    record = json.loads((out / "run.json").read_text())["precision"]
    assert record["engine"] == {"setting": "float32", "dtype": "float32"}
    assert record["learner"]["setting"] == "auto" and record["auto"]["dtype"] in (
        "float32",
        "bfloat16",
    )
    assert (out / "engine.log").is_file()


def test_make_train_twice_starts_a_fresh_run(peaked_tiny_model_dir, tmp_path, monkeypatch, capsys):
    """No --out: the second run goes to runs/k15-<timestamp> and says how to resume the
    first; runs/latest follows; an explicit --out holding a run is still refused."""
    monkeypatch.chdir(tmp_path)
    experiment = toy_env.write_toy_experiment(
        tmp_path / "quick.yaml", peaked_tiny_model_dir, iterations=3
    )
    argv = ["train", "--config", experiment, "--set", "stop.training_iteration=1"]
    runs = tmp_path / "runs"
    assert main(argv) == 0
    first = runs / "k15"
    assert _iterations(first) == [1]  # --set beat the file's 3 iterations
    assert json.loads((first / "run.json").read_text())["overrides"] == argv[-1:]
    assert "training_iteration: 1" in (first / "experiment.yaml").read_text()
    assert os.readlink(runs / "latest") == "k15"
    capsys.readouterr()

    assert main(argv) == 0  # `make train` again
    out = capsys.readouterr().out
    (second,) = [p for p in runs.iterdir() if p.name.startswith("k15-")]
    assert re.fullmatch(r"k15-\d{8}-\d{6}", second.name), second.name
    assert (
        f"runs/k15 holds an earlier run, so this run writes to runs/{second.name} "
        "(continue the earlier one with `k15 train --resume runs/k15`)"
    ) in out
    assert _iterations(first) == [1] and _iterations(second) == [1]  # the first untouched
    assert os.readlink(runs / "latest") == second.name

    # resuming through the link continues the real directory (nothing left to train here)
    assert main(["train", "--resume", "runs/latest"]) == 0
    assert f"-> runs/{second.name}" in capsys.readouterr().out
    assert _iterations(second) == [1]

    assert main(["train", "--config", experiment, "--out", "runs/k15"]) == 2
    err = capsys.readouterr().err
    assert "runs/k15 holds an earlier run" in err
    assert "`k15 train --resume runs/k15`" in err


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(rllib_k15.runs.trainer, "run_training", started)


@pytest.mark.parametrize(
    "override,words",
    [
        ("training.tua=0.1", ["unknown field(s) ['tua'] in section `training`", "--set"]),
        ("trainig.tau=0.1", ["--set 'trainig.tau=0.1': unknown section 'trainig'"]),
        ("training.tau", ["--set 'training.tau': expected SECTION.FIELD=VALUE"]),
        ("training=1", ["--set 'training=1': name a field of `training`"]),
        ("training.tau=abc", ["`tau` ('abc') must be a number > 0"]),
        ("stop.training_iteration=ten", ["`stop.training_iteration` ('ten')"]),
        ("run.keep=2", ["unknown field 'keep' in `run`", "with --set run.keep=2"]),
    ],
)
def test_set_overrides_are_checked_like_the_file(
    override, words, tiny_model_dir, tmp_path, no_work, capsys
):
    experiment = toy_env.write_toy_experiment(tmp_path / "exp.yaml", tiny_model_dir, iterations=1)
    out = tmp_path / "run"
    argv = ["train", "--config", experiment, "--out", str(out), "--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = err[err.index("k15 train: ") :]
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


def test_set_on_resume_is_refused(tmp_path, no_work, capsys):
    assert main(["train", "--resume", str(tmp_path), "--set", "training.tau=0.2"]) == 2
    assert "--set applies to new runs" in capsys.readouterr().err


@dataclass(frozen=True)
class _Decision:  # the shape of rllib_k15.hardware.PrecisionDecision
    dtype: str
    source: str
    reason: str
    cpu_flags: tuple = ()

    def as_dict(self):
        return {**asdict(self), "cpu_flags": list(self.cpu_flags)}


@pytest.fixture
def probed_bf16(monkeypatch):
    """A stand-in decide_precision: "auto" is bf16 by a probe; explicit settings as set."""
    from rllib_k15 import hardware

    asked = []

    def decide(setting="auto"):
        asked.append(setting)
        if setting == "auto":
            return _Decision("bfloat16", "probe", "bf16 152 vs fp32 31 GFLOP/s", ("amx_bf16",))
        dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(setting, setting)
        return _Decision(dtype, "setting", f"explicit setting {setting!r}")

    monkeypatch.setattr(hardware, "decide_precision", decide, raising=False)
    return asked


def test_precision_line_auto_and_explicit(probed_bf16):
    from rllib_k15 import K15Config
    from rllib_k15.runs.trainer import precision_report

    line, record = precision_report(K15Config())
    assert line == "precision: bfloat16 (probe: bf16 152 vs fp32 31 GFLOP/s)"
    assert record["dtype"] == "bfloat16" and record["learner"]["autocast_bf16"] is True
    assert record["auto"]["source"] == "probe" and record["auto"]["cpu_flags"] == ["amx_bf16"]

    probed_bf16.clear()
    config = K15Config().training(engine_options={"dtype": "fp32"}, autocast_bf16=False)
    line, record = precision_report(config)
    assert (
        line
        == "precision: engine float32 (set: dtype=fp32), learner float32 (set: autocast_bf16=false)"
    )
    assert "auto" not in record and "auto" not in probed_bf16  # nothing to decide

    line, record = precision_report(K15Config().training(autocast_bf16=False))
    assert line == (
        "precision: engine bfloat16 (auto), learner float32 (set: autocast_bf16=false); "
        "auto: bfloat16 (probe: bf16 152 vs fp32 31 GFLOP/s)"
    )
    line, _ = precision_report(engine_dtype="auto")  # k15 eval: an engine, no learner
    assert line == "precision: bfloat16 (probe: bf16 152 vs fp32 31 GFLOP/s)"


def _finite_numbers(row: dict) -> bool:
    numbers = [v for v in row.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return bool(numbers) and all(math.isfinite(v) for v in numbers)


@pytest.mark.slow
def test_quickstart_as_users_run_it_through_vllm(tiny_model_dir, k15_cache_dir, tmp_path):
    """`k15 train --config tuned_examples/quickstart_smollm2.yaml` in a child process with
    the real vLLM engine, on the tiny model with a tiny budget: exit 0, one metrics row per
    iteration (plus the held-out row 0) with finite numbers, a checkpoint, a PNG, and a
    terminal without vLLM's INFO logs, which are in engine.log instead."""
    out = tmp_path / "run"
    sets = {
        "training.hf_model": str(tiny_model_dir),
        "stop.training_iteration": 2,
        "training.problems_per_iteration": 4,
        "training.samples_per_problem": 2,
        "training.max_response_tokens": 16,
        "training.minibatch_size": 8,
        "training.eval_problems": 4,
        "training.eval_samples": 1,
        "training.engine_options": "{kv_cache_gib: 0.25, max_model_len: 512, enforce_eager: true}",
    }
    argv = [sys.executable, "-m", "rllib_k15", "train", "--config", str(QUICKSTART)]
    argv += ["--out", str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = {**os.environ, "K15_CACHE_DIR": str(k15_cache_dir), "HF_HUB_OFFLINE": "1"}
    for key in ("VLLM_LOGGING_CONFIG_PATH", "VLLM_CONFIGURE_LOGGING", "RAY_ADDRESS"):
        env.pop(key, None)
    temp_dir = Path(tempfile.gettempdir())
    before = set(temp_dir.glob("pymp-*"))
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-6000:]
    # without Ray's dashboard (off by default) no forkserver directory is left behind
    assert not set(temp_dir.glob("pymp-*")) - before

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # eval_interval 2: row 0 is the eval
    assert all(_finite_numbers(r) for r in rows), rows
    assert all(r["accuracy"] is not None and r["tokens"] > 0 for r in rows[1:]), rows
    assert rows[0]["eval_pass@1"] is not None and rows[2]["eval_pass@1"] is not None
    assert (out / "checkpoint" / "learner_group").is_dir()
    assert (out / "checkpoints" / "iter_000002").is_dir()
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000

    # the terminal: our lines and the table; vLLM's INFO logs went to engine.log
    assert "budget: 4 problems × 2 samples × ≤16 tokens" in done.stdout
    assert re.search(r"^precision: (bfloat16|float32) \(", done.stdout, re.M), done.stdout
    assert "training progress" in done.stdout
    vllm_info = re.compile(r"INFO.*vllm|vllm.*INFO|\(MainProcess pid=\d+\) INFO")
    leaked = [line for line in terminal.splitlines() if vllm_info.search(line)]
    assert not leaked, leaked[:10]
    assert "Attempted to load weight" not in terminal
    log = (out / "engine.log").read_text()
    assert re.search(r" INFO vllm\.", log), log[:2000]  # vLLM's engine start-up, in the file
    assert json.loads((out / "run.json").read_text())["precision"]["dtype"] in (
        "bfloat16",
        "float32",
    )


def test_local_ray_starts_without_the_dashboard_unless_asked(monkeypatch):
    """`k15 train` starts its own Ray without the dashboard (`--dashboard` turns it on); a
    cluster joined through RAY_ADDRESS is not told what to start."""
    import ray

    from rllib_k15.engine import logging as engine_logging

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert engine_logging.init_ray(0)
    assert engine_logging.init_ray(0, dashboard=True)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert engine_logging.init_ray(0)
    assert [c.get("include_dashboard") for c in calls] == [False, True, None]
    assert [c["address"] for c in calls] == ["local", "local", "10.0.0.1:6379"]
    assert "include_dashboard" not in calls[2]


def test_dashboard_flag_reaches_ray(peaked_tiny_model_dir, tmp_path, monkeypatch):
    from rllib_k15.engine import logging as engine_logging

    seen = []
    monkeypatch.setattr(
        engine_logging, "init_ray", lambda verbose, dashboard=False: seen.append(dashboard)
    )
    monkeypatch.setattr(rllib_k15.runs.trainer, "run_training", lambda *a, **k: None)
    experiment = toy_env.write_toy_experiment(
        tmp_path / "q.yaml", peaked_tiny_model_dir, iterations=1
    )
    assert main(["train", "--config", experiment, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--config", experiment, "--out", str(tmp_path / "b"), "--dashboard"]) == 0
    assert seen == [False, True]


def test_a_relative_model_directory_reaches_training_absolute(
    tiny_model_dir, tmp_path, monkeypatch
):
    """``hf_model: runs/warmup/model`` (relative to where `k15 train` runs) is made absolute
    before Ray starts: its EnvRunners and learners may run in another directory."""
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "models" / "mine")
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(
        rllib_k15.runs.trainer, "run_training", lambda config, *a, **k: seen.append(config)
    )
    experiment = toy_env.write_toy_experiment(tmp_path / "exp.yaml", "models/mine", iterations=1)
    assert main(["train", "--config", experiment, "--out", str(tmp_path / "run")]) == 0
    assert seen[0].hf_model == str(tmp_path / "models" / "mine")
