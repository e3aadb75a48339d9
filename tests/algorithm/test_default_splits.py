"""The trainer trains on `split: train` and evaluates on `split: test` unless told otherwise."""

from __future__ import annotations

import pytest
from k15_envs.splits import SplitError
from support import toy_env

from rllib_k15 import K15Config
from rllib_k15.algorithm.default_splits import env_parameters, eval_split_kwargs, resolve_splits
from rllib_k15.env_factory import make_unwrapped_env


def _keys(env_id: str, env_config: dict) -> set[str]:
    env = make_unwrapped_env(env_id, env_config)
    try:
        return {f"{env.problem(i).prompt}" for i in range(len(env))}
    finally:
        env.close()


def _config(env_config: dict, **training) -> K15Config:
    return (
        K15Config()
        .environment("k15/Arithmetic-v0", env_config=env_config)
        .training(
            **{"hf_model": "tiny-random-llama", "eval_interval": 2, "eval_problems": 16, **training}
        )
    )


def test_default_splits_make_training_and_held_out_problems_disjoint():
    config = _config({"difficulty": 2, "size": 200, "seed": 0})
    assert config.resolve_splits() == []
    assert config.env_config == {"difficulty": 2, "size": 200, "seed": 0, "split": "train"}
    assert config.eval_env_config == {"split": "test", "size": 16}
    train = _keys(config.env, config.env_config)
    held_out = _keys(config.env, {**config.env_config, **config.eval_env_config})
    assert len(train) == 200 and len(held_out) == 16
    assert not train & held_out
    # another env seed on both sides changes which problems, never the disjointness
    other = _keys(config.env, {**config.env_config, "seed": 7, "split": "test", "size": 16})
    assert not train & other


def test_validate_fills_in_the_splits_and_is_idempotent():
    config = _config({"difficulty": 2, "size": 50})
    config.validate()
    assert config.env_config["split"] == "train"
    assert config.eval_env_config["split"] == "test"
    before = (dict(config.env_config), dict(config.eval_env_config))
    assert config.resolve_splits() == []
    assert (config.env_config, config.eval_env_config) == before


def test_a_default_split_short_of_size_is_cut_with_a_note():
    config = _config({"difficulty": 1, "size": 2000}, eval_problems=32)
    notes = config.resolve_splits()
    train_size, test_size = config.env_config["size"], config.eval_env_config["size"]
    assert 80 < train_size < 100 and 0 < test_size < 20  # level 1: 100 distinct problems
    assert f"has only {train_size} distinct problems, fewer than size=2000" in notes[0]
    assert f"has only {test_size} distinct problems, fewer than size=32" in notes[1]
    assert "too few for a held-out claim" in notes[2]
    assert not _keys(config.env, config.env_config) & _keys(
        config.env, {**config.env_config, **config.eval_env_config}
    )


def test_an_explicit_split_wins_and_still_fails_loudly_when_too_small():
    config = _config({"difficulty": 1, "size": 2000, "split": "train"})
    notes = config.resolve_splits()  # the training side is the user's: left alone
    assert config.env_config["size"] == 2000 and all(n.startswith("eval_env_config") for n in notes)
    with pytest.raises(SplitError, match="only .* distinct problems"):
        make_unwrapped_env(config.env, config.env_config)

    unsplit = _config({"difficulty": 2, "split": None})
    notes = unsplit.resolve_splits()
    assert unsplit.eval_env_config["split"] is None
    assert "may be training ones" in notes[0]

    custom = _config({"difficulty": 2}, eval_env_config={"split": "train", "size": 8})
    custom.resolve_splits()
    assert custom.eval_env_config == {"split": "train", "size": 8}


def test_use_splits_false_leaves_the_configs_alone():
    config = _config({"difficulty": 1, "size": 2000}, use_splits=False)
    config.validate()
    assert config.env_config == {"difficulty": 1, "size": 2000}
    assert config.eval_env_config == {}


def test_envs_without_a_split_argument_are_left_alone():
    assert env_parameters(toy_env.ENV_ID) == {"size"}  # a gym-registered class, no split
    resolved = resolve_splits(toy_env.ENV_ID, {"size": 16}, {}, eval_problems=8, evaluates=True)
    assert (resolved.env_config, resolved.eval_env_config, resolved.notes) == ({"size": 16}, {}, [])


def test_file_envs_get_the_split_but_no_size():
    params = env_parameters("k15/Math-v0")
    assert "split" in params and "size" not in params
    resolved = resolve_splits("k15/Math-v0", {}, {}, eval_problems=8, evaluates=False)
    assert resolved.env_config == {"split": "train"}
    assert resolved.eval_env_config == {"split": "test"}


def test_k15_eval_defaults_to_the_test_split():
    kwargs, notes = eval_split_kwargs("k15/Arithmetic-v0", {"difficulty": 2}, "test", 16)
    assert kwargs == {"difficulty": 2, "split": "test", "size": 16} and notes == []
    kwargs, notes = eval_split_kwargs("k15/Arithmetic-v0", {"difficulty": 1}, "test", 64)
    assert 0 < kwargs["size"] < 20 and "distinct problems" in notes[0]
    kwargs, _ = eval_split_kwargs("k15/Arithmetic-v0", {"split": "train"}, "test", 16)
    assert kwargs == {"split": "train", "size": 16}  # the user's split wins, sized
    # a split set by the user is sized too: the env's default size (1000) exceeds this one
    kwargs, notes = eval_split_kwargs(
        "k15/Arithmetic-v0", {"difficulty": "1-2", "split": "test"}, "test", 64
    )
    assert kwargs == {"difficulty": "1-2", "split": "test", "size": 64} and notes == []
    kwargs, _ = eval_split_kwargs("k15/Arithmetic-v0", {"difficulty": 2}, None, 16)
    assert kwargs == {"difficulty": 2, "split": None}
