"""O1-Pruner reference statistics: L̂_ref(x) and Â_ref(x) from K samples of π_ref per problem.

The file format and lookup the learner reads; collecting it is
:func:`rllib_k15.long2short.collect.collect_reference_stats`.

O1-Pruner's reward R = L̂_ref(x)/L(y) − 1 + λ(A(x,y) − Â_ref(x)) compares each response
with the *reference* (initial) model on the same problem. Design choice: the statistics
are computed ONCE, before training, into a JSON file, and the learner reads them
(``K15Config().training(loss="o1_pruner", o1_pruner_reference_stats=PATH)``):

* it is what the paper does (sample π_ref K times per problem up front);
* it stays honest across iterations: sampling "the first time a problem is seen" inside
  the training loop would use the *current* policy's engine for problems first drawn after
  iteration 0, which is no longer π_ref;
* the file is reused across runs and seeds of the same start checkpoint.

Build it with the rollout engine of the start model (same prompt format, temperature and
max tokens as training)::

    from rllib_k15.engine import make_engine
    from rllib_k15.long2short.collect import collect_reference_stats
    engine = make_engine("vllm", model_dir, seed=0)
    stats = collect_reference_stats(engine, "k15/Arithmetic-v0", {"difficulty": 1},
                                    samples=8, max_tokens=256)
    stats.save("runs/o1_reference.json")

Keys are problem indices of the env (``env.problem(i)``), the same ids the learner's batch
carries; the file records the env id, its config and K so a mismatch fails loudly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rllib_k15.core.rewards import reference_statistics

__all__ = ["ReferenceStats"]

FORMAT = "k15-o1-reference-stats/1"


@dataclass
class ReferenceStats:
    """Per-problem L̂_ref (mean response tokens) and Â_ref (mean accuracy) of π_ref."""

    env: str
    env_config: dict[str, Any]
    samples: int  # K
    model: str = ""
    mean_length: dict[int, float] = field(default_factory=dict)
    accuracy: dict[int, float] = field(default_factory=dict)

    def add(self, index: int, lengths: Sequence[int], correct: Sequence[bool]) -> None:
        self.mean_length[int(index)], self.accuracy[int(index)] = reference_statistics(
            lengths, correct
        )

    def lookup(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L̂_ref, Â_ref) for each problem index; an unknown index is an error."""
        indices = np.asarray(indices).astype(np.int64).reshape(-1)
        missing = sorted({int(i) for i in indices if int(i) not in self.mean_length})
        if missing:
            raise ValueError(
                f"`o1_pruner_reference_stats` has no statistics for problem indices "
                f"{missing[:10]}{' …' if len(missing) > 10 else ''} ({len(self.mean_length)} "
                f"problems in the file); collect them for every problem the run can sample"
            )
        return (
            np.array([self.mean_length[int(i)] for i in indices], dtype=np.float64),
            np.array([self.accuracy[int(i)] for i in indices], dtype=np.float64),
        )

    def check_env(self, env: str, env_config: dict[str, Any]) -> None:
        """Fail when the file was collected on another env or env config."""
        if env != self.env or dict(env_config or {}) != self.env_config:
            raise ValueError(
                f"`o1_pruner_reference_stats` was collected on env {self.env!r} with "
                f"env_config {self.env_config}, but training uses {env!r} with {env_config} "
                "(training fills in `split: train` unless `use_splits: false`; collect with "
                "the same env kwargs, split included)"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        problems = {
            str(i): {"mean_length": self.mean_length[i], "accuracy": self.accuracy[i]}
            for i in sorted(self.mean_length)
        }
        doc = {
            "format": FORMAT,
            "env": self.env,
            "env_config": self.env_config,
            "samples": self.samples,
            "model": self.model,
            "problems": problems,
        }
        path.write_text(json.dumps(doc, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceStats:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"`o1_pruner_reference_stats` ({str(path)!r}): {err}") from None
        if doc.get("format") != FORMAT:
            raise ValueError(
                f"`o1_pruner_reference_stats` ({str(path)!r}) is not a {FORMAT} file "
                f"(format: {doc.get('format')!r})"
            )
        stats = cls(doc["env"], doc["env_config"], int(doc["samples"]), doc.get("model", ""))
        for key, row in doc["problems"].items():
            stats.mean_length[int(key)] = float(row["mean_length"])
            stats.accuracy[int(key)] = float(row["accuracy"])
        return stats
