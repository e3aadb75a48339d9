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
