"""The baseline losses selected by config, through the real learner and K15MirrorDescent.

Tiny random Llama (peaked, see conftest.py) on the toy env (support/toy_env.py), HF engine.
The learner-level tests check exact numerics in fp32 (support/learner_harness pins it) and
are marked ``precision``; the algorithm tests check that training happens and keep "auto"
precision.
"""

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from support import toy_env
from support.learner_harness import build_learner, random_columns, update
from support.toy_training import learning_config, policy_weights

from rllib_k15 import K15Config
from rllib_k15.algorithm.columns import INIT_LOGP, REF_LOGP, RESPONSE_MASK
from rllib_k15.algorithm.o1_reference import ReferenceStats
from rllib_k15.long2short.collect import collect_reference_stats
from rllib_k15.runs.experiment import apply_sections


@pytest.fixture
def o1_stats_file(tmp_path):
    """Reference stats for every problem of the toy env as the learner tests build it."""
    stats = ReferenceStats(toy_env.ENV_ID, {}, samples=4)
    for i in range(32):
        stats.add(i, [4, 6, 5, 5], [1, 0, 0, 1])
    return str(stats.save(tmp_path / "o1.json"))


@pytest.mark.parametrize(
    "training",
    [
        {"loss": "grpo", "grpo_kl_beta": 0.1},
        {"loss": "rest", "rest_top_k": 0},
        {"loss": "o1_pruner", "logprob_reduction": "token_mean"},
    ],
    ids=["grpo", "rest", "o1_pruner"],
)
@pytest.mark.precision
def test_micro_batching_does_not_change_the_gradient(tiny_model_dir, o1_stats_file, training):
    """Every baseline loss is a row mean, so 3+3+2 accumulated rows = the 8-row batch."""
    if training["loss"] == "o1_pruner":
        training = {**training, "o1_pruner_reference_stats": o1_stats_file}
    cols = random_columns()
    grads = []
    for micro in (8, 3):
        learner = build_learner(tiny_model_dir, micro_batch_size=micro, grad_clip=None, **training)
        learner.apply_gradients = lambda g: grads.append([v.clone() for v in g.values()])
        update(learner, cols)
    assert len(grads[0]) == len(grads[1]) > 0
    assert sum(g.norm() for g in grads[0]) > 0
    for whole, accumulated in zip(*grads):
        assert (whole - accumulated).norm() <= 1e-5 * whole.norm() + 1e-9


@pytest.mark.precision
def test_grpo_keeps_a_frozen_initial_model_for_its_kl(tiny_model_dir):
    learner = build_learner(tiny_model_dir, loss="grpo", grpo_kl_beta=0.1)
    assert build_learner(tiny_model_dir, loss="grpo", grpo_kl_beta=0.0)._initial_module is None
    assert build_learner(tiny_model_dir, loss="opmd")._initial_module is None
    cols = random_columns()
    init_before = learner.compute_reference_logprobs(cols, learner._initial_module)
    # before any update π_θ is the initial model: same scores as the policy's own
    np.testing.assert_allclose(init_before, learner.compute_reference_logprobs(cols), atol=1e-5)
    first = update(learner, cols)
    second = update(learner, cols)
    kl = [float(r[DEFAULT_MODULE_ID]["kl_init"]) for r in (first, second)]
    assert kl[0] == pytest.approx(0.0, abs=1e-5) and kl[1] > 1e-4, kl
    # the initial model did not train; the policy did
    init_after = learner.compute_reference_logprobs(cols, learner._initial_module)
    np.testing.assert_array_equal(init_before, init_after)
    assert not np.allclose(learner.compute_reference_logprobs(cols), init_after, atol=1e-4)
    assert float(first["grpo_zero_std_frac"]) == 0.0  # every toy group has r = [0, 1, 0, 1]
    assert float(first["grpo_adv_abs_mean"]) == pytest.approx(0.5 / (np.sqrt(1 / 3) + 1e-4))


@pytest.mark.precision
def test_update_adds_init_logp_only_when_needed(tiny_model_dir):
    seen = {}
    for beta in (0.0, 0.1):
        learner = build_learner(tiny_model_dir, loss="grpo", grpo_kl_beta=beta)
        original = learner.compute_loss_for_module

        def spy(beta=beta, original=original, **kwargs):
            seen[beta] = {k: v.clone() for k, v in kwargs["batch"].items()}
            return original(**kwargs)

        learner.compute_loss_for_module = spy
        update(learner, random_columns())
    assert INIT_LOGP not in seen[0.0] and INIT_LOGP in seen[0.1]
    mask = seen[0.1][RESPONSE_MASK].bool()
    assert torch.all(seen[0.1][INIT_LOGP][~mask] == 0)
    assert torch.all(seen[0.1][INIT_LOGP][mask] < 0)
    # nothing trained yet: the initial model's scores are the policy's own
    torch.testing.assert_close(seen[0.1][INIT_LOGP], seen[0.1][REF_LOGP], atol=1e-5, rtol=0)


def test_o1_pruner_rejects_a_stats_file_of_another_env(tiny_model_dir, tmp_path):
    path = ReferenceStats("k15/Other-v0", {}, 4).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match="collected on env 'k15/Other-v0'"):
        build_learner(tiny_model_dir, loss="o1_pruner", o1_pruner_reference_stats=str(path))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("clip_eps", 1.5, "`clip_eps` (1.5) must be a number in (0, 1)"),
        ("grpo_kl_beta", -0.1, "`grpo_kl_beta` (-0.1) must be a number >= 0"),
        ("rest_top_k", -2, "`rest_top_k` (-2) must be an integer >= 0"),
        ("o1_pruner_lambda", -1, "`o1_pruner_lambda` (-1) must be a number >= 0"),
        ("o1_pruner_reference_stats", "/no/file.json", "('/no/file.json') is not a file"),
        ("loss", "o1_pruner", "`o1_pruner_reference_stats` (None) must name"),
        ("loss", "ppo", "`loss` ('ppo') must be one of ['opmd', 'grpo', 'rest', 'o1_pruner']"),
    ],
)
def test_validate_quotes_bad_baseline_fields(tiny_model_dir, field, value, message):
    config = K15Config().environment(toy_env.ENV_ID).training(hf_model=str(tiny_model_dir))
    with pytest.raises(ValueError) as err:
        config.training(**{field: value}).validate()
    assert message in str(err.value)


# ----------------------------------------------------------------------------- algorithm
def _config(model_dir, **training):
    """``learning_config`` (4 optimizer steps per iteration: ratios move off 1), lr 3e-5."""
    return learning_config(model_dir, lr=3e-5, **training)


def _train(config, iterations=2):
    algo = config.build_algo()
    try:
        learner = algo.local_learner
        before = policy_weights(algo)
        results = [algo.train() for _ in range(iterations)]
        after = learner.hf_state_dict()
    finally:
        algo.stop()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    return results, len(changed) / len(before)


def test_grpo_trains_through_the_algorithm(peaked_tiny_model_dir):
    results, changed = _train(_config(peaked_tiny_model_dir, loss="grpo", grpo_kl_beta=0.04))
    learners = [r["learners"]["default_policy"] for r in results]
    assert changed == 1.0, "every parameter tensor should have moved"
    assert all(np.isfinite(lr["total_loss"]) for lr in learners)
    assert learners[0]["grad_norm"] > 0
    # iteration 1 starts at the initial weights; iteration 2 has moved away from them
    assert learners[1]["kl_init"] > 0 and np.isfinite(learners[1]["kl_init"])
    assert all(0 <= lr["clip_frac"] <= 1 for lr in learners)
    assert results[0]["learners"]["grpo_adv_abs_mean"] > 0


def test_rest_trains_through_the_algorithm(peaked_tiny_model_dir):
    results, changed = _train(_config(peaked_tiny_model_dir, loss="rest", rest_top_k=1))
    learners = [r["learners"]["default_policy"] for r in results]
    assert changed == 1.0
    # the reported loss is the last minibatch's: 0 when none of its rows was selected
    assert all(np.isfinite(lr["total_loss"]) and lr["total_loss"] >= 0 for lr in learners)
    fitted = [r["learners"]["rest_fitted_frac"] for r in results]
    # the peaked toy model solves about a third: most problems have a correct sample, and
    # top-1 fits one of 8 responses for each of them
    assert all(0 < f <= 1 / 8 for f in fitted), fitted


def test_o1_pruner_trains_with_collected_reference_stats(peaked_tiny_model_dir, tmp_path):
    from rllib_k15.engine import make_engine

    engine = make_engine("hf", str(peaked_tiny_model_dir), seed=0, dtype="float32")
    try:
        stats = collect_reference_stats(
            engine, toy_env.ENV_ID, {"size": 64}, samples=4, max_tokens=1
        )
    finally:
        engine.close()
    assert len(stats.mean_length) == 64 and set(stats.mean_length.values()) == {1.0}
    assert 0 < np.mean(list(stats.accuracy.values())) < 1
    path = stats.save(tmp_path / "o1.json")
    assert ReferenceStats.load(path).accuracy == stats.accuracy
    config = _config(
        peaked_tiny_model_dir,
        loss="o1_pruner",
        o1_pruner_reference_stats=str(path),
        logprob_reduction="token_mean",
    )
    results, changed = _train(config)
    assert changed == 1.0
    assert all(np.isfinite(r["learners"]["default_policy"]["total_loss"]) for r in results)
    # one-token responses: R = λ(A − Â_ref), so its mean tracks accuracy − reference accuracy
    r0 = results[0]
    assert r0["learners"]["o1_length_ratio_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "name,loss", [("grpo_arithmetic_smollm2", "grpo"), ("rest_arithmetic_smollm2", "rest")]
)
def test_tuned_examples_map_onto_the_builder(tiny_model_dir, name, loss):
    """The baseline examples are the tuned OPMD example with only the loss changed (the
    ablations compare arms at equal budgets)."""
    from pathlib import Path

    from rllib_k15.runs.experiment import load_experiment_file

    examples = Path(__file__).parents[2] / "tuned_examples"
    spec = load_experiment_file(examples / f"{name}.yaml")
    opmd = load_experiment_file(examples / "k15_arithmetic_smollm2.yaml")
    config = apply_sections(K15Config(), spec["sections"], spec["source"])
    assert config.loss == loss
    loss_fields = {"loss", "tau", "baseline", "clip_eps", "grpo_kl_beta", "rest_top_k"}
    ours, theirs = spec["sections"]["training"], opmd["sections"]["training"]
    assert {k: v for k, v in ours.items() if k not in loss_fields} == {
        k: v for k, v in theirs.items() if k not in loss_fields
    }
    for section in ("environment", "debugging"):
        assert spec["sections"][section] == opmd["sections"][section]
    assert spec["stop"] == opmd["stop"]
    config.training(hf_model=str(tiny_model_dir)).validate()  # the embedded model aside
