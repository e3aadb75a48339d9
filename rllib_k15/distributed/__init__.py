"""Scaling out: DeepSpeed ZeRO learners inside RLlib, and Ray Train for the offline trainers.

- :mod:`.deepspeed_config` — the ONE builder of DeepSpeed configs (pure; no deepspeed import).
- :mod:`.deepspeed_module` — the RLModule wrapper holding a DeepSpeed engine, ZeRO-3 gathers.
- :mod:`.deepspeed_learner` — ``K15DeepSpeedLearner``, chosen by ``training(deepspeed={...})``.
- :mod:`.offline` — SFT/DPO on ``ray.train.torch.TorchTrainer`` with the same builder.

See docs/scaling.md for going from this CPU box to GPUs and several nodes.
"""

from rllib_k15.distributed.deepspeed_config import (
    DeepSpeedSettings,
    build_deepspeed_config,
    dist_backend,
)

__all__ = ["DeepSpeedSettings", "build_deepspeed_config", "dist_backend"]
