"""`k15 train` (what `make train` runs): progress log, learning-curve PNG, checkpoint."""

import json

import toy_env

from rllib_k15.cli import main


def test_k15_train_writes_metrics_plot_and_checkpoint(peaked_tiny_model_dir, tmp_path):
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
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "checkpoint" / "learner_group").is_dir()
