"""Child-process entry for the crash tests: ``k15 train`` on the toy env, with a hold point.

    python -m support.train_harness train --config EXP --out RUN ...  # argv of `k15 ...`
    python -m support.train_harness rllib train -f EXP ...            # argv of `rllib ...`

with ``tests/`` on ``PYTHONPATH`` (``support.runs`` starts it so: ``run_k15``, ``start_k15``).

``K15_TEST_HOLD=phase:N`` (phase ``generate`` | ``learn``) makes the process stop at a
deterministic point of iteration N (1-based, the ``iteration`` of its metrics row): inside
the engine's ``generate`` or inside ``LearnerGroup.update``. There it writes
``K15_TEST_HOLD_FILE`` and sleeps, so the test can SIGKILL it exactly there. These patches
live only in this test process; the product code has no test hooks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from support import toy_env  # registers the toy env id

_current = {"iteration": 0}


def _hold_if(phase: str, iteration: int) -> None:
    want = os.environ.get("K15_TEST_HOLD", "")
    if want != f"{phase}:{iteration}":
        return
    Path(os.environ["K15_TEST_HOLD_FILE"]).write_text(f"{phase}:{iteration} pid={os.getpid()}")
    while True:  # wait here for SIGKILL
        time.sleep(1)


def _install_hooks() -> None:
    from ray.rllib.core.learner.learner_group import LearnerGroup

    from rllib_k15.algorithm.algorithm import K15MirrorDescent
    from rllib_k15.engine.hf_engine import HFEngine

    training_step = K15MirrorDescent.training_step
    generate = HFEngine.generate
    update = LearnerGroup.update

    def step_hook(self):
        _current["iteration"] = self.training_iteration + 1
        return training_step(self)

    def generate_hook(self, *args, **kwargs):
        _hold_if("generate", _current["iteration"])
        return generate(self, *args, **kwargs)

    def update_hook(self, *args, **kwargs):
        _hold_if("learn", _current["iteration"])
        return update(self, *args, **kwargs)

    K15MirrorDescent.training_step = step_hook
    HFEngine.generate = generate_hook
    LearnerGroup.update = update_hook


def _rllib_main(argv: list[str]) -> int:
    """``rllib <argv>`` with the test envs shipped to Tune's trial actors."""
    from ray import cloudpickle
    from ray.tune.registry import register_env

    from rllib_k15.commands.rllib import main
    from support import faulty_env

    for module in (toy_env, faulty_env):
        cloudpickle.register_pickle_by_value(module)
    register_env(toy_env.ENV_ID, toy_env.make_first_letter_env)
    register_env(faulty_env.ENV_ID, faulty_env.make_holding_env)
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "rllib":
        sys.exit(_rllib_main(sys.argv[2:]))
    _install_hooks()
    from rllib_k15.commands.k15 import main

    sys.exit(main(sys.argv[1:]))
