"""``k15 gen-tests``: CYaRon inputs, ground-truth solutions in the sandbox, the 7/10 case rule and
the 9/10 problem rule, Code-v0 rows that grade, reproducibility, resume and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gymnasium as gym
import k15_envs  # noqa: F401  (registers k15/Code-v0)
import pytest
from k15_envs.datasets import DatasetError
from k15_envs.sandbox import RunReport, SandboxConfig

from rllib_k15.commands.k15 import main
from rllib_k15.data.gen_tests import (
    GeneratorError,
    GenTestsSettings,
    ProblemResult,
    SourceProblem,
    gen_tests,
    generate_inputs,
    judge_problem,
    read_problems,
    required_votes,
    select_cases,
)
from rllib_k15.data.gen_tests_files import ResumeError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sandbox: Linux")

CASES = 5
SETTINGS = GenTestsSettings(
    cases=CASES, min_cases=3, sandbox=SandboxConfig(wall_time_s=3.0, cpu_time_s=1.0)
)

# ---------------------------------------------------------------- problems and solutions

SUM_GEN = """import cyaron
def generate(case_index):
    n = 0 if case_index == 0 else 3 * case_index
    numbers = cyaron.Vector.random(n, [(-1000, 1000)]) if n else []
    return f"{n}\\n" + " ".join(str(v[0]) for v in numbers) + "\\n"
"""
SUM_A = "input()\nprint(sum(map(int, input().split())))"
SUM_B = "import sys\ndata = sys.stdin.read().split()\nprint(sum(int(x) for x in data[1:]))"
SUM_CRASH = "input()\nnums = list(map(int, input().split()))\nprint(nums[0] + sum(nums[1:]))"

SORT_GEN = """import cyaron
def generate(case_index):
    n = [1, 3, 12, 30, 20000][case_index]
    numbers = cyaron.Vector.random(n, [(-50, 50)], 1)  # 1: repeatable values
    return f"{n}\\n" + " ".join(str(v[0]) for v in numbers) + "\\n"
"""
SORT_A = "input()\nprint(*sorted(map(int, input().split())))"
SORT_B = "input()\na = list(map(int, input().split()))\na.sort()\nprint(' '.join(map(str, a)))"
SORT_OFF_BY_ONE = (
    "n = int(input())\na = sorted(map(int, input().split()))\nprint(*(a[: n - 1] if n > 10 else a))"  # noqa: E501 - one program
)
SORT_SLOW = (  # bubble sort: 2e8 steps on the 20000-number case
    "n = int(input())\na = list(map(int, input().split()))\n"
    "for i in range(n):\n    for j in range(n - 1 - i):\n"
    "        if a[j] > a[j + 1]:\n            a[j], a[j + 1] = a[j + 1], a[j]\n"
    "print(*a)"
)

MAXSUB_GEN = """import cyaron
def generate(case_index):
    n = 5 + 3 * case_index
    low, high = (-100, -1) if case_index < 2 else (-100, 100)  # cases 0, 1: all negative
    numbers = cyaron.Vector.random(n, [(low, high)])
    return f"{n}\\n" + " ".join(str(v[0]) for v in numbers) + "\\n"
"""
KADANE = (
    "input()\na = list(map(int, input().split()))\nbest = cur = a[0]\n"
    "for x in a[1:]:\n    cur = max(x, cur + x)\n    best = max(best, cur)\nprint(best)"
)
BRUTE = (
    "input()\na = list(map(int, input().split()))\n"
    "print(max(sum(a[i:j]) for i in range(len(a)) for j in range(i + 1, len(a) + 1)))"
)
KADANE_EMPTY_OK = (  # allows the empty subarray: prints 0 when every number is negative
    "input()\nbest = cur = 0\nfor x in map(int, input().split()):\n"
    "    cur = max(0, cur + x)\n    best = max(best, cur)\nprint(best)"
)

PROBLEMS = [
    # 1 of 10 crashes on the empty input: 9 pass -> kept
    {"id": "sum", "prompt": "Print the sum of the n numbers.", "generator": SUM_GEN,
     "solutions": [SUM_A, SUM_B] * 4 + [SUM_A, SUM_CRASH]},
    # 2 of 10 wrong (off by one for n > 10; too slow for n = 20000): 8 pass -> dropped
    {"id": "sort", "prompt": "Print the n numbers sorted.", "generator": SORT_GEN,
     "solutions": [SORT_A, SORT_B] * 4 + [SORT_OFF_BY_ONE, SORT_SLOW]},
    # 4 of 10 print 0 on all-negative input: those 2 cases have 6 agreeing -> dropped; the
    # 3 others have 10 -> kept, and then all 10 pass -> kept
    {"id": "maxsub", "prompt": "Print the largest sum of a non-empty subarray.",
     "generator": MAXSUB_GEN, "solutions": [KADANE, BRUTE] * 3 + [KADANE_EMPTY_OK] * 4},
    # the same input every time: 1 distinct case < min_cases=3 -> dropped
    {"id": "dup", "prompt": "Print n + 1.", "generator": "def generate(i):\n    return '1\\n'\n",
     "solutions": ["print(int(input()) + 1)"] * 10},
    # the generator crashes -> dropped, the run goes on
    {"id": "broken", "prompt": "Nothing.", "solutions": ["print(1)"],
     "generator": "def generate(i):\n    raise ValueError('no inputs today')\n"},
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One ``gen_tests`` run over PROBLEMS (real generators, real sandbox)."""
    folder = tmp_path_factory.mktemp("gen_tests")
    source = write_jsonl(folder / "problems.jsonl", PROBLEMS)
    out = folder / "code_rl.jsonl"
    report = gen_tests(source, out, SETTINGS, progress=False)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {"report": report, "rows": rows, "out": out, "source": source}


def entry(generated, problem_id: str) -> dict:
    return next(e for e in generated["report"]["problems"] if e["id"] == problem_id)


# ------------------------------------------------------------------- the two rules, pure


@pytest.mark.parametrize(
    "fraction,n,votes",
    [(0.7, 10, 7), (0.9, 10, 9), (0.7, 3, 3), (1.0, 10, 10), (0.01, 10, 1), (0.5, 7, 4)],
)
def test_required_votes_is_the_ceiling_of_the_fraction(fraction, n, votes):
    assert required_votes(fraction, n) == votes


def test_a_case_needs_7_of_10_agreeing_and_failed_runs_never_agree():
    columns = [
        ["a"] * 7 + ["b"] * 3,  # 7 agree: kept, "a" expected
        ["a"] * 6 + ["b"] * 4,  # only 6 agree: dropped
        ["a"] * 7 + [None] * 3,  # 3 crashed: 7 agree, kept
        ["a"] * 6 + [None] * 4,  # 4 crashed: dropped
        [None] * 10,  # every run failed: dropped
    ]
    outputs = [[column[s] for column in columns] for s in range(10)]
    kept, agreement = select_cases(outputs, 0.7)
    assert kept == [(0, "a"), (2, "a")]
    assert agreement == [7, 6, 7, 6, 0]


def outputs_with_wrong(wrong: int, cases: int = 6) -> list[list[str | None]]:
    """10 solutions; solution ``s < wrong`` is wrong on case ``s`` only (so every case
    keeps at least 9 agreeing)."""
    return [[f"x{s}" if c == s < wrong else f"ok{c}" for c in range(cases)] for s in range(10)]


@pytest.mark.parametrize(
    "problem_pass,wrong,kept",
    [
        (0.9, 0, True),
        (0.9, 1, True),  # 9 of 10 pass: kept
        (0.9, 2, False),  # 8 of 10: dropped
        (0.8, 2, True),  # with --problem-pass 0.8: 2 wrong of 10 kept ...
        (0.8, 3, False),  # ... and 3 wrong dropped
    ],
)
def test_a_problem_needs_9_of_10_solutions_passing_every_kept_case(problem_pass, wrong, kept):
    settings = GenTestsSettings(cases=6, problem_pass=problem_pass)
    result = ProblemResult("p")
    cases = judge_problem(result, outputs_with_wrong(wrong), settings)
    assert result.kept is kept and result.cases_kept == 6
    assert result.solutions_passing == 10 - wrong
    assert result.failing_solutions == list(range(wrong))
    assert (cases == [(c, f"ok{c}") for c in range(6)]) is kept
    if not kept:
        need = required_votes(problem_pass, 10)
        assert result.reason == (
            f"{10 - wrong} of 10 solutions pass all kept cases, fewer than {need} "
            f"(problem_pass={problem_pass:g})"
        )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"case_agreement": 0.0}, r"case_agreement \(0.0\) must be in \(0, 1\]"),
        ({"problem_pass": 1.5}, r"problem_pass \(1.5\) must be in \(0, 1\]"),
        ({"cases": 3}, r"min_cases \(5\) must be <= cases \(3\)"),
        ({"workers": 3}, r"workers \(3\) must be <= 2"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenTestsSettings(**kwargs)


def test_a_problem_needs_min_cases_kept_cases():
    result = ProblemResult("p")
    assert judge_problem(result, outputs_with_wrong(0, cases=4), GenTestsSettings()) == []
    assert (result.kept, result.reason) == (False, "4 cases kept, fewer than min_cases=5")


# ------------------------------------------------------------------ end to end, sandboxed


def test_one_crash_on_empty_input_of_10_keeps_the_problem(generated):
    sum_entry = entry(generated, "sum")
    assert sum_entry["kept"] is True and sum_entry["reason"] is None
    assert (sum_entry["cases_kept"], sum_entry["solutions_passing"]) == (CASES, 9)
    assert sum_entry["failing_solutions"] == [9]  # SUM_CRASH
    assert sum_entry["agreement"] == [9, 10, 10, 10, 10]  # case 0 is the empty list


def test_two_wrong_of_10_drop_the_problem(generated):
    sort_entry = entry(generated, "sort")
    assert sort_entry["kept"] is False
    assert sort_entry["failing_solutions"] == [8, 9]  # off by one, too slow
    assert sort_entry["agreement"] == [10, 10, 9, 9, 8]  # every case kept ...
    assert sort_entry["reason"].startswith("8 of 10 solutions pass all kept cases, fewer than 9")


def test_a_case_where_only_6_agree_is_dropped(generated):
    maxsub = entry(generated, "maxsub")
    assert maxsub["agreement"] == [6, 6, 10, 10, 10]
    assert maxsub["kept"] is True and maxsub["cases_kept"] == 3
    row = next(r for r in generated["rows"] if r["id"] == "maxsub")
    inputs = [case["input"] for case in row["tests"]]
    assert all(any(int(x) > 0 for x in i.split("\n")[1].split()) for i in inputs)


def test_duplicate_inputs_and_broken_generators_drop_their_problem(generated):
    dup, broken = entry(generated, "dup"), entry(generated, "broken")
    assert (dup["cases_generated"], dup["cases_unique"], dup["kept"]) == (CASES, 1, False)
    assert dup["reason"] == "1 cases kept, fewer than min_cases=3"
    assert broken["kept"] is False
    assert broken["reason"] == "generator failed: ValueError: no inputs today"


def test_output_rows_and_report_summary(generated):
    rows, report = generated["rows"], generated["report"]
    assert [r["id"] for r in rows] == ["sum", "maxsub"]
    sum_row = rows[0]
    assert sum_row["prompt"] == "Print the sum of the n numbers."
    assert sum_row["canonical_solution"] == SUM_A
    assert sum_row["tests"][0] == {"input": "0\n\n", "output": "0\n"}
    for case in sum_row["tests"]:  # the expected output is the true sum
        numbers = [int(x) for x in case["input"].split("\n")[1].split()]
        assert case["output"] == f"{sum(numbers)}\n"
    assert report["summary"] == {
        "problems": 5, "done": 5, "kept": 2, "dropped": 3, "cases_kept": CASES + 3
    }  # fmt: skip
    assert report["settings"]["case_agreement"] == 0.7 and report["settings"]["seed"] == 0
    on_disk = json.loads(Path(report["report"]).read_text(encoding="utf-8"))
    assert on_disk == report


def test_generated_rows_grade_right_and_wrong_programs(generated):
    env = gym.make("k15/Code-v0", dataset=generated["rows"], sandbox={"wall_time_s": 3.0})
    try:
        problems = [env.unwrapped.problem(i) for i in range(2)]
        assert "reads the input from standard input" in problems[0].prompt
        responses = [f"```python\n{SUM_A}\n```", f"```python\n{SUM_CRASH}\n```", KADANE]
        verdicts = env.unwrapped.verify_batch([problems[0], problems[0], problems[1]], responses)
    finally:
        env.close()
    assert [v.reason for v in verdicts] == [
        "correct",
        "error: case 1: IndexError: list index out of range",
        "correct",
    ]


# ------------------------------------------------------------------------ reproducibility


def test_the_same_seed_gives_the_same_inputs_and_another_seed_others():
    problem = SourceProblem("sum", "p", ("print(1)",), generator=SUM_GEN)
    first, again = generate_inputs(problem, SETTINGS), generate_inputs(problem, SETTINGS)
    other_seed = generate_inputs(problem, GenTestsSettings(cases=CASES, seed=1))
    other_id = generate_inputs(SourceProblem("sum2", "p", ("x",), generator=SUM_GEN), SETTINGS)
    assert first == again and len(first) == CASES
    assert first[0] == "0\n\n"  # case 0 is the empty list with any seed
    assert first[1:] != other_seed[1:] and first[1:] != other_id[1:]


@pytest.mark.parametrize(
    "generator,message",
    [
        ("def generate(i):\n    return 7\n", "generate(0) returned int, expected str"),
        ("def generate(i):\n    return {}[i]\n", "generator failed: KeyError: 0"),
        ("import time\ndef generate(i):\n    time.sleep(60)\n", "generator timed out after 1s"),
    ],
    ids=["not-str", "crash", "hang"],
)
def test_generator_failures_are_reported(generator, message):
    settings = GenTestsSettings(cases=2, min_cases=1, generator_timeout_s=1.0)
    with pytest.raises(GeneratorError, match=re.escape(message)):
        generate_inputs(SourceProblem("p", "p", ("x",), generator=generator), settings)


def test_a_generator_function_is_imported_from_the_input_folder(tmp_path):
    (tmp_path / "my_gens.py").write_text(
        "import cyaron\ndef words(i):\n    print('debug output is fine')\n"
        "    return cyaron.String.random(5 + i) + '\\n'\n",
        encoding="utf-8",
    )
    problem = SourceProblem("w", "p", ("x",), generator_function="my_gens:words")
    inputs = generate_inputs(problem, GenTestsSettings(cases=3, min_cases=1), [str(tmp_path)])
    assert [len(i) for i in inputs] == [6, 7, 8] and all(i.strip().isalpha() for i in inputs)


# --------------------------------------------------------------------------------- resume


def echo(program: str, stdin: str, config: SandboxConfig) -> RunReport:
    """A stand-in sandbox: every solution prints its input (all agree)."""
    return RunReport("passed", stdout=stdin)


def test_resume_skips_finished_problems_and_repairs_a_torn_output(tmp_path):
    gen = "def generate(i):\n    print('noise')\n    return f'{i}\\n'\n"
    rows = [{"id": key, "prompt": "echo", "generator": gen, "solutions": ["x"] * 3}
            for key in ("a", "b")]  # fmt: skip
    source, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    settings = GenTestsSettings(cases=5)
    first = gen_tests(source, out, settings, progress=False, run=echo)
    assert first["summary"]["kept"] == 2
    with pytest.raises(FileExistsError):
        gen_tests(source, out, settings, progress=False, run=echo)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:20], encoding="utf-8")  # "b" torn mid-write
    calls = []

    def counting(program, stdin, config):
        calls.append(stdin)
        return echo(program, stdin, config)

    again = gen_tests(source, out, settings, resume=True, progress=False, run=counting)
    assert sorted(calls) == [f"{i}\n" for i in range(5)]  # only "b" again (1 distinct program)
    assert out.read_text(encoding="utf-8").splitlines(keepends=True) == lines
    assert again["problems"] == first["problems"]
    with pytest.raises(ResumeError, match="seed: 0 -> 1"):
        gen_tests(source, out, GenTestsSettings(cases=5, seed=1), resume=True, run=echo)


# ------------------------------------------------------------------------------ bad input

GOOD = {"id": "p", "prompt": "x", "solutions": ["print(1)"], "generator": "def generate(i): ..."}


@pytest.mark.parametrize(
    "bad,field,message",
    [
        ({"id": None}, "id", "expected text or an int"),
        ({"id": "p0"}, "id", "duplicate id 'p0' (also row 0)"),
        ({"prompt": ""}, "prompt", "empty text"),
        ({"solutions": "print(1)"}, "solutions", "not a JSON list"),
        ({"solutions": []}, "solutions", "expected a non-empty list"),
        ({"solutions": ["print(1)", 3]}, "solutions", "solution 1 must be non-empty program"),
        ({"generator": None}, "generator", "exactly one of"),
        ({"generator_function": "m:f"}, "generator", "exactly one of"),
        ({"generator": "def generate(i:\n"}, "generator", "does not compile: line 1"),
        ({"generator": "def make(i):\n    return ''\n"}, "generator", "no top-level generate"),
        ({"generator": None, "generator_function": "m.f"}, "generator_function", "module:function"),
    ],
)  # fmt: skip
def test_bad_input_names_the_file_row_and_field(tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "problems.jsonl", [{**GOOD, "id": "p0"}, {**GOOD, **bad}])
    with pytest.raises(DatasetError) as caught:
        read_problems(path)
    error = caught.value
    assert (error.source, error.row, error.field) == (str(path), 1, field)
    assert message in str(error) and "row 1" in str(error)


def test_the_command_reports_bad_input_and_bad_flags(tmp_path, capsys):
    path = write_jsonl(tmp_path / "problems.jsonl", [GOOD, {**GOOD, "id": 2, "solutions": 5}])
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(SystemExit, match=r"problems.jsonl: row 1 \(line 2\): field 'solutions'"):
        main(["gen-tests", str(path), "--out", out])
    for flags, message in [
        (["--case-agreement", "1.5"], r"--case-agreement \(1.5\) must be in \(0, 1\]"),
        (["--min-cases", "30"], r"--min-cases \(30\) must be <= --cases \(20\)"),
        (["--workers", "4"], r"--workers \(4\) must be 1 or 2"),
    ]:
        with pytest.raises(SystemExit, match=message):
            main(["gen-tests", str(path), "--out", out, *flags])
    with pytest.raises(SystemExit, match=r"--out \(x.txt\) must end in .jsonl"):
        main(["gen-tests", str(path), "--out", "x.txt"])
    assert not Path(out).exists()
