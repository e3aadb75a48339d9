"""`k15 train` killed with SIGKILL mid-iteration and resumed continues as if never stopped.

One uninterrupted run (A) and one run (B) that is killed twice — during generation of
iteration 4 and during the learner update of iteration 6 — and resumed each time with
``k15 train --resume``. Tiny random model, HF engine and learner in fp32, toy env,
prioritized sampling (so the problem draw depends on the recorded outcomes, not only on the
sampler's RNG).
B must end with exactly A's metrics rows (same iterations once each, same problem ids in
the same order, same accuracy/reward/loss) and A's problem-buffer state; each kill leaves
the previous checkpoint as ``latest``; rotation keeps 2 checkpoints. The second variant
runs with partial rollouts on (4-token responses, 2 new tokens per iteration), so the kills
land while unfinished responses wait in the driver's store: B must also end with A's store.
The third adds, on top of partial rollouts, curriculum sampling (the pool narrows to the
hard problems from iteration 3, between the two kills) and two epochs over minibatches of 8
(the per-epoch shuffle must come back exactly on resume).
"""

from __future__ import annotations

import pytest
from support import toy_env
from support.runs import algorithm_state, buffer_state, kill_at_hold, metrics_rows, run_k15

from rllib_k15.runs.checkpoints import CheckpointManager

ITERATIONS = 6
COMPARED = ("iteration", "problems", "accuracy", "reward", "tokens", "loss", "kl")


@pytest.fixture(autouse=True)
def _join_session_ray(ray_address, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_address)


def _train_args(experiment: str, out) -> list[str]:
    return ["train", "--config", experiment, "--out", str(out),
            "--checkpoint-every", "2", "--keep-checkpoints", "2"]  # fmt: skip


PARTIAL = {"max_response_tokens": 4, "partial_rollout_max_tokens": 2}
PRIORITIZED = {"sampling": {"strategy": "prioritized"}}
# toy problems have difficulty index % 2: from iteration 3 on only the 8 odd ones are drawn
CURRICULUM_EPOCHS = {
    "sampling": {"strategy": "curriculum", "transition_iteration": 3, "hard_threshold": 0.5},
    "num_epochs": 2,
    "minibatch_size": 8,
}
MODES = {
    "whole": PRIORITIZED,
    "partial-rollouts": {**PRIORITIZED, **PARTIAL},
    "partial-curriculum-epochs": {**PARTIAL, **CURRICULUM_EPOCHS},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_killed_twice_and_resumed_equals_uninterrupted(tiny_model_dir, tmp_path, mode):
    partial = "partial_rollout_max_tokens" in MODES[mode]
    experiment = toy_env.write_toy_experiment(
        tmp_path / "exp.yaml",
        tiny_model_dir,
        iterations=ITERATIONS,
        autocast_bf16=False,  # fp32 learner too: runs A and B are compared number for number
        **MODES[mode],
    )
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    run_k15(_train_args(experiment, run_a), tmp_path / "log-A.txt")  # the reference

    # kill 1: in the middle of generating iteration 4 (checkpoints so far: 2)
    kill_at_hold(_train_args(experiment, run_b), "generate:4", tmp_path)
    manager = CheckpointManager(run_b, keep=2)
    assert CheckpointManager.iteration_of(manager.latest()) == 2
    assert [r["iteration"] for r in metrics_rows(run_b)] == [1, 2, 3]

    # kill 2: resumed, then killed in the learner update of iteration 6
    kill_at_hold(["train", "--resume", str(run_b)], "learn:6", tmp_path)
    assert CheckpointManager.iteration_of(manager.latest()) == 4
    assert [r["iteration"] for r in metrics_rows(run_b)] == [1, 2, 3, 4, 5]
    assert [i for i, _ in manager.complete()] == [2, 4]

    # resumed again: runs to the end
    run_k15(["train", "--resume", str(run_b)], tmp_path / "log-B-final.txt")

    rows_a, rows_b = metrics_rows(run_a), metrics_rows(run_b)
    assert [r["iteration"] for r in rows_b] == list(range(1, ITERATIONS + 1))
    for a, b in zip(rows_a, rows_b, strict=True):
        assert {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}, (a, b)
    # every new problem drawn once per iteration; the draw depended on recorded outcomes
    assert all(len(set(r["problems"])) == len(r["problems"]) == 4 for r in rows_b)

    final_a, final_b = (CheckpointManager(r, keep=2) for r in (run_a, run_b))
    assert [i for i, _ in final_b.complete()] == [4, 6]  # rotation kept the newest two
    assert buffer_state(final_a.latest()) == buffer_state(final_b.latest())
    if mode == "partial-curriculum-epochs":  # after the transition only hard problems
        assert all(p % 2 == 1 for r in rows_b[3:] for p in r["problems"]), rows_b
    if not partial:
        assert sum(buffer_state(final_b.latest())["attempts"]) == ITERATIONS * 4 * 4
    else:  # the same unfinished responses wait in both runs, token for token
        store_a = algorithm_state(final_a.latest())["partial_rollouts"]
        assert store_a == algorithm_state(final_b.latest())["partial_rollouts"]
        waited = [algorithm_state(c)["partial_rollouts"]["groups"] for _, c in final_b.complete()]
        assert any(waited), "no response was ever unfinished at a checkpoint"
    assert (run_b / "checkpoint" / "learner_group").is_dir()  # stable path -> latest
