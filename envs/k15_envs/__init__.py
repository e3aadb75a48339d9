"""k15_envs: Gymnasium text environments for RL from verifiable rewards.

``import k15_envs`` registers the ``k15/*`` envs (Math, Arithmetic, GSMSymbolic, Countdown,
ReasoningGym, Code, HumanEval, MultipleChoice, and the image envs Rendered,
RenderedArithmetic, RenderedMath, ImageQA); it imports neither ray, torch nor vllm,
and loads heavy graders (math-verify, reasoning-gym) only when an env needs them::

    import gymnasium as gym, k15_envs
    env = gym.make("k15/Arithmetic-v0", difficulty=[1, 2])
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("3 + 5 = 8, so \\\\boxed{8}")

Every env's ``unwrapped`` is a :class:`ReasoningEnv` with the batch API RL trainers need
(``len``, ``problem(i)``, ``verify``, ``verify_batch``, ``close``). See README.md.
"""

from k15_envs.base import ReasoningEnv
from k15_envs.datasets import DatasetError
from k15_envs.extract import ExtractMode, extract_answer
from k15_envs.registration import ENTRY_POINTS, EnvId, register_envs
from k15_envs.sandbox import SandboxConfig
from k15_envs.splits import SplitError
from k15_envs.types import Problem, Reason, Verdict
from k15_envs.verifiers import Verifier, VerifierKind, make_verifier

__version__ = "0.1.0"
__all__ = [
    "ReasoningEnv",
    "Problem",
    "Verdict",
    "Reason",
    "DatasetError",
    "SplitError",
    "ExtractMode",
    "extract_answer",
    "SandboxConfig",
    "Verifier",
    "VerifierKind",
    "make_verifier",
    "EnvId",
    "ENTRY_POINTS",
    "register_envs",
]

register_envs()
