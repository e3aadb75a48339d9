"""The reasoning-gym envs' shared keyword options (``RGymOptions``): one definition, and
every env's signature, defaults and argument errors as if each listed them itself."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from k15_envs.envs.rgym_envs import (
    COUNTDOWN_INSTRUCTION,
    CountdownEnv,
    GSMSymbolicEnv,
    ReasoningGymEnv,
    RGymOptions,
)

ENVS = (GSMSymbolicEnv, CountdownEnv, ReasoningGymEnv)
OPTIONS = [field.name for field in dataclasses.fields(RGymOptions)]


@pytest.mark.parametrize("env_cls", ENVS)
def test_signature_lists_every_option_keyword_only(env_cls):
    params = inspect.signature(env_cls).parameters
    assert list(params)[-len(OPTIONS) :] == OPTIONS
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in OPTIONS)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    instruction = COUNTDOWN_INSTRUCTION if env_cls is CountdownEnv else RGymOptions.instruction
    assert params["instruction"].default == instruction
    assert params["size"].default == 1000 and params["timeout_s"].default == 10.0


@pytest.mark.parametrize("env_cls", ENVS)
def test_argument_errors_name_the_env(env_cls):
    name = env_cls.__name__
    with pytest.raises(TypeError, match=rf"^{name}\.__init__\(\) got an unexpected keyword"):
        env_cls(ascii_operators=True)
    with pytest.raises(TypeError, match=rf"^{name}\.__init__\(\) takes from 1 to 2 positional"):
        env_cls(1, 2)
    with pytest.raises(ValueError, match=r"^size \(0\) must be >= 1$"):
        env_cls(size=0)


def test_options_reach_the_env_and_its_verifier():
    env = CountdownEnv(2, size=5, seed=3, timeout_s=4, num_workers=1, partial_credit=True)
    try:
        assert (env.levels, env.size, env.seed, env.instruction) == (
            (2,),
            5,
            3,
            COUNTDOWN_INSTRUCTION,
        )
        verifier = env.verifier
        assert (verifier.timeout_s, verifier.num_workers, verifier.partial_credit) == (4.0, 1, True)
        assert verifier.ascii_operators is True
        assert GSMSymbolicEnv(size=2).verifier.ascii_operators is False
    finally:
        env.close()
