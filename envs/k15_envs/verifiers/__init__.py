"""Verifiers: the trust boundary between model output and reward.

=================  ==========================  ==========================================
kind               class                       where it runs
=================  ==========================  ==========================================
``numeric``        :class:`NumericVerifier`    in process (exact numbers; Arithmetic)
``choice``         :class:`ChoiceVerifier`     in process (option letters)
``math``           :class:`MathVerifier`       math-verify in sandboxed worker processes
``reasoning_gym``  :class:`ReasoningGymVerifier` dataset scorer in sandboxed workers
``code``           :class:`CodeVerifier`       one sandboxed process per response
``judge``          :class:`JudgeVerifier`      a judge model over HTTP or in process
=================  ==========================  ==========================================

Importing this package registers all of them; build one with :func:`make_verifier`.
"""

from k15_envs.verifiers.base import (
    PooledVerifier,
    Verifier,
    VerifierKind,
    make_verifier,
    register_verifier,
    verifier_kinds,
)
from k15_envs.verifiers.choice import ChoiceVerifier
from k15_envs.verifiers.code import CodeVerifier
from k15_envs.verifiers.judge import JudgeVerifier
from k15_envs.verifiers.math import MathVerifier
from k15_envs.verifiers.numeric import NumericVerifier
from k15_envs.verifiers.rgym import ReasoningGymVerifier

__all__ = [
    "Verifier",
    "PooledVerifier",
    "VerifierKind",
    "make_verifier",
    "register_verifier",
    "verifier_kinds",
    "NumericVerifier",
    "ChoiceVerifier",
    "MathVerifier",
    "ReasoningGymVerifier",
    "CodeVerifier",
    "JudgeVerifier",
]
