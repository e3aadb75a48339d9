"""A remote EnvRunner killed in the middle of sampling is restarted, its shard is redone, and
training goes on — with exactly the numbers of a run where nothing failed. A runner that
hangs (alive, stuck forever in its second sampling call) misses the sampling deadline, is
killed and restarted the same way, and training goes on.

The runner's process is SIGKILLed while it scores iteration 2 (faulty_env.HoldingEnv blocks
there). RLlib's fault tolerance (``restart_failed_env_runners``, the default) has Ray restart
the actor; K15MirrorDescent notices the missing shard, restores the runner (with the
learner's current weights) and samples the shard again with the same seed.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from ray import cloudpickle
from ray.tune.registry import register_env
from support import faulty_env, toy_env
from support.toy_training import exact_toy_config

ITERATIONS = 3


@pytest.fixture(autouse=True)
def _envs_for_remote_runners(ray_address):
    for module in (toy_env, faulty_env):  # the actors cannot import the tests folder
        cloudpickle.register_pickle_by_value(module)
    register_env(faulty_env.ENV_ID, faulty_env.make_holding_env)


def _config(model_dir, hold_dir, **training):
    return (
        exact_toy_config(
            model_dir,
            faulty_env.ENV_ID,
            {"size": 16, "hold_dir": str(hold_dir)},
            lr=1e-3,  # weights move visibly: a runner left on old weights would show
            **training,
        )
        .env_runners(num_env_runners=1)
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=3,
            env_runner_health_probe_timeout_s=60,
            env_runner_restore_timeout_s=300,
        )
    )


def _kill_when_held(hold_dir, killed: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        held = list(hold_dir.glob("held-*"))
        if held:
            pid = int(held[0].name.split("-")[1])
            os.kill(pid, signal.SIGKILL)  # the EnvRunner actor, mid-sample
            killed.append(pid)
            return
        time.sleep(0.1)


def test_killed_env_runner_is_restarted_and_its_work_redone(tiny_model_dir, tmp_path):
    quiet, faulty = tmp_path / "quiet", tmp_path / "faulty"
    quiet.mkdir()
    faulty.mkdir()
    algo = _config(tiny_model_dir, quiet).build_algo()
    try:
        reference = [algo.train() for _ in range(ITERATIONS)]
    finally:
        algo.stop()

    killed: list[int] = []
    stop = threading.Event()
    results = []
    killer = threading.Thread(target=_kill_when_held, args=(faulty, killed, stop))
    algo = _config(tiny_model_dir, faulty).build_algo()
    try:
        results.append(algo.train())
        (faulty / "arm").write_text("")  # iteration 2's scoring blocks until killed
        killer.start()
        results += [algo.train() for _ in range(ITERATIONS - 1)]
    finally:
        stop.set()
        algo.stop()
    assert len(killed) == 1, "the runner never reached the hold point"

    restarts = [r["fault_tolerance"]["num_remote_worker_restarts"] for r in results]
    assert restarts == [0, 1, 1]
    assert [r["k15"]["env_runner_shards_redone"] for r in results] == [0, 1, 1]
    for got, want in zip(results, reference, strict=True):
        # the redone shard is the lost one: same seed, same weights, so same numbers
        for key in ("accuracy", "reward_total_mean"):
            assert got["k15"][key] == want["k15"][key], key
        assert got["learners"]["default_policy"]["total_loss"] == pytest.approx(
            want["learners"]["default_policy"]["total_loss"], abs=1e-7
        )
        # the restarted runner sampled with π_θi, not the base model
        assert got["learners"]["logp_mismatch_mean_abs"] < 1e-3


DEADLINE_S = 45.0  # far above a shard of the toy task (well under a second once warm)


def test_hung_env_runner_misses_the_deadline_is_restarted_and_its_work_redone(
    tiny_model_dir, tmp_path
):
    (tmp_path / "arm").write_text("2")  # the runner's 2nd verify_batch call never returns
    config = _config(tiny_model_dir, tmp_path, env_runner_sample_timeout_s=DEADLINE_S)
    algo = config.build_algo()
    try:
        results, seconds = [], []
        for _ in range(ITERATIONS):
            start = time.monotonic()
            results.append(algo.train())
            seconds.append(time.monotonic() - start)
    finally:
        algo.stop()
    assert list(tmp_path.glob("held-*")), "the runner never reached the hold point"

    assert [r["k15"]["env_runners_hung"] for r in results] == [0, 1, 1]
    assert [r["k15"]["env_runner_shards_redone"] for r in results] == [0, 1, 1]
    assert [r["fault_tolerance"]["num_remote_worker_restarts"] for r in results] == [0, 1, 1]
    assert seconds[1] < DEADLINE_S + 180, "the hung call was not cut at the deadline"
    for result in results:  # the restarted runner sampled with π_θi, not the base model
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3
        assert result["k15"]["num_responses"] > 0
