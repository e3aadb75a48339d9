"""Worker side of the reasoning-gym verifier: calls the dataset's own ``score_answer``.

Runs only inside a sandboxed grading worker: some scorers evaluate the answer text with
sympy's ``parse_expr`` (which uses ``eval``), so untrusted answers must never reach them
in the trainer's process.

The scorer runs on the *same* dataset the problem came from: the parent sends the
generator's config object itself (seed and size included; requests to a worker are
pickles, so enum fields such as ``word_sorting``'s ``TextTransformation`` and tuple fields
arrive intact) and the generated entry, objects in its metadata included. A JSON string
config (``"{}"`` = the dataset's defaults) is still accepted.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import reasoning_gym
import reasoning_gym.factory as factory

__all__ = ["score", "build_dataset"]

_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, bytes], Any] = OrderedDict()
_cache_lock = threading.Lock()


@lru_cache(maxsize=_CACHE_SIZE)
def _dataset_from_json(name: str, config_json: str):
    return reasoning_gym.create_dataset(name, **json.loads(config_json))


def build_dataset(name: str, config: Any):
    """The dataset ``name`` built from ``config`` (its config dataclass instance), validated."""
    if name not in factory.DATASETS:
        raise ValueError(f"reasoning-gym dataset {name!r} is not registered")
    dataset_cls, config_cls = factory.DATASETS[name]
    if not isinstance(config, config_cls):
        raise TypeError(
            f"{name}: config is a {type(config).__name__}, expected {config_cls.__name__}"
        )
    if hasattr(config, "validate"):
        config.validate()
    return dataset_cls(config=config)


def _dataset(name: str, config: Any):
    if isinstance(config, str):
        return _dataset_from_json(name, config)
    key = (name, pickle.dumps(config))
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    dataset = build_dataset(name, config)
    with _cache_lock:
        _cache[key] = dataset
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return dataset


def score(name: str, config: Any, answer: str | None, entry: dict[str, Any]) -> float:
    """The dataset's score for ``answer`` on ``entry`` (a float; the parent clips it).

    ``config`` is the dataset's config object (or a JSON string of constructor kwargs).
    Exceptions propagate: the worker reports them and the parent grades them as
    ``grading_error``, never as a wrong answer.
    """
    return float(_dataset(name, config).score_answer(answer, entry))
