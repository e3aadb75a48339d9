"""A toy env (support/toy_env.py) whose scoring can be made to block, for fault tests.

``HoldingEnv(hold_dir=D)``: when the file ``D/arm`` exists (its text: the 1-based number of
the ``verify_batch`` call of this process to stop in; empty = the next one), that call takes
it (atomic rename, so exactly one process does), writes ``D/held-<pid>`` and blocks until
its process is killed. The test then knows the process id of the EnvRunner
that is in the middle of sampling, and kills it there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from support import toy_env

ENV_ID = "k15test/HoldingFirstLetter-v0"


class HoldingEnv(toy_env.FirstLetterEnv):
    def __init__(self, size: int = 16, hold_dir: str | None = None):
        super().__init__(size=size)
        self.hold_dir = Path(hold_dir) if hold_dir else None
        self.calls = 0

    def verify_batch(self, problems, responses, truncated=None):
        self.calls += 1
        if self.hold_dir is not None and self._armed_for_this_call():
            try:
                os.rename(self.hold_dir / "arm", self.hold_dir / f"taken-{os.getpid()}")
            except FileNotFoundError:
                pass
            else:
                (self.hold_dir / f"held-{os.getpid()}").write_text("holding")
                while True:  # until SIGKILL
                    time.sleep(1)
        return super().verify_batch(problems, responses, truncated)

    def _armed_for_this_call(self) -> bool:
        try:
            text = (self.hold_dir / "arm").read_text().strip()
        except FileNotFoundError:
            return False
        return not text or int(text) == self.calls


def make_holding_env(env_config: dict) -> HoldingEnv:
    """Env creator for ``ray.tune.register_env`` (remote EnvRunners)."""
    return HoldingEnv(**env_config)
