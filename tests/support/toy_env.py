"""A toy reasoning env for learning tests of the training loop on a tiny random model.

A random model cannot do arithmetic, so "learning" is checked on a task it solves by chance
about a third of the time: the response is correct when its first non-space character is a
lowercase letter n–z. Use it with a *peaked* tiny model (tests/algorithm/conftest.py) whose
next-token distribution is concentrated on a few tokens, as a real LM's is; on the
near-uniform random model over a 49k vocabulary, raising the mass of any token set takes
hundreds of steps. The env implements the k15_envs.ReasoningEnv contract (problem /
verify_batch) so the real EnvRunner, engine and learner run unchanged.

Importing this module registers ``ENV_ID`` with gymnasium (in this process). Ray actors
(remote EnvRunners, Tune trials) cannot import ``support``: a test that starts them ships
the env by value, ``cloudpickle.register_pickle_by_value(toy_env)`` and
``register_env(ENV_ID, make_first_letter_env)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
from gymnasium import spaces

ENV_ID = "k15test/FirstLetter-v0"


@dataclass(frozen=True)
class ToyProblem:
    id: str
    prompt: str
    answer: str
    difficulty: float
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ToyVerdict:
    reward: float
    correct: bool
    extracted_answer: str | None
    reason: str


class FirstLetterEnv(gym.Env):
    def __init__(self, size: int = 32):
        self.size = size
        self.observation_space = spaces.Text(max_length=256)
        self.action_space = spaces.Text(max_length=4096)

    def __len__(self) -> int:
        return self.size

    def problem(self, index: int) -> ToyProblem:
        return ToyProblem(f"toy/{index}", f"Say a word number {index}.", "a", float(index % 2))

    def verify(self, problem, response: str, *, truncated: bool = False) -> ToyVerdict:
        text = response.strip()
        ok = bool(text) and "n" <= text[0] <= "z"
        return ToyVerdict(float(ok), ok, text[:1] or None, "correct" if ok else "wrong")

    def verify_batch(self, problems, responses, truncated=None):
        return [self.verify(p, r) for p, r in zip(problems, responses)]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.problem(0).prompt, {}

    def step(self, action):
        verdict = self.verify(self.problem(0), action)
        return "", verdict.reward, True, False, {"correct": verdict.correct}


class FirstLetterImageEnv(FirstLetterEnv):
    """The same task with each problem's number drawn as an image (``metadata["image"]``, as
    the k15 image envs carry it): the trainer must take the VLM route."""

    def problem(self, index: int) -> ToyProblem:
        from k15_envs.render import RenderStyle, png_bytes, render_text

        image = render_text(f"word {index}", RenderStyle(width=64, height=64, margin=8), index)
        return ToyProblem(
            f"toy-image/{index}", "Say a word about the image.", "a", float(index % 2),
            {"image": png_bytes(image)},
        )  # fmt: skip


IMAGE_ENV_ID = "k15test/FirstLetterImage-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=FirstLetterEnv)
if IMAGE_ENV_ID not in gym.registry:
    gym.register(IMAGE_ENV_ID, entry_point=FirstLetterImageEnv)


def make_first_letter_env(env_config: dict) -> FirstLetterEnv:
    """Env creator for ``ray.tune.register_env`` (remote EnvRunners)."""
    return FirstLetterEnv(**env_config)


def write_toy_experiment(
    path, model_dir, *, iterations: int, env_id: str = ENV_ID, **training
) -> str:
    """An experiment YAML (as users write them) that trains on this env with the HF engine."""
    import json

    fields = {
        "hf_model": str(model_dir),
        "engine": "hf",
        "engine_options": {"dtype": "float32"},
        "samples_per_problem": 4,
        "problems_per_iteration": 4,
        "max_response_tokens": 1,
        "minibatch_size": 16,
        "lr": 3.0e-5,
        **training,
    }
    lines = [
        "algo: K15MirrorDescent",
        f"environment: {{env: {env_id}, env_config: {{size: 16}}}}",
        "training:",
        *(f"  {key}: {json.dumps(value)}" for key, value in fields.items()),
        "debugging: {seed: 0}",
        f"stop: {{training_iteration: {iterations}}}",
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)
