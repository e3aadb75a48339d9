"""Two runs with the same seed produce identical metrics and weights (documented conditions:
HF engine in fp32, same torch thread count, any ``num_epochs``; see
docs/operating_long_runs.md). A different seed changes the run, so the match is not vacuous.
Cross-process equality (fresh processes, a killed and resumed run) is asserted in
test_crash_resume.py."""

from __future__ import annotations

import torch
from support.toy_training import exact_toy_config, policy_weights

ITERATIONS = 3
LEARNER_KEYS = ("total_loss", "policy_loss", "kl_ref", "grad_norm")


def _is_timing(name: str) -> bool:
    return name.endswith(("_seconds", "_per_s", "_s"))


def _run(model_dir, seed: int):
    algo = exact_toy_config(model_dir, sampling={"strategy": "prioritized"}).debugging(seed=seed)
    algo = algo.build_algo()
    try:
        results = [algo.train() for _ in range(ITERATIONS)]
        problems = algo.problem_buffer.get_state()
        weights = policy_weights(algo)
    finally:
        algo.stop()
    summary = [
        {
            "k15": {k: v for k, v in r["k15"].items() if not _is_timing(k)},
            "learner": {k: r["learners"]["default_policy"].get(k) for k in LEARNER_KEYS},
        }
        for r in results
    ]
    return summary, problems, weights


def test_same_seed_same_run(tiny_model_dir, ray_address):
    first, second = _run(tiny_model_dir, 0), _run(tiny_model_dir, 0)
    assert first[0] == second[0]  # every reward/length/loss statistic, bit for bit
    assert first[1] == second[1]  # problem buffer: statistics and sampler state
    assert all(torch.equal(first[2][k], second[2][k]) for k in first[2])

    other = _run(tiny_model_dir, 1)
    assert other[1]["last_seen_iteration"] != first[1]["last_seen_iteration"]


def test_the_per_epoch_shuffle_is_part_of_the_run_not_of_the_process(tiny_model_dir, ray_address):
    """num_epochs > 1 shuffles minibatches with numpy's global generator; two runs in one
    process (the second starting from whatever state the first left) and a run resumed from a
    checkpoint must still shuffle alike."""
    import numpy as np

    def run(iterations, restore=None, save=None):
        config = exact_toy_config(tiny_model_dir, num_epochs=2, minibatch_size=8)
        algo = config.build_algo()
        try:
            if restore:
                algo.restore_from_path(restore)
            np.random.seed(len(str(restore)))  # disturb the global generator on purpose
            for _ in range(iterations):
                algo.train()
            if save:
                algo.save_to_path(save)
            learner = algo.local_learner
            return {k: v.clone() for k, v in learner.hf_state_dict().items()}
        finally:
            algo.stop()

    straight = run(2)
    again = run(2)
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    import tempfile

    with tempfile.TemporaryDirectory() as ckpt:
        run(1, save=ckpt)
        resumed = run(1, restore=ckpt)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
