"""Pure helpers of the benchmark harness (``bench/``): target verdicts, tables, roofline
math, variant selection, summary rows, result parsing and the results page. The benchmarks
themselves do not run in CI."""

import json
from dataclasses import asdict

import pytest

from bench.common import Row, format_number, markdown_table, target_status, text_table
from bench.engine_throughput import (
    VARIANTS,
    default_variants,
    derive_rows,
    knob_note,
    select_variants,
)
from bench.partial_rollouts import SPLIT, summarize, summary_rows
from bench.report import NO_ROWS, doc_rows, origin, provenance_note
from bench.rl_iteration import iteration_split, steady
from bench.roofline import (
    decode_flops_per_token,
    roofline_fraction,
    train_flops_per_token,
)


@pytest.mark.parametrize(
    "value,target,higher,expected",
    [
        (6.0, 6.0, True, "met"),  # exactly on target counts as met
        (3.0, 6.0, True, "missed: needs 2.0x"),  # speed-up: half the target
        (0.4, 0.5, False, "met"),  # time ratio below the ceiling
        (1.5, 0.5, False, "missed: needs 3.0x"),  # 3x slower than allowed
        (None, 1.0, True, "not measured"),
        (float("nan"), 1.0, True, "not measured"),
        (2.0, None, True, ""),  # no target: no verdict
        (0.0, 1.0, True, "missed"),  # no factor can be computed from 0
    ],
)
def test_target_status(value, target, higher, expected):
    assert target_status(value, target, higher) == expected


def test_row_status_uses_ratio_when_there_is_one():
    row = Row("rollout", "x", value=100.0, baseline=50.0, ratio=2.0, target=6.0)
    assert row.status == "missed: needs 3.0x"
    assert Row("sync", "s", value=0.4, target=1.0, higher_is_better=False).status == "met"


@pytest.mark.parametrize(
    "x,text",
    [(None, "-"), (0, "0"), (1234.5, "1,234"), (12.345, "12.3"), (0.4567, "0.457"),
     (0.0012, "1.20e-03")],
)  # fmt: skip
def test_format_number(x, text):
    assert format_number(x) == text


def test_tables_have_one_line_per_row_and_aligned_columns():
    rows = [
        Row("rollout", "tok/s", 120.0, "tok/s", 40.0, "HF", 3.0, 6.0),
        Row("weight sync", "seconds", 0.5, "s", target=1.0, higher_is_better=False),
    ]
    text = text_table(rows).splitlines()
    assert len(text) == 2 + len(rows)  # header, rule, rows
    assert text[0].index("ratio") == text[2].index("3x")  # columns line up
    assert "missed: needs 2.0x" in text[2] and "met" in text[3]
    md = markdown_table(rows).splitlines()
    assert md[0].startswith("| benchmark |") and len(md) == 2 + len(rows)
    assert "| 40 tok/s (HF) | 3x | >= 6 |" in md[2]
    assert "<= 1" in md[3]


def test_roofline_math():
    n = 135_000_000
    assert decode_flops_per_token(n) == 2 * n
    assert train_flops_per_token(n) == 6 * n
    # 100 tok/s × 2 × 135M = 27 GFLOP/s of a 270 GFLOP/s peak = 10 %
    assert roofline_fraction(100.0, decode_flops_per_token(n), 270.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="peak_gflops"):
        roofline_fraction(1.0, 1.0, 0.0)


def test_select_variants_adds_references_and_rejects_unknown_names():
    assert select_variants("hf-fp32-batch8") == ["hf-fp32", "hf-fp32-batch8"]
    assert select_variants("main") == ["vllm-fp32", "hf-fp32"]
    # a bf16 variant is a knob against fp32: its reference comes first
    assert select_variants("bf16") == ["vllm-fp32", "vllm-bf16", "hf-fp32", "hf-bf16"]
    everything = select_variants("everything")
    assert len(everything) == len(set(everything)) == len(VARIANTS)
    assert all(VARIANTS[n].reference in everything for n in everything if VARIANTS[n].reference)
    with pytest.raises(ValueError, match="--variants"):
        select_variants("vllm-fp64")


def test_default_variants_fit_the_budget_and_run_the_comparison_first():
    emulated = select_variants(default_variants(native_bf16=False))
    assert emulated[:2] == ["vllm-fp32", "hf-fp32"]  # a timeout only loses knobs
    assert not any("bf16" in n for n in emulated)  # emulated bf16 (~4 min) is opt-in
    assert not set(emulated) & {"vllm-fp32-compiled", "hf-fp32-1thread", "vllm-fp32-iomp"}
    assert len(emulated) == 5
    native = select_variants(default_variants(native_bf16=True))
    assert {"vllm-bf16", "hf-bf16"} <= set(native)


def _run(tok_s: float, dtype: str = "float32") -> dict:
    peaks = {"float32_gflops": 100.0, "bfloat16_gflops": 20.0}
    return {"tokens_per_second": tok_s, "dtype": dtype, "peaks": peaks, "threads": 2,
            "num_params": 100_000_000}  # fmt: skip


def test_engine_rows_ratio_roofline_and_knobs():
    runs = {"vllm-fp32": _run(200.0), "hf-fp32": _run(50.0), "vllm-fp32-seqs8": _run(100.0)}
    runs["vllm-fp32"]["generated_tokens"], runs["hf-fp32"]["generated_tokens"] = 1000, 990
    rows = {r.metric: r for r in derive_rows(runs, workload="8 prompts × 4 samples")}
    main = rows["tokens/s vLLM vs HF generate (fp32)"]
    assert main.ratio == pytest.approx(4.0)
    assert main.status == "missed: needs 1.5x"
    assert main.note == "8 prompts × 4 samples; 1000 vs 990 tokens generated"  # sizes stated
    # 200 tok/s × 2 × 1e8 = 40 GFLOP/s of the best peak (100) = 40 %: target met
    assert rows["vllm-fp32 fraction of roofline"].value == pytest.approx(0.4)
    assert rows["vllm-fp32 fraction of roofline"].status == "met"
    assert rows["vllm: max 8 concurrent sequences"].ratio == pytest.approx(0.5)


def test_iteration_split_and_steady_median():
    result = {
        "env_runners": {"generation_seconds": 6.0, "scoring_seconds": 0.5},
        "learners": {"ref_logprobs_seconds": 1.0},
        "k15": {"learner_update_seconds": 3.0, "weight_sync_seconds": 0.5},
    }
    split = iteration_split(result, wall=11.0)
    assert split == {"generation": 6.0, "scoring": 0.5, "reference_logprobs": 1.0,
                     "training": 2.0, "weight_sync": 0.5, "other": 1.0}  # fmt: skip
    assert steady([100.0, 3.0, 5.0, 4.0]) == 4.0  # the warm-up is dropped
    assert steady([7.0]) == 7.0


def test_knob_note_flags_a_thread_count_that_did_not_take():
    one_thread = VARIANTS["vllm-fp32-1thread"]
    assert knob_note(one_thread, {"threads": 2}) == "knob not applied: ran with 2 threads"
    assert knob_note(one_thread, {"threads": 1}) == ""
    assert knob_note(VARIANTS["vllm-fp32-seqs8"], {"threads": 2}) == ""  # no thread knob


def test_doc_rows_keep_our_rows_and_never_flatten_raw_numbers():
    row = Row("ZeRO memory", "held MiB", 1.0, target=0.75, higher_is_better=False)
    assert doc_rows("zero_memory", {"rows": [asdict(row)], "ratio_ignored": 9.0}) == [row]
    nested = {"ratio_partial_over_whole": 0.8,
              "runs": {"whole": [{"iterations": [{"generation_seconds": 5.6}] * 5}]}}  # fmt: skip
    for doc in (nested, {"rows": None}, {"rows": [{"not": "a row"}]}, {"rows": "x"}):
        rows = doc_rows("partial_rollouts", doc)
        assert [(r.benchmark, r.metric, r.value) for r in rows] == [
            ("partial_rollouts", NO_ROWS, None)
        ]


def _iteration(wall: float, generation: float, tokens: int) -> dict:
    split = {name: 0.0 for name in SPLIT} | {"generation_seconds": generation}
    return {"wall_seconds": wall, "trained_tokens": tokens, "loadavg_1m": 2.0,
            "generated_tokens": tokens, **split}  # fmt: skip


def test_partial_rollout_rows_from_a_synthetic_run():
    config = {"max_tokens": 256, "budget": 48, "hazard": 0.03, "problems": 8, "samples": 4}
    # whole: warm-up 1 (slow, not counted), then 2 × 1000 tokens in 10 s (gen 6 s) each
    whole = {"warmup": 1, "iterations": [_iteration(99.0, 90.0, 1000)]
             + [_iteration(10.0, 6.0, 1000)] * 2}  # fmt: skip
    # partial: warm-up ⌈256 / 48⌉ = 6 iterations, then 3 × 1000 tokens in 6 s (gen 2 s)
    partial = {"warmup": 6, "iterations": [_iteration(99.0, 90.0, 10)] * 6
               + [_iteration(6.0, 2.0, 1000)] * 3}  # fmt: skip
    summary = {"whole": summarize([whole]), "partial": summarize([partial])}
    rows = summary_rows(summary, config)
    assert len(rows) == 4 and {r.benchmark for r in rows} == {"partial rollouts"}
    wall, generation, iterations, tokens = rows
    assert wall.value == pytest.approx(6.0) and wall.baseline == pytest.approx(10.0)
    assert wall.ratio == pytest.approx(0.6)  # partial ÷ whole: 1.67x faster
    assert wall.target == pytest.approx(1 / 1.5) and not wall.higher_is_better
    assert wall.status == "met"
    assert generation.ratio == pytest.approx(2.0 / 6.0) and generation.target is None
    assert (iterations.value, iterations.baseline, iterations.ratio) == (3.0, 2.0, None)
    assert "whole 1, partial 6" in iterations.note
    assert tokens.value == 3000 and "≤ 256 tokens" in tokens.note and "budget 48" in tokens.note
    slow = {"whole": summary["whole"], "partial": summary["partial"] | {
        "seconds_per_1k_trained_tokens": 8.0}}  # fmt: skip
    assert summary_rows(slow, config)[0].status == "missed: needs 1.2x"  # 0.8 vs 0.667


def test_origin_of_a_measurement_against_the_last_run():
    end = "2026-11-25T06:36:23+00:00"  # a 52.9-min run_all that ended here
    assert origin("2026-11-25T06:28:40+00:00", end, 52.9) == "run"
    assert origin("2026-11-25T06:47:51+00:00", end, 52.9) == "after"
    assert origin("2026-11-24T22:00:00+00:00", end, 52.9) == "before"
    assert origin(None, end, 52.9) == "unknown"
    # minute resolution, no zone (taken as local time): inside the slack around the end
    local_end = "2026-11-25T06:36:23"
    assert origin("2026-11-25 06:37", local_end, 52.9) == "run"


def test_provenance_notes_say_when_rows_are_not_from_the_run():
    late = {"status": "timeout", "seconds": 1500.0, "measured": "2026-11-25T06:47:51+00:00"}
    note = provenance_note("engine_throughput", late, "after")
    assert "separate run on 2026-11-25 06:47" in note and "timeout after 25.0 min" in note
    stale = provenance_note("x", {"status": "failed (1)", "measured": "2026-11-01"}, "before")
    assert stale.startswith("x: STALE rows from 2026-11-01 00:00")
    assert provenance_note("x", {"status": "ok"}, "run") == ""
    assert "not part of" in provenance_note("x", {"status": "not run"}, "unknown")


def _write(path, doc) -> None:
    path.write_text(json.dumps(doc))


def test_render_only_builds_one_clean_table_from_the_files(tmp_path, monkeypatch):
    import bench.run_all as run_all

    monkeypatch.setattr(run_all, "result_path", lambda name, quick: tmp_path / f"{name}.json")
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "flags": {"avx2": True},
               "ram_gib": 8.0, "python": "3.11", "versions": {"torch": "2"},
               "git_commit": "abc1234"}  # fmt: skip
    end = "2026-11-25T06:36:23+00:00"
    _write(tmp_path / "summary.json", {
        "date": end, "total_minutes": 50.0, "machine": machine, "loadavg_start": 4.8,
        "loadavg_end": 2.3, "rows": [{"junk": 1}],
        "benchmarks": {"roofline": {"status": "ok", "seconds": 48.0, "rows": [{"junk": 1}]},
                       "engine_throughput": {"status": "timeout", "seconds": 1500.0},
                       "partial_rollouts": {"status": "ok", "seconds": 200.0}},
    })  # fmt: skip
    roof = Row("roofline", "matmul fp32 (2 threads)", 17.5, "GFLOP/s")
    _write(
        tmp_path / "roofline.json",
        {"date": "2026-11-25T05:44:00+00:00", "machine": machine, "rows": [asdict(roof)]},
    )
    legacy = {
        "date": "2026-11-25 06:32",
        "summary": {"whole": {"wall_seconds": 39.3}},
        "runs": {"whole": [{"iterations": [{"generation_seconds": 5.6}] * 5}]},
    }
    _write(tmp_path / "partial_rollouts.json", legacy)  # old format: no rows
    engine = Row("rollout", "tokens/s vLLM vs HF generate (fp32)", 75.0, "tok/s", 45.0,
                 "HF generate", 75.0 / 45.0, 6.0)  # fmt: skip
    _write(
        tmp_path / "engine_throughput.json",
        {"date": "2026-11-25T06:47:51+00:00", "machine": machine, "rows": [asdict(engine)]},
    )

    run_all.write_page(*run_all.last_run(quick=False), quick=False)

    page = (tmp_path / "README.md").read_text()
    tables = [line for line in page.splitlines() if line.startswith("| benchmark | metric |")]
    assert len(tables) == 1  # ONE table of rows
    body = page.split("## Targets")[0]
    assert body.count("| roofline |") == 1 and "| rollout |" in body
    assert f"| partial_rollouts | {NO_ROWS} |" in body  # one row, not its numbers
    assert "iterations" not in body and "runs." not in body and "junk" not in body
    assert "**2026-11-25T06:36:23+00:00**, 50.0 min" in page and "Test CPU, 2 cores" in page
    assert "engine_throughput: rows from a separate run on 2026-11-25 06:47" in page
    assert "| engine_throughput | timeout | 25.0 | 5.5 / 10 | 2026-11-25 06:47 | abc1234 |" in page
    assert "| zero_memory | not run |" in page  # no JSON: listed, no rows
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["date"] == end and summary["rendered"]  # the run's date is kept
    assert [r["benchmark"] for r in summary["rows"]] == ["roofline", "rollout",
                                                         "partial_rollouts"]  # fmt: skip
    assert "rows" not in summary["benchmarks"]["roofline"]


def test_target_lines_state_value_target_and_verdict():
    from bench.report import target_lines

    rows = [
        Row("rollout", "tok/s", 120.0, "tok/s", 40.0, "HF", 3.0, 6.0),
        Row("weight sync", "seconds", 0.5, "s", target=1.0, higher_is_better=False),
        Row("verifier", "math/s", 100.0),  # no target: no line
    ]
    assert target_lines(rows) == [
        "- rollout, tok/s: ratio 3 (target >= 6) — missed: needs 2.0x",
        "- weight sync, seconds: value 0.5 (target <= 1) — met",
    ]


def test_rl_iteration_rows_ratio_split_and_sync():
    from bench.rl_iteration import derive_rows as rl_rows

    def it(wall, gen):
        split = {"generation": gen, "training": wall - gen}
        return {"wall_seconds": wall, "split": split, "generated_tokens": 900.0}

    sync = {"sync_seconds_median": 0.8, "engine_load_seconds_median": 0.6, "bytes": 2**29}
    ours = {"iterations": [it(60.0, 40.0), it(20.0, 12.0), it(24.0, 12.0)], "weight_sync": sync}
    trl = {"step_seconds": [90.0, 44.0, 44.0], "generated_tokens": [950.0, 1000.0, 1000.0]}
    rows = {r.metric.strip(): r for r in rl_rows(ours, trl)}
    main = rows["wall seconds per iteration, ours vs TRL GRPOTrainer"]
    assert main.value == 22.0 and main.baseline == 44.0  # medians without the warm-up
    assert main.ratio == 0.5 and main.status == "met"
    assert "ours 900, TRL 1000" in main.note
    assert rows["our split: generation"].value == 12.0
    assert rows["learner -> vLLM engine, seconds"].status == "met"
    assert rows["fraction of iteration time"].value == pytest.approx(0.8 / 22.0)
    alone = {r.metric: r for r in rl_rows(ours, None)}
    assert alone["wall seconds per iteration, ours vs TRL GRPOTrainer"].target is None


def test_rl_iteration_note_names_shared_prompt_packing():
    from bench.rl_iteration import derive_rows as rl_rows

    split = {"generation": 1.0, "training": 1.0}
    its = [{"wall_seconds": 2.0, "split": split, "generated_tokens": 9.0}] * 2
    sync = {"sync_seconds_median": 0.1, "engine_load_seconds_median": 0.1, "bytes": 1}
    ours = {"iterations": its, "weight_sync": sync, "shared_prompt_packing": True}
    trl = {"step_seconds": [4.0, 4.0]}
    (main, *_) = rl_rows(ours, trl, dtype="float32")
    assert main.ratio == 0.5 and "shared-prompt packing" in main.note
    assert "shared" not in rl_rows({**ours, "shared_prompt_packing": False}, trl)[0].note


def test_padding_free_rows_compare_each_layout_with_the_padded_learner():
    from bench.padding_free import derive_rows as layout_rows

    def layout(tok_s, per_token):
        return {"learner_tokens_per_s": tok_s, "positions_per_real_token": per_token}

    results = {
        "padded": layout(100.0, 1.04), "padding_free": layout(97.0, 1.06),
        "shared_prompts": layout(150.0, 0.6), "peaks": {"float32_gflops": 100.0,
        "bfloat16_gflops": 50.0}, "num_params": 10**8, "positions_one_block": 175,
        "real_tokens": 100, "rows": 4, "samples": 8,
        "row_tokens": {"p10": 50.0, "p50": 90.0, "max": 178},
    }  # fmt: skip
    rows = {(r.benchmark, r.metric): r for r in layout_rows(results)}
    shared = rows[("shared prompts", "learner tokens/s (ref pass + update)")]
    assert shared.ratio == 1.5 and shared.baseline == 100.0
    assert rows[("shared prompts", "positions computed per real token")].value == 0.6
    assert rows[("padding-free", "learner tokens/s (ref pass + update)")].ratio == 0.97
    # 8 N FLOPs per real token (2 N reference forward + 6 N update) at the best peak
    fraction = rows[("shared prompts", "learner fraction of roofline")].value
    assert fraction == pytest.approx(150.0 * 8e8 / 100e9)


def test_lockstep_children_take_turns_and_a_dead_child_drops_out(tmp_path):
    import os

    from bench.common import REPO_DIR
    from bench.lockstep import run_lockstep

    trace = tmp_path / "trace.txt"
    child = (
        "import sys; from bench.lockstep import Lockstep\n"
        "name, steps = sys.argv[1], int(sys.argv[2])\n"
        "lock = Lockstep(sys.argv[sys.argv.index('--lockstep-fds') + 1])\n"
        "for i in range(steps):\n"
        "    lock.wait()\n"
        f"    open({str(trace)!r}, 'a').write(name + str(i) + ' ')\n"
        "    lock.report({'step': i})\n"
    )
    commands = {"a": ["-c", child, "a", "3"], "b": ["-c", child, "b", "1"]}  # b ends early
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    reports, codes = run_lockstep(commands, rounds=3, cwd=REPO_DIR, env=env)
    assert trace.read_text().split() == ["a0", "b0", "a1", "a2"]  # turns; b gone after 1
    assert reports == {"a": [{"step": 0}, {"step": 1}, {"step": 2}], "b": [{"step": 0}]}
    assert codes == {"a": 0, "b": 0}


def test_lockstep_extra_turn_runs_while_the_other_side_waits_idle(tmp_path):
    """bench.rl_iteration's protocol: after the paired steps `ours` takes one turn more (the
    weight-sync measurement) while the TRL child sits blocked in `wait()` until it is done."""
    import os

    from bench.common import REPO_DIR
    from bench.lockstep import run_lockstep

    trace = tmp_path / "trace.txt"
    note = f"open({str(trace)!r}, 'a').write"
    child = (
        "import sys; from bench.lockstep import Lockstep\n"
        "name, steps, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
        "lock = Lockstep(sys.argv[sys.argv.index('--lockstep-fds') + 1])\n"
        "for i in range(steps):\n"
        "    lock.wait()\n"
        f"    {note}(name + str(i) + ' ')\n"
        "    lock.report({'step': i})\n"
        "lock.wait()\n"
        f"{note}(name + '-' + extra + ' ')\n"
        "lock.report({extra: True})\n"
    )
    commands = {
        "ours": ["-c", child, "ours", "2", "sync"],
        "trl": ["-c", child, "trl", "2", "idle"],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    reports, codes = run_lockstep(commands, rounds=3, cwd=REPO_DIR, env=env)
    assert trace.read_text().split() == ["ours0", "trl0", "ours1", "trl1", "ours-sync", "trl-idle"]
    assert reports["ours"][-1] == {"sync": True} and reports["trl"][-1] == {"idle": True}
    assert codes == {"ours": 0, "trl": 0}


def test_soak_plateau_slope_tells_a_filling_cache_from_a_leak():
    """bench.soak: memory that rises then levels off (with checkpoint-save spikes every 10
    iterations) has a flat second half; a steady leak keeps its slope."""
    from bench.soak import plateau_slope

    iterations = list(range(6, 51))
    levelled = [5700 + 10 * min(i, 25) + (400 if i % 10 == 0 else 0) for i in iterations]
    leaking = [5700 + 3.0 * i + (400 if i % 10 == 0 else 0) for i in iterations]
    assert abs(plateau_slope(iterations, levelled, 10)) < 0.5
    assert abs(plateau_slope(iterations, leaking, 10) - 3.0) < 1e-6


def test_log_path_makes_the_quick_folder(tmp_path, monkeypatch):
    """A fresh clone has no bench/results/quick/: a --quick lockstep run used to fail
    opening its log there."""
    import bench.common as common

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    path = common.log_path("rl_iteration", quick=True)
    assert path == tmp_path / "results" / "quick" / "rl_iteration.log"
    assert path.parent.is_dir()
    path.open("a").close()
