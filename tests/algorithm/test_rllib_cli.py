"""`rllib train` / `rllib evaluate` run K15MirrorDescent through Ray Tune, and Tune sweeps."""

import json

import pytest
from ray import cloudpickle, tune
from ray.tune.registry import register_env
from support import toy_env
from support.toy_training import learning_run_config

from rllib_k15 import K15MirrorDescent
from rllib_k15.commands.rllib import main


@pytest.fixture(autouse=True)
def _toy_env_for_tune_actors():
    # Tune trials are separate actors: ship the test env by value through Ray's registry.
    cloudpickle.register_pickle_by_value(toy_env)
    register_env(toy_env.ENV_ID, toy_env.make_first_letter_env)


def test_rllib_train_and_evaluate_a_checkpoint(peaked_tiny_model_dir, tmp_path, capsys):
    experiment = toy_env.write_toy_experiment(
        tmp_path / "exp.yaml", peaked_tiny_model_dir, iterations=1
    )
    rc = main(
        [
            "train",
            "-f",
            experiment,
            "--storage-path",
            str(tmp_path / "results"),
            "--name",
            "cli",
            "--checkpoint-at-end",
        ]
    )
    assert rc == 0
    checkpoints = sorted((tmp_path / "results" / "cli").glob("*/checkpoint_*"))
    assert checkpoints, "Tune wrote no checkpoint"
    out = tmp_path / "eval.jsonl"
    assert (
        main(
            [
                "evaluate",
                str(checkpoints[-1]),
                "--problems",
                "4",
                "--samples",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text().splitlines()[-1])
    assert 0.0 <= row["pass_at_1"] <= 1.0 and row["num_problems"] == 4


def test_bad_stop_json_is_reported(capsys):
    with pytest.raises(SystemExit, match="--stop is not valid JSON"):
        main(["train", "--algo", "K15MirrorDescent", "--stop", "{iterations: 2"])


@pytest.mark.slow
def test_tune_grid_search_over_tau(peaked_tiny_model_dir, tmp_path):
    config = learning_run_config("hf", peaked_tiny_model_dir)
    config = config.training(tau=tune.grid_search([0.05, 0.5]))
    results = tune.Tuner(
        K15MirrorDescent,
        param_space=config,
        run_config=tune.RunConfig(stop={"training_iteration": 1}, storage_path=str(tmp_path)),
    ).fit()
    assert len(results) == 2 and not results.errors
    taus = sorted(r.config["tau"] for r in results)
    assert taus == [0.05, 0.5]
    assert all("accuracy" in r.metrics["k15"] for r in results)


class _NoTuner:
    """Stands in for tune.Tuner: records what it was given, trains nothing."""

    seen: list = []

    def __init__(self, trainable, param_space=None, run_config=None):
        _NoTuner.seen.append((param_space, run_config))

    def fit(self):
        return []


def test_rllib_train_prints_the_budget_before_work(tiny_model_dir, monkeypatch, capsys):
    """The no-config-file command names its budget (the built-in defaults) and the
    laptop-sized alternative before Tune starts; `--set` overrides fields like a file."""
    monkeypatch.setattr(tune, "Tuner", _NoTuner)
    _NoTuner.seen.clear()
    base = ["train", "--algo", "K15MirrorDescent", "--env", "k15/Arithmetic-v0"]
    base += ["--stop", '{"training_iteration": 2}', "--set", f"training.hf_model={tiny_model_dir}"]
    assert main(base) == 0
    out = capsys.readouterr().out
    from rllib_k15.algorithm.config import K15_FIELDS

    names = ("problems_per_iteration", "samples_per_problem", "max_response_tokens")
    p, k, t = (K15_FIELDS[name][0] for name in names)
    assert (
        f"budget: {p} problems × {k} samples × ≤{t} tokens = ≤{p * k * t:,} generated tokens "
        f"per iteration, 2 iterations (≤{2 * p * k * t:,} in all) — the built-in defaults"
    ) in out
    assert "for a laptop-sized run use --config tuned_examples/quickstart_smollm2.yaml" in out
    config, run_config = _NoTuner.seen[-1]
    assert config.hf_model == str(tiny_model_dir) and run_config.stop == {"training_iteration": 2}

    override = [
        "--set",
        "training.problems_per_iteration=4",
        "--set",
        "training.engine_options.dtype=float32",
    ]
    assert main([*base, *override]) == 0
    out = capsys.readouterr().out
    assert f"budget: 4 problems × {k} samples × ≤{t} tokens" in out and "laptop-sized" not in out
    config, _ = _NoTuner.seen[-1]
    assert config.problems_per_iteration == 4 and config.engine_options["dtype"] == "float32"


def test_rllib_train_set_is_checked(capsys):
    assert main(["train", "--algo", "K15MirrorDescent", "--set", "training.tua=1"]) == 2
    assert "unknown field(s) ['tua'] in section `training`" in capsys.readouterr().err
