"""A weight sync that silently loads nothing stops the run (rllib_k15.engine.fingerprint)."""

import pytest
import toy_env  # noqa: F401  (registers k15test/FirstLetter-v0)

from rllib_k15 import K15Config
from rllib_k15.engine.fingerprint import WeightSyncError


def test_a_sync_that_loads_nothing_stops_the_run(peaked_tiny_model_dir):
    algo = (
        K15Config()
        .environment(toy_env.ENV_ID, env_config={"size": 64})
        .training(hf_model=str(peaked_tiny_model_dir), engine="hf",
                  engine_options={"dtype": "float32"}, autocast_bf16=False,
                  samples_per_problem=8, problems_per_iteration=8, max_response_tokens=1,
                  minibatch_size=16, micro_batch_size=32, lr=1e-3)
        .debugging(seed=0)
        .build_algo()
    )  # fmt: skip
    try:
        algo.env_runner.engine.load_weights = lambda state_dict: None  # a silent no-op loader
        with pytest.raises(WeightSyncError, match="does not hold the weights it was sent"):
            algo.train()
    finally:
        algo.stop()
