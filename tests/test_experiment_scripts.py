"""The pure parts of experiments/ (ablation runner, Tune sweep) and the sweep heatmap."""

import json
import math
from pathlib import Path

import pytest
from support.paths import load_experiment

from rllib_k15.evaluation.plots import plot_sweep_heatmaps

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_reads_the_last_evaluation_from_tunes_flat_rows() -> None:
    sweep = load_experiment("tune_sweep")
    flat = [
        {"training_iteration": 1, "k15_eval/pass_at_1": 0.2, "k15_eval/response_tokens_mean": 50},
        {"training_iteration": 2, "k15_eval/pass_at_1": 0.6, "k15_eval/response_tokens_mean": 20},
        {"training_iteration": 3, "k15_eval/pass_at_1": math.nan, "k15/accuracy": 0.9},
    ]
    history = [sweep._unflatten(row) for row in flat]
    assert history[2]["k15"] == {"accuracy": 0.9} and history[2]["training_iteration"] == 3
    assert math.isnan(history[2]["k15_eval"]["pass_at_1"])  # NaN = not evaluated there
    assert sweep.last_evaluation(history) == {"iteration": 2, "pass_at_1": 0.6, "tokens": 20.0}
    assert sweep.last_evaluation(history[2:]) == {"iteration": None, "pass_at_1": None,
                                                  "tokens": None}  # fmt: skip


def test_sweep_table_and_heatmap(tmp_path: Path) -> None:
    sweep = load_experiment("tune_sweep")
    cells = [
        {"tau": 0.3, "warmup": 5, "iteration": 12, "pass_at_1": 0.9, "tokens": 9.5},
        {"tau": 0.1, "warmup": 0, "iteration": 12, "pass_at_1": 0.75, "tokens": 12.0},
        {"tau": 0.1, "warmup": 5, "iteration": None, "pass_at_1": None, "tokens": None},
    ]
    lines = sweep.markdown_table(cells).splitlines()
    assert lines[2:] == ["| 0.1 | 0 | 0.750 | 12.0 | 12 |", "| 0.1 | 5 | - | - | - |",
                         "| 0.3 | 5 | 0.900 | 9.5 | 12 |"]  # fmt: skip
    out = plot_sweep_heatmaps(
        {(c["tau"], c["warmup"]): c for c in cells}, tmp_path / "h.png", row_name="tau",
        col_name="warm-up", panels=[("pass_at_1", "Pass@1", "viridis"),
                                    ("tokens", "tokens", "viridis_r")],
    )  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no sweep cells"):
        plot_sweep_heatmaps({}, tmp_path / "x.png", row_name="a", col_name="b", panels=[])


def test_sweep_cells_carry_the_interval_and_the_best_finished_cell() -> None:
    sweep = load_experiment("tune_sweep")
    history = [sweep._unflatten(r) for r in [
        {"training_iteration": 3, "k15_eval/pass_at_1": 0.25, "k15_eval/pass_at_1_low": 0.1,
         "k15_eval/pass_at_1_high": 0.4, "k15_eval/response_tokens_mean": 30},
        {"training_iteration": 4, "k15_eval/pass_at_1": math.nan},
    ]]  # fmt: skip
    assert sweep.evaluations(history) == [
        {"iteration": 3, "pass_at_1": 0.25, "tokens": 30.0, "pass_at_1_low": 0.1,
         "pass_at_1_high": 0.4}
    ]  # fmt: skip
    cells = [  # ASHA stopped the 0.6 cell at iteration 3: not comparable with finished ones
        {"tau": 1.0, "warmup": 0, "iteration": 3, "pass_at_1": 0.6, "tokens": 20.0},
        {"tau": 0.1, "warmup": 3, "iteration": 12, "pass_at_1": 0.5, "tokens": 12.0,
         "pass_at_1_low": 0.4, "pass_at_1_high": 0.6},
        {"tau": 0.01, "warmup": 6, "iteration": 12, "pass_at_1": 0.3, "tokens": 15.0},
    ]  # fmt: skip
    assert sweep.best_finished_cell(cells, 12) is cells[1]
    assert sweep.best_finished_cell(cells[:1], 12) is None
    assert "| 0.1 | 3 | 0.500 [0.400, 0.600] | 12.0 | 12 |" in sweep.markdown_table(cells)


def test_asha_rungs_are_evaluated_iterations() -> None:
    sweep = load_experiment("tune_sweep")
    assert sweep.asha_rungs(3, 3, 12) == [3, 9]
    assert sweep.asha_rungs(3, 2, 12) == [3, 6]
    with pytest.raises(ValueError, match=r"--grace-period \(2\) must be a positive multiple"):
        sweep.asha_scheduler(12, eval_interval=3, grace_period=2, reduction_factor=3)
    with pytest.raises(ValueError, match=r"--reduction-factor \(1\)"):
        sweep.asha_scheduler(12, eval_interval=3, grace_period=3, reduction_factor=1)


def test_asha_stops_the_trial_whose_held_out_pass_at_1_trails(tmp_path: Path, monkeypatch) -> None:
    """Real Tune, trainables that report like K15MirrorDescent (``k15_eval`` every 2nd
    iteration only): the scheduler must find the nested metric and stop the weak trial at
    the rung, while the strong ones run to the end."""
    from ray import tune

    sweep = load_experiment("tune_sweep")
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "0")  # undone after the test

    def trainable(config):
        for iteration in range(1, 7):
            result = {"k15": {"accuracy": 0.0}}
            if iteration % 2 == 0:
                result["k15_eval"] = {"pass_at_1": config["quality"]}
            tune.report(result)

    grid = tune.Tuner(
        trainable,
        param_space={"quality": tune.grid_search([0.5, 0.9, 0.1])},  # run in this order
        tune_config=tune.TuneConfig(
            max_concurrent_trials=1,
            scheduler=sweep.asha_scheduler(6, eval_interval=2, grace_period=2, reduction_factor=3),
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    reached = {r.config["quality"]: r.metrics["training_iteration"] for r in grid}
    assert reached == {0.5: 6, 0.9: 6, 0.1: 2}


def test_a_resumed_asha_sweep_compares_with_the_earlier_trials_and_continues_cut_ones(
    tmp_path: Path,
) -> None:
    """Tune restores trials but not ASHA's rung records nor a fresh time budget. Replayed from
    the trials' result.json files, a weak new trial is stopped at the rung (with empty rungs
    it would have been promoted), and the trial that ended early without ASHA stopping it
    (as the time budget does) is set back to PAUSED so Tune continues it."""
    from ray import tune
    from ray.tune.schedulers import TrialScheduler

    sweep = load_experiment("tune_sweep")

    def trainable(config):
        for iteration in range(1, 7 if config["quality"] < 0.95 else 5):  # 0.95 is cut at 4
            held_out = {"pass_at_1": config["quality"]}
            tune.report({"k15_eval": held_out} if iteration % 2 == 0 else {})

    grid = tune.Tuner(
        trainable,
        param_space={"quality": tune.grid_search([0.5, 0.9, 0.95])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="first", storage_path=str(tmp_path), verbose=0),
    ).fit()
    cut = next(r.metrics["trial_id"] for r in grid if r.config["quality"] == 0.95)

    def weak_trial_at_the_first_rung(scheduler) -> str:
        weak = sweep._TrialHandle("weak")
        scheduler.on_trial_add(None, weak)
        return scheduler.on_trial_result(
            None, weak, {"training_iteration": 2, "k15_eval/pass_at_1": 0.1}
        )

    def fresh():
        return sweep.asha_scheduler(6, eval_interval=2, grace_period=2, reduction_factor=3)

    replayed = fresh()
    resumed = sweep.prepare_resume(replayed, tmp_path / "first", iterations=6)
    assert len(resumed["replayed"]) == 3 and resumed["requeued"] == [cut]
    assert weak_trial_at_the_first_rung(replayed) == TrialScheduler.STOP
    assert weak_trial_at_the_first_rung(fresh()) == TrialScheduler.CONTINUE
    state = json.loads(max((tmp_path / "first").glob("experiment_state-*.json")).read_text())
    assert "_stopper" not in state["runner_data"]
    statuses = {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]}
    assert statuses[cut] == "PAUSED" and list(statuses.values()).count("TERMINATED") == 2


def test_ablation_runner_knows_how_far_a_run_got(tmp_path: Path) -> None:
    ablation = load_experiment("ablation")
    metrics = tmp_path / "metrics.jsonl"
    assert ablation.finished_iterations(metrics) == 0
    metrics.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (0, 1, 2, 3)))
    assert ablation.finished_iterations(metrics) == 3
    for exp in ablation.EXPERIMENTS.values():  # every arm's experiment file exists
        assert all((ablation.ROOT / config).is_file() for config in exp.arms.values())


SPLIT_ARMS = {  # the split-footing ablations: the one field each changes from the evidence run
    "ablations/rest_addition_curriculum_smollm2.yaml": {"loss", "rest_top_k", "tau", "baseline"},
    "ablations/uniform_addition_smollm2.yaml": {"sampling"},
    "ablations/budget64_addition_smollm2.yaml": {"max_response_tokens"},
    "ablations/budget256_addition_smollm2.yaml": {"max_response_tokens"},
    "ablations/warmstart_addition_smollm2.yaml": {"hf_model"},
    "ablations/dynamic_addition_smollm2.yaml": {"dynamic_sampling", "dynamic_sampling_max_rounds"},
}


def test_overlong_arm_adds_only_the_dapo_options_to_the_64_token_run() -> None:
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "tuned_examples/ablations"
    base = OmegaConf.to_container(OmegaConf.load(root / "budget64_addition_smollm2.yaml"))
    arm = OmegaConf.to_container(OmegaConf.load(root / "overlong_budget64_addition_smollm2.yaml"))
    assert {k: v for k, v in arm.items() if k != "training"} == {
        k: v for k, v in base.items() if k != "training"
    }
    a, b = base["training"], arm["training"]
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {
        "mask_truncated_responses",
        "overlong_buffer_tokens",
        "overlong_penalty_weight",
    }


@pytest.mark.parametrize("arm", sorted(SPLIT_ARMS))
def test_split_ablation_arms_change_only_their_field(arm: str) -> None:
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "tuned_examples"
    base = OmegaConf.to_container(OmegaConf.load(root / "addition_curriculum_smollm2.yaml"))
    other = OmegaConf.to_container(OmegaConf.load(root / arm))
    assert {k: v for k, v in other.items() if k != "training"} == {
        k: v for k, v in base.items() if k != "training"
    }
    a, b = base["training"], other["training"]
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == SPLIT_ARMS[arm]


def test_long2short_arms_share_start_problems_and_budget() -> None:
    """long2short RL and O1-Pruner differ only in their objective (experiment 5);
    the long-CoT start is the tuned example without length reward and with a bigger budget."""
    from rllib_k15.runs.experiment import load_experiment_file

    study = load_experiment("long2short")
    examples = study.ROOT / study.EXAMPLES
    l2s, o1 = (
        load_experiment_file(examples / f"{name}_arithmetic_smollm2.yaml")
        for name in ("long2short_rl", "o1_pruner")
    )
    assert l2s["sections"]["environment"] == o1["sections"]["environment"]
    assert l2s["sections"]["environment"]["env_config"] == study.L2S_ENV  # = the o1 stats' env
    ours, theirs = l2s["sections"]["training"], o1["sections"]["training"]
    shared = ("hf_model", "samples_per_problem", "problems_per_iteration", "minibatch_size",
              "micro_batch_size", "lr", "eval_interval", "eval_problems",
              "eval_env_config")  # fmt: skip
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert ours["hf_model"] == "runs/long2short/models/long_cot"
    assert ours["length_penalty_warmup_iters"] == 0 and ours["max_response_tokens"] == 64
    assert theirs["loss"] == "o1_pruner" and theirs["max_response_tokens"] == 256
    assert l2s["stop"] == o1["stop"]

    long_cot = load_experiment_file(examples / "long_cot_arithmetic_smollm2.yaml")
    tuned = load_experiment_file(study.ROOT / "tuned_examples/k15_arithmetic_smollm2.yaml")
    changed = {"length_penalty_weight", "length_penalty_warmup_iters", "max_response_tokens"}
    ours, theirs = long_cot["sections"]["training"], tuned["sections"]["training"]
    assert {k: v for k, v in ours.items() if k not in changed} == {
        k: v for k, v in theirs.items() if k not in changed
    }
    assert ours["length_penalty_weight"] == 0 and ours["max_response_tokens"] == 256
    assert set(study.METHODS.values()) >= {"long_cot", "merge", "shortest_rs_sft", "dpo",
                                           "l2s_rl", "o1_pruner"}  # fmt: skip


def test_transfer_table_pairs_models_on_the_same_problems(tmp_path: Path) -> None:
    transfer = load_experiment("transfer_eval")
    base = [[False, False], [True, False], [False, False], [True, True]]
    better = [[True, False], [True, True], [False, False], [True, True]]
    doc = {
        "models": {"base": "smollm2-135m-instruct", "trained": "hf"},
        "settings": {
            "problems": 4,
            "samples": 2,
            "max_tokens": 64,
            "seed": 0,
            "cpu": "cpu",
            "cpu_flags": [],
            "precision": "float32",
        },  # fmt: skip
        "tasks": {
            "chain_sum_l1": {
                "results": {
                    "base": {"correct": base, "tokens": [[5, 5]] * 4},
                    "trained": {"correct": better, "tokens": [[3, 3]] * 4},
                }
            }
        },  # fmt: skip
    }
    rows = transfer.summarize(doc)
    trained = next(r for r in rows if r["model"] == "trained")
    assert trained["pass_at_1"] == 5 / 8 and trained["diff"] == 2 / 8
    assert trained["diff_low"] <= trained["diff"] <= trained["diff_high"]
    assert "diff" not in next(r for r in rows if r["model"] == "base")
    transfer.write_table(doc, rows, tmp_path)
    transfer.plot(doc, rows, tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| chain_sum_l1 | 0.375" in table and "+0.250" in table
    assert (tmp_path / "transfer.png").stat().st_size > 0


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tuned_examples").rglob("*.yaml")),
)
def test_every_tuned_example_is_a_valid_config(path: str) -> None:
    """Each shipped experiment file parses and validates; the only errors allowed are the
    inputs an earlier documented step writes under ``runs/`` (a warm-up's model, say)."""
    from rllib_k15.algorithm.config import K15Config
    from rllib_k15.runs.experiment import apply_sections, load_experiment_file

    spec = load_experiment_file(ROOT / path)
    config = apply_sections(K15Config(), spec["sections"], source=spec["source"])
    try:
        config.validate()
    except ValueError as err:
        problems = [line for line in str(err).splitlines()[1:] if line.strip()]
        assert problems and all("'runs/" in line for line in problems), str(err)
