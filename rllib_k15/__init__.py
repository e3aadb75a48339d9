"""rllib-k15: Kimi k1.5-style RL from verifiable rewards for language models, on Ray RLlib.

``import rllib_k15`` is light (no ray/vllm/torch import); the RLlib classes load on first use:

    from rllib_k15 import K15Config, K15MirrorDescent
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["K15Config", "K15MirrorDescent", "__version__"]

_LAZY = {
    "K15Config": "rllib_k15.algorithm.config",
    "K15MirrorDescent": "rllib_k15.algorithm.algorithm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rllib_k15' has no attribute {name!r}")
