"""`rllib train` (Ray Tune) killed mid-run resumes with `rllib train --resume EXPERIMENT_DIR`.

The driver is SIGKILLed (with its process group) while the trial scores iteration 2, i.e.
after Tune persisted checkpoint 1. ``--resume`` (``Tuner.restore(resume_errored=True)``)
continues the trial from that checkpoint to the stop criterion; ``--keep-checkpoints 1``
(``CheckpointConfig.num_to_keep``) leaves one checkpoint; the problem buffer in the final
checkpoint counts each of the 3 iterations once (nothing replayed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import faulty_env, toy_env
from support.runs import buffer_state, kill_group, run_k15, start_k15

pytestmark = pytest.mark.slow  # two Tune drivers


def test_rllib_train_killed_then_resumed(tiny_model_dir, tmp_path, ray_address, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_address)  # the children join the session's Ray
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "arm").write_text("2")  # block in the 2nd scoring call of the trial process
    experiment = toy_env.write_toy_experiment(tmp_path / "exp.yaml", tiny_model_dir, iterations=3)
    env_config = f"{{size: 16, hold_dir: '{hold}'}}"
    text = Path(experiment).read_text()
    text = text.replace(
        f"environment: {{env: {toy_env.ENV_ID}, env_config: {{size: 16}}}}",
        f"environment: {{env: {faulty_env.ENV_ID}, env_config: {env_config}}}",
    )
    Path(experiment).write_text(text)
    storage = tmp_path / "results"
    args = ["rllib", "train", "-f", experiment, "--storage-path", str(storage), "--name", "crash",
            "--checkpoint-freq", "1", "--keep-checkpoints", "1"]  # fmt: skip

    # the trial blocks in iteration 2; the hold file comes from the trial's process
    held_at = _hold_in_trial(args, hold, tmp_path)
    assert held_at and sorted(storage.glob("crash/*/checkpoint_*"))  # checkpoint 1 exists

    run_k15(["rllib", "train", "--resume", str(storage / "crash")], tmp_path / "log-resume.txt")
    trials = list((storage / "crash").glob("*/result.json"))
    assert len(trials) == 1
    rows = [json.loads(line) for line in trials[0].read_text().splitlines()]
    assert rows[-1]["training_iteration"] == 3 and rows[-1]["done"]
    checkpoints = sorted(trials[0].parent.glob("checkpoint_*"))
    assert len(checkpoints) == 1  # num_to_keep
    attempts = buffer_state(checkpoints[0])["attempts"]
    assert sum(attempts) == 3 * 4 * 4  # 3 iterations x 4 problems x 4 samples, none twice


def _hold_in_trial(args: list[str], hold, tmp_path) -> str:
    """Start the driver; SIGKILL its process group once the trial holds in iteration 2."""
    proc = start_k15(args, tmp_path / "log-crash.txt")
    deadline = time.monotonic() + 900
    try:
        while not list(hold.glob("held-*")):
            assert proc.poll() is None, (tmp_path / "log-crash.txt").read_text()[-4000:]
            assert time.monotonic() < deadline, "the trial never reached iteration 2"
            time.sleep(0.5)
    finally:
        kill_group(proc)
    return list(hold.glob("held-*"))[0].name
