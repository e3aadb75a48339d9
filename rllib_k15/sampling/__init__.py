"""Which problems each training iteration sees (docs/design.md §2, first box; report §2.3.4).

- :class:`ProblemBuffer`: per-problem statistics, sampling, unfinished partial rollouts,
  checkpointable state;
- strategies ``uniform`` / ``curriculum`` / ``prioritized`` in a registry keyed by
  :class:`SamplingStrategy`, parameterised by :class:`SamplingConfig`;
- difficulty files (pass rates from a model-based assessment).

Pure Python/numpy; importable without Ray, vLLM or torch.
"""

from rllib_k15.sampling.difficulty import (
    DifficultyFileError,
    load_difficulty_file,
    write_difficulty_file,
)
from rllib_k15.sampling.problem_buffer import ProblemBuffer
from rllib_k15.sampling.strategies import (
    STRATEGIES,
    ProblemStats,
    SamplingConfig,
    SamplingStrategy,
    StrategyRegistry,
    draw_without_replacement,
    register_strategy,
    sampling_weights,
)

__all__ = [
    "STRATEGIES",
    "DifficultyFileError",
    "ProblemBuffer",
    "ProblemStats",
    "SamplingConfig",
    "SamplingStrategy",
    "StrategyRegistry",
    "draw_without_replacement",
    "load_difficulty_file",
    "register_strategy",
    "sampling_weights",
    "write_difficulty_file",
]
