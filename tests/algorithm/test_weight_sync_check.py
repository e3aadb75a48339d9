"""A weight sync that silently loads nothing stops the run (rllib_k15.engine.fingerprint)."""

import pytest
from support.toy_training import learning_config

from rllib_k15.engine.fingerprint import WeightSyncError


def test_a_sync_that_loads_nothing_stops_the_run(peaked_tiny_model_dir):
    algo = learning_config(peaked_tiny_model_dir, autocast_bf16=False, lr=1e-3).build_algo()
    try:
        algo.env_runner.engine.load_weights = lambda state_dict: None  # a silent no-op loader
        with pytest.raises(WeightSyncError, match="does not hold the weights it was sent"):
            algo.train()
    finally:
        algo.stop()


def test_the_local_env_runner_gets_the_new_weights_without_the_object_store(
    peaked_tiny_model_dir, monkeypatch
):
    """The default layout (one local EnvRunner): the iteration's sync loads θ_{i+1} into the
    engine directly; RLlib's EnvRunnerGroup.sync_weights would first ray.put every weight
    for remote runners that do not exist."""
    import ray
    from ray.rllib.core import COMPONENT_RL_MODULE

    from rllib_k15.engine.fingerprint import pick_names

    algo = learning_config(peaked_tiny_model_dir, autocast_bf16=False, lr=1e-3).build_algo()
    try:
        engine = algo.env_runner.engine
        names = pick_names(list(algo.local_learner.hf_state_dict()))
        before = engine.weight_fingerprints(names)
        loads = _record_calls(monkeypatch, engine, "load_weights")
        puts = _record_calls(monkeypatch, ray, "put")
        algo.train()
        assert [len(state_dict) for state_dict in loads] == [
            len(algo.local_learner.hf_state_dict())
        ]  # one sync, every tensor
        assert not [v for v in puts if isinstance(v, dict) and COMPONENT_RL_MODULE in v]
        assert engine.weight_fingerprints(names) != before  # the engine holds the update
    finally:
        algo.stop()


def _record_calls(monkeypatch, owner, name: str) -> list:
    """Wrap ``owner.name`` so every call still happens and its first argument is kept."""
    real, seen = getattr(owner, name), []

    def recording(first, *args, **kwargs):
        seen.append(first)
        return real(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return seen
